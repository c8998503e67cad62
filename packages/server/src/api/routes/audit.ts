import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  AuditCheckpointList,
  AuditEntriesQuery,
  AuditEntryList,
  AuditVerificationResult,
} from '@rampart/shared/api';
import { Problem } from '@rampart/shared/problem';
import type { ApiContext } from '../context.js';

const errors = { 400: Problem, 401: Problem, 403: Problem };

export function auditRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();

    app.get(
      '/audit/entries',
      {
        config: { permission: 'audit:read' },
        schema: {
          tags: ['audit'],
          summary: 'Read audit entries',
          description:
            'Page forward with `after=<last seq>`; `order=desc` gives the newest entries first (as `rampart audit tail` does).',
          querystring: AuditEntriesQuery,
          response: { 200: AuditEntryList, ...errors },
        },
      },
      async (request) => {
        const q = request.query;
        const [items, head] = await Promise.all([
          ctx.audit.list({
            afterSeq: q.after,
            beforeSeq: q.before,
            limit: q.limit,
            action: q.action,
            actor: q.actor,
            target: q.target,
            outcome: q.outcome,
            newestFirst: q.order === 'desc',
          }),
          ctx.audit.head(),
        ]);
        return { items, head };
      },
    );

    app.get(
      '/audit/checkpoints',
      {
        config: { permission: 'audit:read' },
        schema: {
          tags: ['audit'],
          summary: 'Signed checkpoints and the key that signs them',
          response: { 200: AuditCheckpointList, ...errors },
        },
      },
      async () => ({
        items: await ctx.audit.checkpoints(),
        publicKeyPem:
          (ctx.auditPublicKey?.export({ type: 'spki', format: 'pem' }) as string | undefined) ?? null,
      }),
    );

    app.get(
      '/audit/verification',
      {
        config: { permission: 'audit:read' },
        schema: {
          tags: ['audit'],
          summary: 'Verify the whole chain and its checkpoints now',
          description:
            'The server-side twin of `rampart audit verify`; the offline command is stronger because it does not trust the running server.',
          response: { 200: AuditVerificationResult, ...errors },
        },
      },
      async () => ctx.audit.verify(ctx.auditPublicKey),
    );
  };
}
