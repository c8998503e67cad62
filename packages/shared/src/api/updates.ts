import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from '../schema/index.js';
import { ARTIFACT_KINDS, RampartTarget } from '../updates/target.js';

const ROLE_NAME = '^[a-z0-9][a-z0-9._-]{0,62}$';

/** Query of `POST /updates/releases`; the artifact is the raw body. */
export const CreateReleaseQuery = Type.Object(
  {
    name: Type.String({
      pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$',
      description: 'Name of the software, e.g. `sensor-fw`.',
    }),
    version: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$' }),
    model: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
      minItems: 1,
      maxItems: 64,
      description: 'Compatible device models (repeat the parameter for more).',
    }),
    hardwareRevision: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 64 }),
    ),
    kind: Type.Optional(StringEnum(ARTIFACT_KINDS, { default: 'firmware' })),
    releaseCounter: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 2 ** 31 - 1,
        description: 'Anti-rollback counter; default: one more than the highest for the first model.',
      }),
    ),
    dependency: Type.Optional(
      Type.Array(Type.String({ maxLength: 140 }), {
        maxItems: 64,
        description: '`name` or `name>=minVersion`.',
      }),
    ),
    measurement: Type.Optional(
      Type.Array(Type.String({ maxLength: 140 }), {
        maxItems: 64,
        description: '`component=sha256hex`: reference measurement of a running component.',
      }),
    ),
    path: Type.Optional(
      Type.String({
        maxLength: 200,
        description: 'Target path; default `<first model>/<name>-<version><extension of fileName>`.',
      }),
    ),
    fileName: Type.Optional(
      Type.String({ maxLength: 200, description: 'Original file name (for its extension).' }),
    ),
    encrypt: Type.Optional(
      Type.Boolean({
        description:
          'Encrypt this release (AES-256-GCM) even when none of its models requires it; it is always encrypted when one does.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreateReleaseQuery = Static<typeof CreateReleaseQuery>;

/** A release moves from `preparing` (deltas being generated) to `published` or `pending` (signatures), or `failed`. */
export const RELEASE_STATES = ['preparing', 'published', 'pending', 'failed'] as const;
export type ReleaseState = (typeof RELEASE_STATES)[number];

export const ReleaseDeltaView = Type.Object({
  fromVersion: Type.String(),
  fromSha256: Type.String({ description: 'SHA-256 of the earlier image the patch applies to.' }),
  path: Type.String({ description: 'Where the patch is served, relative to the targets URL.' }),
  length: Type.Integer({ description: 'Bytes of the patch file.' }),
  ratio: Type.Number({ description: 'Patch length divided by the image length.' }),
});
export type ReleaseDeltaView = Static<typeof ReleaseDeltaView>;

export const ReleaseView = Type.Object({
  path: Type.String({ description: 'TUF target path.' }),
  role: Type.String({ description: 'The targets role that signs it (`targets` or a delegated role).' }),
  name: Type.String(),
  version: Type.String(),
  sha256: Type.String(),
  length: Type.Integer(),
  custom: RampartTarget,
  state: StringEnum(RELEASE_STATES, {
    description:
      '`preparing`: deltas from earlier releases are being generated, it is not signed yet; `published`; ' +
      '`pending`: waits for signatures; `failed`: it could not be signed after preparing (see `failure`).',
  }),
  signingRequest: Type.Union([Type.Integer(), Type.Null()], {
    description: 'The signing request that still needs signatures, when pending.',
  }),
  deltas: Type.Array(ReleaseDeltaView, {
    description: 'Patches offered with the release, from earlier releases (also in `custom.deltas`, signed).',
  }),
  failure: Type.Union([Type.String(), Type.Null()], {
    description: 'Why the release could not be signed, when failed.',
  }),
  createdAt: Type.String(),
  createdBy: Type.String(),
  url: Type.Union([Type.String(), Type.Null()], {
    description: 'Where a TUF client downloads it (consistent snapshot name), once published.',
  }),
});
export type ReleaseView = Static<typeof ReleaseView>;

export const ReleaseList = Type.Object({ items: Type.Array(ReleaseView) });

export const TufKeyBody = Type.Object(
  {
    keytype: StringEnum(['ecdsa', 'ed25519']),
    scheme: StringEnum(['ecdsa-sha2-nistp256', 'ed25519']),
    keyval: Type.Object({ public: Type.String({ maxLength: 4096 }) }, { additionalProperties: false }),
  },
  { additionalProperties: false },
);

export const RoleView = Type.Object({
  name: Type.String(),
  delegated: Type.Boolean(),
  version: Type.Integer({ description: 'Version of the newest published metadata.' }),
  expires: Type.String(),
  threshold: Type.Integer(),
  keyIds: Type.Array(Type.String()),
  onlineKeyIds: Type.Array(Type.String(), { description: 'Keys held in the server key store.' }),
  paths: Type.Optional(Type.Array(Type.String())),
  pendingRequest: Type.Union([Type.Integer(), Type.Null()]),
});
export type RoleView = Static<typeof RoleView>;

export const RepositoryView = Type.Object({
  development: Type.Boolean({
    description:
      'True when every key, root included, is kept by the server in its data directory: INSECURE, for development only.',
  }),
  warning: Type.Union([Type.String(), Type.Null()]),
  initialized: Type.Boolean(),
  consistentSnapshot: Type.Boolean(),
  url: Type.Union([Type.String(), Type.Null()], { description: 'The updates listener.' }),
  roles: Type.Array(RoleView),
});
export type RepositoryView = Static<typeof RepositoryView>;

export const SigningRequestView = Type.Object({
  id: Type.Integer(),
  role: Type.String(),
  version: Type.Integer(),
  state: StringEnum(['pending', 'published', 'cancelled']),
  reason: Type.String(),
  threshold: Type.Integer(),
  signedBy: Type.Array(Type.String(), { description: 'Key ids whose valid signatures are in.' }),
  missing: Type.Array(
    Type.Object({ role: Type.String(), keyIds: Type.Array(Type.String()), needed: Type.Integer() }),
    {
      description: 'For each role whose threshold is not met yet: the keys that may sign and how many more.',
    },
  ),
  signedDigest: Type.String(),
  createdAt: Type.String(),
  createdBy: Type.String(),
  publishedAt: Type.Union([Type.String(), Type.Null()]),
});
export type SigningRequestView = Static<typeof SigningRequestView>;

export const SigningRequestList = Type.Object({ items: Type.Array(SigningRequestView) });

/** `PUT /updates/roles/{name}`: set a role's keys and threshold, or create/change a delegation. */
export const SetRoleBody = Type.Object(
  {
    threshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 32 })),
    keys: Type.Optional(
      Type.Array(TufKeyBody, { maxItems: 32, description: 'Offline public keys (TUF form).' }),
    ),
    onlineKey: Type.Optional(
      Type.Boolean({
        description:
          'Create a fresh key in the server key store for this role (rotating out its previous online key).',
      }),
    ),
    paths: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 200 }), {
        minItems: 1,
        maxItems: 64,
        description: 'Delegated roles only: the target path patterns the role may sign (`acme/*`).',
      }),
    ),
  },
  { additionalProperties: false },
);
export type SetRoleBody = Static<typeof SetRoleBody>;

