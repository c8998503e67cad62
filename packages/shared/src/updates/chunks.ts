import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Type, type Static } from '@sinclair/typebox';
import { SharedError } from '../errors/index.js';
import { describeError, errorPath, validatorFor } from '../schema/index.js';

/**
 * Chunk hashes: an artifact cut into fixed-size chunks, with the SHA-256 of each. They travel in
 * the signed target metadata (`custom.rampart.chunks`), so a device can check every chunk as it
 * arrives, long before the whole file's hash (which TUF checks at the end) can be computed, and
 * throw away only the chunk that went wrong instead of the whole download.
 */

export const CHUNK_SIZE_DEFAULT = 256 * 1024;
export const CHUNK_SIZE_MIN = 4 * 1024;
export const CHUNK_SIZE_MAX = 64 * 1024 * 1024;
/** At most this many chunks per artifact: keeps the targets metadata small for every device. */
export const CHUNK_COUNT_MAX = 1024;

const Hex64 = Type.String({ pattern: '^[0-9a-f]{64}$' });

export const ChunkHashes = Type.Object(
  {
    /** Bytes per chunk, a power of two; the last chunk holds the rest. */
    chunkSize: Type.Integer({ minimum: CHUNK_SIZE_MIN, maximum: CHUNK_SIZE_MAX }),
    /** SHA-256 (hex) of each chunk, in order. */
    sha256: Type.Array(Hex64, { maxItems: CHUNK_COUNT_MAX }),
  },
  { additionalProperties: false },
);
export type ChunkHashes = Static<typeof ChunkHashes>;

/** The result of hashing an artifact: its chunk hashes, length and whole-file SHA-256. */
export interface HashedArtifact {
  chunks: ChunkHashes;
  length: number;
  sha256: string;
}

/** The chunk size for an artifact of `length` bytes: the default, doubled until it takes at most CHUNK_COUNT_MAX chunks. */
export function chunkSizeFor(length: number): number {
  let size = CHUNK_SIZE_DEFAULT;
  while (chunkCount(length, size) > CHUNK_COUNT_MAX && size < CHUNK_SIZE_MAX) size *= 2;
  return size;
}

/** How many chunks an artifact of `length` bytes has. */
export function chunkCount(length: number, chunkSize: number): number {
  return Math.ceil(length / chunkSize);
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** What is wrong with chunk hashes for an artifact of `length` bytes, or null. */
export function chunkHashesProblem(value: unknown, length: number): string | null {
  const validate = validatorFor(ChunkHashes);
  if (!validate(value)) {
    const e = validate.errors![0]!;
    const path = errorPath(e);
    return `chunk hashes${path ? ` field ${path}` : ''} ${describeError(e)}`;
  }
  const chunks = value as ChunkHashes;
  if (!isPowerOfTwo(chunks.chunkSize))
    return `chunk hashes field chunkSize must be a power of two (got ${chunks.chunkSize})`;
  const expected = chunkCount(length, chunks.chunkSize);
  if (chunks.sha256.length !== expected)
    return (
      `chunk hashes list ${chunks.sha256.length} chunks, but an artifact of ${length} bytes in ` +
      `chunks of ${chunks.chunkSize} bytes has ${expected}`
    );
  return null;
}

/**
 * Hash an artifact chunk by chunk: a file path, or (async) iterable bytes (then give `chunkSize`, or
 * the default is used and the artifact must fit in CHUNK_COUNT_MAX chunks of it).
 */
export async function computeChunkHashes(
  source: string | AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: { chunkSize?: number } = {},
): Promise<HashedArtifact> {
  let chunkSize = options.chunkSize;
  if (chunkSize === undefined)
    chunkSize = typeof source === 'string' ? chunkSizeFor((await stat(source)).size) : CHUNK_SIZE_DEFAULT;
  if (!isPowerOfTwo(chunkSize) || chunkSize < CHUNK_SIZE_MIN || chunkSize > CHUNK_SIZE_MAX)
    throw new SharedError(
      'UPDATE_FORMAT',
      `chunk size ${chunkSize} must be a power of two from ${CHUNK_SIZE_MIN} to ${CHUNK_SIZE_MAX} bytes`,
    );
  const stream = typeof source === 'string' ? createReadStream(source) : source;
  const whole = createHash('sha256');
  const digests: string[] = [];
  let current = createHash('sha256');
  let filled = 0;
  let length = 0;
  for await (const piece of stream) {
    const bytes: Uint8Array = piece;
    whole.update(bytes);
    length += bytes.length;
    let at = 0;
    while (at < bytes.length) {
      const take = Math.min(chunkSize - filled, bytes.length - at);
      current.update(bytes.subarray(at, at + take));
      filled += take;
      at += take;
      if (filled === chunkSize) {
        digests.push(current.digest('hex'));
        current = createHash('sha256');
        filled = 0;
      }
    }
  }
  if (filled > 0) digests.push(current.digest('hex'));
  if (digests.length > CHUNK_COUNT_MAX)
    throw new SharedError(
      'UPDATE_FORMAT',
      `an artifact of ${length} bytes has ${digests.length} chunks of ${chunkSize} bytes, more than ` +
        `${CHUNK_COUNT_MAX}; use a larger chunk size (chunkSizeFor(${length}) = ${chunkSizeFor(length)})`,
    );
  return { chunks: { chunkSize, sha256: digests }, length, sha256: whole.digest('hex') };
}

/**
 * Checks the chunks of one artifact as they arrive. Built from signed metadata (chunk hashes and
 * the target's length); refuses hashes that do not describe that length.
 */
export class ChunkVerifier {
  readonly chunkSize: number;
  readonly length: number;
  readonly count: number;
  private readonly digests: readonly string[];

  constructor(chunks: ChunkHashes, length: number) {
    if (!Number.isSafeInteger(length) || length < 0)
      throw new SharedError('UPDATE_FORMAT', `artifact length ${length} is not a byte count`);
    const problem = chunkHashesProblem(chunks, length);
    if (problem) throw new SharedError('UPDATE_FORMAT', problem);
    this.chunkSize = chunks.chunkSize;
    this.length = length;
    this.count = chunks.sha256.length;
    this.digests = chunks.sha256;
  }

  /** Byte range `[start, end)` of chunk `index`. */
  rangeOf(index: number): { start: number; end: number } {
    if (!Number.isInteger(index) || index < 0 || index >= this.count)
      throw new SharedError(
        'UPDATE_FORMAT',
        `chunk ${index} does not exist (the artifact has ${this.count})`,
      );
    const start = index * this.chunkSize;
    return { start, end: Math.min(start + this.chunkSize, this.length) };
  }

  /** True when `data` is exactly chunk `index`: the right length and the right SHA-256. */
  verify(index: number, data: Uint8Array): boolean {
    const { start, end } = this.rangeOf(index);
    if (data.length !== end - start) return false;
    return createHash('sha256').update(data).digest('hex') === this.digests[index];
  }
}
