import { Type, type Static } from '@sinclair/typebox';
import { PolicyAction, PolicyDocument } from '../policy/schema.js';
import { StringEnum } from '../schema/index.js';

export const POLICY_TARGET_KINDS = ['model', 'group', 'device'] as const;
export const POLICY_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';

export const PolicyAttachment = Type.Object(
  {
    targetKind: StringEnum(POLICY_TARGET_KINDS),
    targetId: Type.String({ minLength: 1, maxLength: 128 }),
    attachedAt: Type.String(),
    attachedBy: Type.String(),
  },
  { additionalProperties: false },
);
export type PolicyAttachment = Static<typeof PolicyAttachment>;

export const PolicyFinding = Type.Object({
  severity: StringEnum(['error', 'warning']),
  statement: Type.Integer({ description: 'Statement index (0-based); -1 for the whole document.' }),
  resource: Type.Optional(Type.String()),
  code: Type.String(),
  message: Type.String(),
});
export type PolicyFinding = Static<typeof PolicyFinding>;

export const PolicyRecord = Type.Object(
  {
    name: Type.String(),
    description: Type.String(),
    version: Type.Integer({ minimum: 1, description: 'Current version; every update adds one.' }),
    document: PolicyDocument,
    attachments: Type.Array(PolicyAttachment),
    createdAt: Type.String(),
    updatedAt: Type.String(),
    findings: Type.Array(PolicyFinding, {
      description: 'What `rampart policy lint` says about the current version.',
    }),
  },
  { additionalProperties: false },
);
export type PolicyRecord = Static<typeof PolicyRecord>;

export const PolicyVersion = Type.Object(
  {
    name: Type.String(),
    version: Type.Integer(),
    document: PolicyDocument,
    createdAt: Type.String(),
    createdBy: Type.String(),
  },
  { additionalProperties: false },
);
export type PolicyVersion = Static<typeof PolicyVersion>;

export const CreatePolicyBody = Type.Object(
  {
    name: Type.String({
      pattern: POLICY_NAME_PATTERN,
      description: 'e.g. `factory-lines` (`default` is built in).',
    }),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    document: Type.Unknown({
      description: 'A policy document (see docs/policy.md); validated with its paths.',
    }),
  },
  { additionalProperties: false },
);
export type CreatePolicyBody = Static<typeof CreatePolicyBody>;

export const UpdatePolicyBody = Type.Object(
  {
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    document: Type.Unknown({ description: 'The new document; it becomes the next version.' }),
  },
  { additionalProperties: false },
);
export type UpdatePolicyBody = Static<typeof UpdatePolicyBody>;

export const AttachPolicyBody = Type.Object(
  {
    targetKind: StringEnum(POLICY_TARGET_KINDS),
    targetId: Type.String({ minLength: 1, maxLength: 128 }),
  },
  { additionalProperties: false },
);
export type AttachPolicyBody = Static<typeof AttachPolicyBody>;

export const LintPolicyBody = Type.Object({ document: Type.Unknown() }, { additionalProperties: false });

export const LintResult = Type.Object({
  valid: Type.Boolean(),
  findings: Type.Array(PolicyFinding),
});
export type LintResult = Static<typeof LintResult>;

export const SimulateBody = Type.Object(
  {
    device: Type.String({ minLength: 1, maxLength: 128 }),
    action: PolicyAction,
    resource: Type.String({
      minLength: 1,
      maxLength: 65535,
      description: 'Topic, topic filter or client id.',
    }),
  },
  { additionalProperties: false },
);
export type SimulateBody = Static<typeof SimulateBody>;

export const SimulateResult = Type.Object({
  device: Type.String(),
  action: PolicyAction,
  resource: Type.String(),
  allowed: Type.Boolean(),
  effect: StringEnum(['allow', 'deny', 'default-deny', 'quarantine']),
  reason: Type.String(),
  statement: Type.Union([
    Type.Object({
      policy: Type.String(),
      version: Type.Integer(),
      attachedTo: Type.String(),
      target: Type.String(),
      sid: Type.Optional(Type.String()),
      index: Type.Integer(),
      resource: Type.String(),
      pattern: Type.String(),
    }),
    Type.Null(),
  ]),
  policies: Type.Array(
    Type.Object({
      name: Type.String(),
      version: Type.Integer(),
      attachedTo: Type.String(),
      target: Type.String(),
    }),
    { description: 'Every policy in force for the device, in evaluation order.' },
  ),
});
export type SimulateResult = Static<typeof SimulateResult>;