const OfflineRoleKeys = (role: string) =>
  Type.Object(
    {
      keys: Type.Array(TufKeyBody, {
        minItems: 1,
        maxItems: 32,
        description: `The offline public keys of ${role} (TUF form), as \`rampart release keygen\` prints them.`,
      }),
      threshold: Type.Integer({
        minimum: 1,
        maximum: 32,
        description: 'Signatures needed; at most the number of keys.',
      }),
    },
    { additionalProperties: false },
  );

/** `POST /updates/repository/init`: set up a production repository with offline root and targets keys. */
export const InitRepositoryBody = Type.Object(
  { root: OfflineRoleKeys('root'), targets: OfflineRoleKeys('targets') },
  { additionalProperties: false },
);
export type InitRepositoryBody = Static<typeof InitRepositoryBody>;

export const RoleNameParam = Type.Object(
  { name: Type.String({ pattern: ROLE_NAME }) },
  { additionalProperties: false },
);

/** `POST /updates/director/rotate`: which of the director's keys to replace. */
export const DirectorRotateBody = Type.Object(
  {
    roles: Type.Array(StringEnum(['root', 'targets'] as const), {
      minItems: 1,
      maxItems: 2,
      uniqueItems: true,
      description:
        '`root`: a new director root key; `targets`: a new online key for the per-device targets metadata.',
    }),
  },
  { additionalProperties: false },
);
export type DirectorRotateBody = Static<typeof DirectorRotateBody>;

/** The director root version a rotation created. */
export const DirectorRotationView = Type.Object({
  version: Type.Integer({ description: 'The new director root version.' }),
  rotated: Type.Array(StringEnum(['root', 'targets'] as const)),
  rootKeyIds: Type.Array(Type.String()),
  targetsKeyIds: Type.Array(Type.String()),
  signedBy: Type.Array(Type.String(), {
    description: 'Root key ids that signed the new root: the previous root key(s) and the new one.',
  }),
  expires: Type.String(),
});
export type DirectorRotationView = Static<typeof DirectorRotationView>;
