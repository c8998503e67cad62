import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { RampartError } from '../../errors.js';

/** An artifact as the store holds it: content-addressed by its SHA-256. */
export interface StoredArtifact {
  sha256: string;
  length: number;
  /** Where the store keeps it (a path for the filesystem store, a key for an object store). */
  location: string;
}

/**
 * Where release artifacts live. Content-addressed: the same bytes are stored once, under their
 * SHA-256. The filesystem store is the one shipped; an S3-compatible one can implement the same.
 */
export interface ArtifactStore {
  /**
   * Store a stream, refusing it (and keeping nothing) when it is longer than `maxBytes`. Returns
   * its digest and length; storing bytes that are there already changes nothing.
   */
  put(body: Readable, maxBytes: number): Promise<StoredArtifact>;
  /** Bytes `start`..`end` (inclusive) of an artifact, or all of it; null when the store lacks it. */
  open(sha256: string, range?: { start: number; end: number }): Readable | null;
  /** Size on the medium now, or null when absent. */
  size(sha256: string): number | null;
}

const SHA256 = /^[0-9a-f]{64}$/;

/** Artifacts as files `<dir>/<aa>/<sha256>`, written to a temporary name and renamed when complete. */
export class FileArtifactStore implements ArtifactStore {
  constructor(private readonly dir: string) {
    mkdirSync(join(dir, 'tmp'), { recursive: true, mode: 0o700 });
  }

  pathOf(sha256: string): string {
    if (!SHA256.test(sha256)) throw new RampartError('VALIDATION', `not a SHA-256 digest: ${sha256}`);
    return join(this.dir, sha256.slice(0, 2), sha256);
  }

  async put(body: Readable, maxBytes: number): Promise<StoredArtifact> {
    const tmp = join(this.dir, 'tmp', randomBytes(12).toString('hex'));
    const hash = createHash('sha256');
    let length = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        length += chunk.length;
        if (length > maxBytes) {
          done(
            new RampartError(
              'PAYLOAD_TOO_LARGE',
              `the artifact is larger than updates.maxArtifactBytes (${maxBytes} bytes); nothing was stored`,
            ),
          );
          return;
        }
        hash.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(body, meter, createWriteStream(tmp, { mode: 0o600 }));
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
    const sha256 = hash.digest('hex');
    const location = this.pathOf(sha256);
    mkdirSync(join(this.dir, sha256.slice(0, 2)), { recursive: true, mode: 0o700 });
    renameSync(tmp, location);
    return { sha256, length, location };
  }

  open(sha256: string, range?: { start: number; end: number }): Readable | null {
    if (this.size(sha256) === null) return null;
    return createReadStream(this.pathOf(sha256), range ? { start: range.start, end: range.end } : {});
  }

  size(sha256: string): number | null {
    try {
      return statSync(this.pathOf(sha256)).size;
    } catch {
      return null;
    }
  }
}
