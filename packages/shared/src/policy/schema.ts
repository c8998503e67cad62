import { Type, type Static } from '@sinclair/typebox';
import { ID_PATTERN } from '../api/fleet.js';
import { StringEnum } from '../schema/index.js';

/**
 * What a device does on the gateway, each decided by policy:
 * - `connect`: open an MQTT session; the resource is the client id;
 * - `publish`: send a message; the resource is its topic;
 * - `subscribe`: subscribe; the resource is the topic filter (it may contain `+` and `#`);
 * - `receive`: be delivered a message; the resource is its topic.
 */
export const POLICY_ACTIONS = ['connect', 'publish', 'subscribe', 'receive'] as const;
export type PolicyAction = (typeof POLICY_ACTIONS)[number];

export const POLICY_EFFECTS = ['allow', 'deny'] as const;
export type PolicyEffect = (typeof POLICY_EFFECTS)[number];

/** The one version of the policy language. */
export const POLICY_LANGUAGE_VERSION = '2026-11';
export const MAX_POLICY_STATEMENTS = 100;
export const MAX_STATEMENT_RESOURCES = 100;
export const MAX_RESOURCE_LENGTH = 512;

export const PolicyAction = StringEnum(POLICY_ACTIONS, {
  description: '`connect`, `publish`, `subscribe` or `receive`.',
});

export const PolicyStatement = Type.Object(
  {
    sid: Type.Optional(
      Type.String({
        pattern: ID_PATTERN,
        description: 'Statement id, named in decisions and findings: letters, digits, `.`, `_`, `-`.',
      }),
    ),
    effect: StringEnum(POLICY_EFFECTS, { description: '`allow` or `deny`; a matching deny always wins.' }),
    actions: Type.Array(PolicyAction, {
      minItems: 1,
      uniqueItems: true,
      description: 'The actions the statement decides.',
    }),
    resources: Type.Array(Type.String({ minLength: 1, maxLength: MAX_RESOURCE_LENGTH }), {
      minItems: 1,
      maxItems: MAX_STATEMENT_RESOURCES,
      description:
        'MQTT topic patterns (`+` one level, `#` the rest) for publish, subscribe and receive; client-id patterns (one level) for connect. May use `${device.id}`, `${device.model}`, `${device.hardwareRevision}`, `${device.attributes.<name>}` and `${device.groups}`.',
    }),
  },
  { additionalProperties: false },
);
export type PolicyStatement = Static<typeof PolicyStatement>;

export const PolicyDocument = Type.Object(
  {
    version: Type.Optional(
      Type.Literal(POLICY_LANGUAGE_VERSION, {
        default: POLICY_LANGUAGE_VERSION,
        description: `Version of the policy language: \`${POLICY_LANGUAGE_VERSION}\`.`,
      }),
    ),
    statements: Type.Array(PolicyStatement, { minItems: 1, maxItems: MAX_POLICY_STATEMENTS }),
  },
  { additionalProperties: false },
);
export type PolicyDocument = Static<typeof PolicyDocument>;
