import { Type, type Static } from '@sinclair/typebox';
import { ROLES } from '../access/index.js';
import { StringEnum } from '../schema/index.js';

export const TokenRecord = Type.Object(
  {
    id: Type.String({ description: 'Public token id; appears in audit entries as `token:<id>`.' }),
    name: Type.String(),
    role: StringEnum(ROLES),
    createdAt: Type.String(),
    createdBy: Type.String(),
    expiresAt: Type.Union([Type.String(), Type.Null()]),
    revokedAt: Type.Union([Type.String(), Type.Null()]),
    lastUsedAt: Type.Union([Type.String(), Type.Null()], { description: 'Updated at most once a minute.' }),
    state: StringEnum(['active', 'expired', 'revoked']),
  },
  { additionalProperties: false },
);
export type TokenRecord = Static<typeof TokenRecord>;

export const CreateTokenBody = Type.Object(
  {
    name: Type.String({
      minLength: 1,
      maxLength: 100,
      pattern: '^[^\\x00-\\x1f]+$',
      description: 'What the token is for.',
    }),
    role: StringEnum(ROLES),
    expiresIn: Type.Optional(
      Type.String({
        pattern: '^\\d+\\s*[smhdw]$',
        description: 'Lifetime such as `30d`, `12h`, `2w`; no expiry when omitted.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreateTokenBody = Static<typeof CreateTokenBody>;

export const CreatedToken = Type.Object(
  {
    token: Type.String({ description: 'The secret token. Shown once; store it now.' }),
    record: TokenRecord,
  },
  { additionalProperties: false },
);
export type CreatedToken = Static<typeof CreatedToken>;

export const Whoami = Type.Object({
  tokenId: Type.String(),
  name: Type.String(),
  role: StringEnum(ROLES),
  permissions: Type.Array(Type.String()),
});
export type Whoami = Static<typeof Whoami>;
