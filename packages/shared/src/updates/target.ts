import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from '../schema/index.js';
import { ChunkHashes } from './chunks.js';
import { ArtifactEncryption } from './encryption.js';
import { DeltaDescriptor } from './delta.js';

/** What a release installs. `configuration` covers configuration and security parameters. */
export const ARTIFACT_KINDS = ['firmware', 'os', 'application', 'configuration'] as const;
export type ArtifactKind = (typeof ARTIFACT_KINDS)[number];

/** The key under a TUF target's `custom` member that holds Rampart's target metadata. */
export const CUSTOM_KEY = 'rampart';

const NAME = '^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$';
const VERSION = '^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$';

/**
 * Rampart's metadata about one target, signed with it by the release repository: which devices it
 * fits, its anti-rollback counter, what it is, what it needs, and the measurements a device running
 * it reports (these become attestation reference values).
 */
export const RampartTarget = Type.Object(
  {
    models: Type.Array(Type.String({ pattern: NAME }), {
      minItems: 1,
      maxItems: 64,
      uniqueItems: true,
      description: 'Device models the target may be installed on.',
    }),
    hardwareRevisions: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
        maxItems: 64,
        uniqueItems: true,
        description: 'Hardware revisions it fits; absent means every revision of the models.',
      }),
    ),
    releaseCounter: Type.Integer({
      minimum: 0,
      maximum: 2 ** 31 - 1,
      description: 'Anti-rollback counter: a device refuses a target with a lower counter than it runs.',
    }),
    kind: StringEnum(ARTIFACT_KINDS),
    version: Type.String({ pattern: VERSION, description: 'Version shown to people, e.g. `1.4.2`.' }),
    dependencies: Type.Optional(
      Type.Array(
        Type.Object(
          {
            name: Type.String({ pattern: NAME }),
            minVersion: Type.Optional(Type.String({ pattern: VERSION })),
          },
          { additionalProperties: false },
        ),
        { maxItems: 64 },
      ),
    ),
    measurements: Type.Optional(
      Type.Array(
        Type.Object(
          {
            component: Type.String({ minLength: 1, maxLength: 64 }),
            sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
          },
          { additionalProperties: false },
        ),
        { maxItems: 64 },
      ),
    ),
    chunks: Type.Optional(
      Type.Unsafe<ChunkHashes>({
        ...ChunkHashes,
        description:
          'SHA-256 of each fixed-size chunk, so that a download is verified chunk by chunk as it arrives (set by the repository).',
      }),
    ),
    encryption: Type.Optional(ArtifactEncryption),
    deltas: Type.Optional(
      Type.Array(DeltaDescriptor, {
        maxItems: 8,
        description:
          'Patches from earlier releases (set by the repository): a device running the `from` image may download one instead of the whole image.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type RampartTarget = Static<typeof RampartTarget>;

export const TARGET_NAME_PATTERN = NAME;
export const TARGET_VERSION_PATTERN = VERSION;

export { TARGET_PATH, isTargetPath } from './target-path.js';

/** The default target path of a release: `<model>/<name>-<version><ext>` (ext taken from `fileName`). */
export function defaultTargetPath(model: string, name: string, version: string, fileName?: string): string {
  const ext = fileName && /\.[A-Za-z0-9]{1,10}$/.exec(fileName)?.[0];
  return `${model}/${name}-${version}${ext ?? ''}`;
}
