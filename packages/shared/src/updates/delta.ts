import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import vcdiff from '@ably/vcdiff-decoder';
import { Type, type Static } from '@sinclair/typebox';
import { SharedError } from '../errors/index.js';
import { StringEnum, describeError, errorPath, validatorFor } from '../schema/index.js';
import { ChunkHashes, chunkHashesProblem } from './chunks.js';
import { isTargetPath } from './target-path.js';

/**
 * Binary deltas between releases. The server offers, with a release, patches from earlier
 * releases (`custom.rampart.deltas` of the signed target); a device whose installed image is the
 * base of one downloads the patch instead of the image, applies it, and accepts the result only if
 * it has the target's length and SHA-256. Without a matching delta it downloads the full image.
 *
 * Format: VCDIFF (RFC 3284) without the xdelta extensions (no application header, no per-window
 * Adler-32, no secondary compression), then gzip. Applied with a pure JavaScript decoder and
 * node:zlib, so a device needs no extra system package. See docs/updates.md, "Downloads and deltas".
 */

export const DELTA_FORMATS = ['vcdiff'] as const;
export type DeltaFormat = (typeof DELTA_FORMATS)[number];
export const DELTA_COMPRESSIONS = ['gzip', 'none'] as const;
export type DeltaCompression = (typeof DELTA_COMPRESSIONS)[number];

const Hex64 = Type.String({ pattern: '^[0-9a-f]{64}$' });
const Length = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const DeltaDescriptor = Type.Object(
  {
    format: StringEnum(DELTA_FORMATS),
    compression: StringEnum(DELTA_COMPRESSIONS),
    /** The installed image the patch applies to: only a device holding exactly these bytes can use it. */
    from: Type.Object(
      {
        version: Type.String({ minLength: 1, maxLength: 64 }),
        length: Length,
        sha256: Hex64,
      },
      { additionalProperties: false },
    ),
    /** Where the patch is served, relative to the repository's targets URL. */
    path: Type.String({ minLength: 1, maxLength: 200 }),
    /** The patch file as served (after compression). */
    length: Length,
    sha256: Hex64,
    /** Chunk hashes of the patch file, for a chunk-verified download. */
    chunks: Type.Optional(ChunkHashes),
  },
  { additionalProperties: false },
);
export type DeltaDescriptor = Static<typeof DeltaDescriptor>;

/** An image as the signed metadata describes it. */
export interface ImageDigest {
  length: number;
  sha256: string;
}

/** What is wrong with a delta descriptor, or null. */
export function deltaDescriptorProblem(value: unknown): string | null {
  const validate = validatorFor(DeltaDescriptor);
  if (!validate(value)) {
    const e = validate.errors![0]!;
    const path = errorPath(e);
    return `delta${path ? ` field ${path}` : ''} ${describeError(e)}`;
  }
  const delta = value as DeltaDescriptor;
  if (!isTargetPath(delta.path)) return `delta field path ${JSON.stringify(delta.path)} is not a target path`;
  if (delta.chunks) {
    const problem = chunkHashesProblem(delta.chunks, delta.length);
    if (problem) return `delta field chunks: ${problem}`;
  }
  return null;
}

/** The delta whose base is the installed image, or null: then download the full image. */
export function chooseDelta(
  deltas: readonly DeltaDescriptor[] | undefined,
  installed: ImageDigest | null,
): DeltaDescriptor | null {
  if (!installed || !deltas) return null;
  return (
    deltas.find(
      (d) =>
        DELTA_FORMATS.includes(d.format) &&
        d.from.sha256 === installed.sha256 &&
        d.from.length === installed.length,
    ) ?? null
  );
}

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Apply a patch to the installed image and return the new image. Every input is checked against
 * signed metadata before use: the base must be the delta's `from` image, the patch must have the
 * delta's length and SHA-256 (so the decoder only ever parses a patch the release owners signed),
 * and the result must have the target's length and SHA-256. Anything else is a SharedError
 * `UPDATE_FORMAT`, and the caller falls back to the full image.
 */
export function applyDelta(
  base: Uint8Array,
  patch: Uint8Array,
  delta: DeltaDescriptor,
  target: ImageDigest,
): Buffer {
  const problem = deltaDescriptorProblem(delta);
  if (problem) throw new SharedError('UPDATE_FORMAT', problem);
  if (base.length !== delta.from.length || sha256Hex(base) !== delta.from.sha256)
    throw new SharedError(
      'UPDATE_FORMAT',
      `the installed image is not the base of this delta (version ${delta.from.version}, ` +
        `sha256 ${delta.from.sha256}); download the full image instead`,
    );
  if (patch.length !== delta.length || sha256Hex(patch) !== delta.sha256)
    throw new SharedError(
      'UPDATE_FORMAT',
      `the patch ${delta.path} does not have the length and SHA-256 the signed metadata gives; ` +
        'discard it and download it again',
    );
  // A VCDIFF patch never needs much more room than the image it builds (ADD data plus a few
  // bytes of instructions per copy); the bound stops a gzip bomb before it fills memory.
  const maxPatch = target.length * 2 + 1024 * 1024;
  let raw: Uint8Array;
  try {
    raw = delta.compression === 'gzip' ? gunzipSync(patch, { maxOutputLength: maxPatch }) : patch;
  } catch (err) {
    throw new SharedError(
      'UPDATE_FORMAT',
      `the patch ${delta.path} does not decompress within ${maxPatch} bytes: ${(err as Error).message}`,
    );
  }
  let result: Uint8Array;
  try {
    result = vcdiff.decode(raw, base);
  } catch (err) {
    throw new SharedError(
      'UPDATE_FORMAT',
      `the patch ${delta.path} is not a VCDIFF delta this device can apply: ${(err as Error).message}`,
    );
  }
  const out = Buffer.from(result.buffer, result.byteOffset, result.byteLength);
  if (out.length !== target.length || sha256Hex(out) !== target.sha256)
    throw new SharedError(
      'UPDATE_FORMAT',
      `applying the patch ${delta.path} did not give the target image (length ${out.length}, ` +
        `expected ${target.length}); download the full image instead`,
    );
  return out;
}
