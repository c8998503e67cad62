import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SharedError } from '../errors/index.js';
import {
  CHUNK_COUNT_MAX,
  CHUNK_SIZE_DEFAULT,
  ChunkVerifier,
  chunkHashesProblem,
  chunkSizeFor,
  computeChunkHashes,
} from './chunks.js';

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

describe('chunk hashes', () => {
  it('hashes a file in fixed-size chunks, the last one short, and the whole file', async () => {
    const data = randomBytes(3 * 4096 + 100);
    const file = join(mkdtempSync(join(tmpdir(), 'chunks-')), 'image.bin');
    writeFileSync(file, data);
    const hashed = await computeChunkHashes(file, { chunkSize: 4096 });
    expect(hashed.length).toBe(data.length);
    expect(hashed.sha256).toBe(sha256(data));
    expect(hashed.chunks).toEqual({
      chunkSize: 4096,
      sha256: [0, 1, 2, 3].map((i) => sha256(data.subarray(i * 4096, (i + 1) * 4096))),
    });
    expect(chunkHashesProblem(hashed.chunks, data.length)).toBeNull();
  });

  it('gives the same hashes for a stream cut at arbitrary places as for the file', async () => {
    const data = randomBytes(20_000);
    const pieces = [
      data.subarray(0, 1),
      data.subarray(1, 5000),
      data.subarray(5000, 8192),
      data.subarray(8192),
    ];
    const fromStream = await computeChunkHashes(pieces, { chunkSize: 4096 });
    const fromOne = await computeChunkHashes([data], { chunkSize: 4096 });
    expect(fromStream).toEqual(fromOne);
    expect(fromStream.chunks.sha256).toHaveLength(5);
  });

  it('describes an empty artifact with no chunks', async () => {
    const hashed = await computeChunkHashes([], { chunkSize: 4096 });
    expect(hashed).toEqual({
      chunks: { chunkSize: 4096, sha256: [] },
      length: 0,
      sha256: sha256(new Uint8Array()),
    });
    expect(new ChunkVerifier(hashed.chunks, 0).count).toBe(0);
  });

  it('picks a chunk size that keeps large artifacts within the chunk limit', async () => {
    expect(chunkSizeFor(4 * 1024 * 1024)).toBe(CHUNK_SIZE_DEFAULT);
    expect(chunkSizeFor(1024 * CHUNK_SIZE_DEFAULT)).toBe(CHUNK_SIZE_DEFAULT);
    expect(chunkSizeFor(1024 * CHUNK_SIZE_DEFAULT + 1)).toBe(2 * CHUNK_SIZE_DEFAULT);
    expect(Math.ceil(3e9 / chunkSizeFor(3e9))).toBeLessThanOrEqual(CHUNK_COUNT_MAX);
    await expect(computeChunkHashes([randomBytes(4096 * 1025)], { chunkSize: 4096 })).rejects.toThrow(
      /more than 1024; use a larger chunk size/,
    );
    await expect(computeChunkHashes([], { chunkSize: 5000 })).rejects.toThrow(/power of two/);
  });

  it('refuses chunk hashes that do not describe the artifact', () => {
    const good = { chunkSize: 4096, sha256: ['a'.repeat(64), 'b'.repeat(64)] };
    expect(chunkHashesProblem(good, 8000)).toBeNull();
    expect(chunkHashesProblem(good, 9000)).toMatch(/list 2 chunks, but an artifact of 9000 bytes .* has 3/);
    expect(chunkHashesProblem(good, 4096)).toMatch(/has 1/);
    expect(chunkHashesProblem({ ...good, chunkSize: 6144 }, 8000)).toMatch(/power of two/);
    expect(chunkHashesProblem({ ...good, chunkSize: 1024 }, 2000)).toMatch(/chunkSize must be >= 4096/);
    expect(chunkHashesProblem({ ...good, sha256: ['A'.repeat(64), 'b'.repeat(64)] }, 8000)).toMatch(
      /field sha256\.0 must match/,
    );
    expect(chunkHashesProblem({ ...good, extra: 1 }, 8000)).toMatch(/extra is not a known field/);
    expect(() => new ChunkVerifier(good, 9000)).toThrow(SharedError);
  });

  it('verifies each chunk: the right bytes pass, a flipped bit, a short or a long chunk fail', async () => {
    const data = randomBytes(4096 * 2 + 10);
    const { chunks } = await computeChunkHashes([data], { chunkSize: 4096 });
    const v = new ChunkVerifier(chunks, data.length);
    expect(v.count).toBe(3);
    expect(v.rangeOf(2)).toEqual({ start: 8192, end: 8202 });
    for (let i = 0; i < 3; i++) {
      const { start, end } = v.rangeOf(i);
      expect(v.verify(i, data.subarray(start, end))).toBe(true);
    }
    const flipped = Buffer.from(data.subarray(4096, 8192));
    flipped[100]! ^= 0x01;
    expect(v.verify(1, flipped)).toBe(false);
    expect(v.verify(2, data.subarray(8192, 8201))).toBe(false);
    expect(v.verify(2, Buffer.concat([data.subarray(8192), Buffer.alloc(1)]))).toBe(false);
    // A chunk presented under another index fails too.
    expect(v.verify(0, data.subarray(4096, 8192))).toBe(false);
    expect(() => v.rangeOf(3)).toThrow(/chunk 3 does not exist/);
  });
});
