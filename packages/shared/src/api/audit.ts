import { Type, type Static } from '@sinclair/typebox';
import { AUDIT_OUTCOMES, AuditCheckpoint, AuditEntry } from '../audit/index.js';
import { StringEnum } from '../schema/index.js';

export const AuditEntriesQuery = Type.Object(
  {
    after: Type.Optional(
      Type.Integer({ minimum: 0, description: 'Only entries with a higher sequence number.' }),
    ),
    before: Type.Optional(
      Type.Integer({ minimum: 1, description: 'Only entries with a lower sequence number.' }),
    ),
    limit: Type.Integer({ minimum: 1, maximum: 10000, default: 100 }),
    order: StringEnum(['asc', 'desc'], {
      default: 'asc',
      description: '`desc` returns the newest entries first.',
    }),
    action: Type.Optional(
      Type.String({
        maxLength: 100,
        description: 'Exact action, or a prefix ending in `.*` (e.g. `device.*`).',
      }),
    ),
    actor: Type.Optional(Type.String({ maxLength: 200 })),
    target: Type.Optional(Type.String({ maxLength: 300 })),
    outcome: Type.Optional(StringEnum(AUDIT_OUTCOMES)),
  },
  { additionalProperties: false },
);
export type AuditEntriesQuery = Static<typeof AuditEntriesQuery>;

export const AuditEntryList = Type.Object({
  items: Type.Array(AuditEntry),
  head: Type.Object({ seq: Type.Integer(), hash: Type.String() }),
});
export type AuditEntryList = Static<typeof AuditEntryList>;

export const AuditCheckpointList = Type.Object({
  items: Type.Array(AuditCheckpoint),
  publicKeyPem: Type.Union([Type.String(), Type.Null()], {
    description: 'The platform key that signs checkpoints.',
  }),
});

export const AuditVerificationResult = Type.Object({
  ok: Type.Boolean(),
  entries: Type.Integer(),
  headHash: Type.String(),
  keyId: Type.Union([Type.String(), Type.Null()]),
  checkpoints: Type.Object({
    total: Type.Integer(),
    verified: Type.Integer(),
    lastVerifiedEntryCount: Type.Integer(),
  }),
  unanchoredEntries: Type.Integer(),
  firstBad: Type.Union([Type.Object({ seq: Type.Integer(), message: Type.String() }), Type.Null()]),
  problems: Type.Array(Type.Object({ seq: Type.Integer(), message: Type.String() })),
});
export type AuditVerificationResult = Static<typeof AuditVerificationResult>;
