import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  AttachPolicyBody,
  CreatePolicyBody,
  LintPolicyBody,
  LintResult,
  POLICY_NAME_PATTERN,
  POLICY_TARGET_KINDS,
  PolicyRecord,
  PolicyVersion,
  SimulateBody,
  SimulateResult,
  UpdatePolicyBody,
} from '@rampart/shared/api';
import { validatePolicyDocument, type PolicyDocument } from '@rampart/shared/policy';
import { Problem } from '@rampart/shared/problem';
import { StringEnum } from '@rampart/shared/schema';
import { RampartError, notFound } from '../../errors.js';
import type { Gateway } from '../../gateway/gateway.js';
import type { PolicyStore } from '../../gateway/policies.js';
import { compilePolicies, lintPolicy } from '../../gateway/policy/index.js';
import { actorOf, type ApiContext } from '../context.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem };
const NameParam = Type.Object(
  { name: Type.String({ pattern: POLICY_NAME_PATTERN }) },
  { additionalProperties: false },
);

export function policyRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();
    const store = (): PolicyStore => {
      if (!ctx.policies) throw new RampartError('INTERNAL', 'the gateway is not running');
      return ctx.policies;
    };
    const gateway = (): Gateway => {
      if (!ctx.gateway) throw new RampartError('INTERNAL', 'the gateway is not running');
      return ctx.gateway;
    };

    app.get(
      '/policies',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: ['policies'],
          summary: 'List gateway policies',
          response: { 200: Type.Object({ items: Type.Array(PolicyRecord) }), ...errors },
        },
      },
      async () => ({
        items: [await store().get(ctx.storage.db, 'default'), ...(await store().list(ctx.storage.db))],
      }),
    );

    app.post(
      '/policies',
      {
        config: { permission: 'policy:write', audit: 'policy.create' },
        schema: {
          tags: ['policies'],
          summary: 'Create a policy (version 1)',
          description:
            'The document is validated (errors name their path); lint findings come back with the record.',
          body: CreatePolicyBody,
          response: { 201: PolicyRecord, ...errors },
        },
      },
      async (request, reply) => {
        const record = await request.mutate(async (tx) => {
          const r = await store().create(tx, { ...request.body, actor: actorOf(request.principal) });
          return { result: r, target: `policy:${r.name}`, details: { version: r.version } };
        });
        store().changed();
        return reply.code(201).send(record);
      },
    );

    app.get(
      '/policies/:name',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: ['policies'],
          summary: 'A policy: current version, document, attachments, lint findings',
          params: NameParam,
          response: { 200: PolicyRecord, ...errors },
        },
      },
      async (request) => store().get(ctx.storage.db, request.params.name),
    );

    app.put(
      '/policies/:name',
      {
        config: { permission: 'policy:write', audit: 'policy.update' },
        schema: {
          tags: ['policies'],
          summary: 'Add a version of a policy',
          description: 'Live sessions of every device it applies to are re-authorized at once.',
          params: NameParam,
          body: UpdatePolicyBody,
          response: { 200: PolicyRecord, ...errors },
        },
      },
      async (request) => {
        const record = await request.mutate(async (tx) => {
          const r = await store().update(tx, request.params.name, {
            ...request.body,
            actor: actorOf(request.principal),
          });
          return { result: r, target: `policy:${r.name}`, details: { version: r.version } };
        });
        store().changed();
        return record;
      },
    );

    app.delete(
      '/policies/:name',
      {
        config: { permission: 'policy:write', audit: 'policy.delete' },
        schema: {
          tags: ['policies'],
          summary: 'Delete a policy and its attachments',
          params: NameParam,
          response: { 200: PolicyRecord, ...errors },
        },
      },
      async (request) => {
        const record = await request.mutate(async (tx) => {
          const r = await store().delete(tx, request.params.name);
          return { result: r, target: `policy:${r.name}`, details: { version: r.version } };
        });
        store().changed();
        return record;
      },
    );

    app.get(
      '/policies/:name/versions',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: ['policies'],
          summary: 'Every version of a policy',
          params: NameParam,
          response: { 200: Type.Object({ items: Type.Array(PolicyVersion) }), ...errors },
        },
      },
      async (request) => ({ items: await store().versions(ctx.storage.db, request.params.name) }),
    );

    app.post(
      '/policies/:name/attachments',
      {
        config: { permission: 'policy:write', audit: 'policy.attach' },
        schema: {
          tags: ['policies'],
          summary: 'Attach a policy to a device model, group or device',
          params: NameParam,
          body: AttachPolicyBody,
          response: { 200: PolicyRecord, ...errors },
        },
      },
      async (request) => {
        const { targetKind, targetId } = request.body;
        const record = await request.mutate(async (tx) => {
          const r = await store().attach(
            tx,
            request.params.name,
            targetKind,
            targetId,
            actorOf(request.principal),
          );
          return { result: r, target: `policy:${r.name}`, details: { targetKind, targetId } };
        });
        store().changed();
        return record;
      },
    );

    app.delete(
      '/policies/:name/attachments/:targetKind/:targetId',
      {
        config: { permission: 'policy:write', audit: 'policy.detach' },
        schema: {
          tags: ['policies'],
          summary: 'Detach a policy',
          params: Type.Object(
            {
              name: Type.String({ pattern: POLICY_NAME_PATTERN }),
              targetKind: StringEnum(POLICY_TARGET_KINDS),
              targetId: Type.String({ minLength: 1, maxLength: 128 }),
            },
            { additionalProperties: false },
          ),
          response: { 200: PolicyRecord, ...errors },
        },
      },
      async (request) => {
        const { name, targetKind, targetId } = request.params;
        const record = await request.mutate(async (tx) => {
          const r = await store().detach(tx, name, targetKind, targetId);
          return { result: r, target: `policy:${r.name}`, details: { targetKind, targetId } };
        });
        store().changed();
        return record;
      },
    );

    app.post(
      '/policies/lint',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: ['policies'],
          summary: 'Validate and lint a policy document without storing it',
          body: LintPolicyBody,
          response: { 200: LintResult, ...errors },
        },
      },
      async (request) => {
        const v = validatePolicyDocument(request.body.document);
        if (!v.ok)
          return {
            valid: false,
            findings: v.errors.map((e) => ({
              severity: 'error' as const,
              statement: -1,
              code: 'invalid',
              message: `${e.path || '(document)'}: ${e.message}`,
            })),
          };
        return { valid: true, findings: lintPolicy(request.body.document as PolicyDocument) };
      },
    );

    app.post(
      '/policies/simulate',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: ['policies'],
          summary: 'What the gateway would decide for a device, and which statement decides',
          body: SimulateBody,
          response: { 200: SimulateResult, ...errors },
        },
      },
      async (request) => {
        const { device: id, action, resource } = request.body;
        const device = await gateway().deviceContext(id);
        if (!device) throw notFound(`device ${id}`);
        const attached = await store().forDevice(device);
        const d = compilePolicies(attached, device).decide(action, resource);
        return {
          device: id,
          action,
          resource,
          allowed: d.allowed,
          effect: d.effect,
          reason: d.reason,
          statement: d.statement ? { ...d.statement } : null,
          policies: attached.map((p) => ({
            name: p.name,
            version: p.version,
            attachedTo: p.attachedTo,
            target: p.target,
          })),
        };
      },
    );
  };
}
