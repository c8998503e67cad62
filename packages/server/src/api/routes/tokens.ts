import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import { CreateTokenBody, CreatedToken, TokenRecord, Whoami } from '@rampart/shared/api';
import { Problem } from '@rampart/shared/problem';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.js';
import { parseDuration } from '../../time.js';
import { RampartError } from '../../errors.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem };
const TokenId = Type.Object(
  { id: Type.String({ pattern: '^[a-z0-9]{12}$' }) },
  { additionalProperties: false },
);

export function tokenRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();

    app.post(
      '/tokens',
      {
        config: { permission: 'token:manage', audit: 'token.create' },
        schema: {
          tags: ['tokens'],
          summary: 'Create an API token',
          description: 'The secret is in the response once and never again; only its hash is stored.',
          body: CreateTokenBody,
          response: { 201: CreatedToken, ...errors },
        },
      },
      async (request, reply) => {
        const { name, role, expiresIn } = request.body;
        let expiresAt: string | null = null;
        if (expiresIn) {
          const ms = parseDuration(expiresIn);
          if (ms === null || ms <= 0)
            throw new RampartError('VALIDATION', 'expiresIn must be a positive duration such as 30d', [
              { field: 'expiresIn', message: 'is not a positive duration' },
            ]);
          expiresAt = new Date(Date.now() + ms).toISOString();
        }
        const created = await request.mutate(async (tx) => {
          const c = await ctx.tokens.create(tx, {
            name,
            role,
            expiresAt,
            createdBy: request.principal!.tokenId,
          });
          return { result: c, target: `token:${c.record.id}`, details: { name, role, expiresAt } };
        });
        return reply.code(201).send(created);
      },
    );

    app.get(
      '/tokens',
      {
        config: { permission: 'token:manage' },
        schema: {
          tags: ['tokens'],
          summary: 'List API tokens (never their secrets)',
          response: { 200: Type.Object({ items: Type.Array(TokenRecord) }), ...errors },
        },
      },
      async () => ({ items: await ctx.tokens.list(ctx.storage.db) }),
    );

    app.delete(
      '/tokens/:id',
      {
        config: { permission: 'token:manage', audit: 'token.revoke' },
        schema: {
          tags: ['tokens'],
          summary: 'Revoke an API token',
          description:
            'The token stops working at once; its record stays for the audit trail. The last active admin token cannot be revoked.',
          params: TokenId,
          response: { 200: TokenRecord, ...errors },
        },
      },
      async (request) =>
        request.mutate(async (tx) => {
          const record = await ctx.tokens.revoke(tx, request.params.id);
          return {
            result: record,
            target: `token:${record.id}`,
            details: { name: record.name, role: record.role },
          };
        }),
    );

    app.get(
      '/whoami',
      {
        config: { permission: 'authenticated' },
        schema: {
          tags: ['tokens'],
          summary: 'The token making this call and what it may do',
          response: { 200: Whoami, 401: Problem },
        },
      },
      async (request) => {
        const p = request.principal!;
        return { tokenId: p.tokenId, name: p.name, role: p.role, permissions: [...p.permissions] };
      },
    );
  };
}
