import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { applyDelta, chunkHashesProblem } from '@rampart/shared/updates';
import { RampartError } from '../../errors.js';
import { generateDelta } from './delta.js';

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

let dir: string;
let imageA: Buffer;
let imageB: Buffer;

/** A new release: a few scattered bytes and a few runs changed. */
function edited(image: Buffer): Buffer {
  const out = Buffer.from(image);
  for (let i = 0; i < 2000; i++) out[(i * 7919) % out.length]! ^= 0x5a;
  for (const at of [10_000, 300_000, 700_000]) randomBytes(4096).copy(out, at);
  return out;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rampart-delta-'));
  imageA = randomBytes(1024 * 1024);
  imageB = edited(imageA);
  writeFileSync(join(dir, 'a.img'), imageA);
  writeFileSync(join(dir, 'b.img'), imageB);
});

const request = (out: string) => ({
  from: { path: join(dir, 'a.img'), version: '1.0.0' },
  to: { path: join(dir, 'b.img') },
  outputPath: join(dir, out),
  targetPath: 'model-x/app-1.0.0-to-1.0.1.vcdiff.gz',
});

describe('delta generator', () => {
  it('makes a small patch that the device-side decoder turns into the new image', async () => {
    const outcome = await generateDelta(request('ab.vcdiff.gz'));
    if (!('delta' in outcome)) throw new Error(`no delta: ${outcome.skipped}`);
    const patch = readFileSync(outcome.patchPath);
    expect(outcome.ratio).toBeLessThan(0.1);
    expect(outcome.delta).toMatchObject({
      format: 'vcdiff',
      compression: 'gzip',
      from: { version: '1.0.0', length: imageA.length, sha256: sha256(imageA) },
      path: 'model-x/app-1.0.0-to-1.0.1.vcdiff.gz',
      length: patch.length,
      sha256: sha256(patch),
    });
    expect(chunkHashesProblem(outcome.delta.chunks, patch.length)).toBeNull();
    const rebuilt = applyDelta(imageA, patch, outcome.delta, {
      length: imageB.length,
      sha256: sha256(imageB),
    });
    expect(rebuilt.equals(imageB)).toBe(true);
    // Only the patch is left behind, no temporary files.
    expect(readdirSync(dir).filter((f) => f.startsWith('.'))).toEqual([]);
  });

  it('offers no delta when the patch would not be much smaller than the image', async () => {
    writeFileSync(join(dir, 'unrelated.img'), randomBytes(256 * 1024));
    const outcome = await generateDelta({
      ...request('unrelated.vcdiff.gz'),
      to: { path: join(dir, 'unrelated.img') },
    });
    expect(outcome).toEqual({ skipped: expect.stringMatching(/% of the image \(limit 60%\)/) as unknown });
    expect(existsSync(join(dir, 'unrelated.vcdiff.gz'))).toBe(false);
  });

  it('offers no delta for images above the size limit', async () => {
    const outcome = await generateDelta(request('big.vcdiff.gz'), { maxImageBytes: 512 * 1024 });
    expect(outcome).toEqual({ skipped: expect.stringMatching(/larger than 524288 bytes/) as unknown });
  });

  it('says what to install when xdelta3 is missing', async () => {
    const failure = generateDelta(request('none.vcdiff.gz'), { xdelta3: join(dir, 'no-such-xdelta3') });
    await expect(failure).rejects.toBeInstanceOf(RampartError);
    await expect(failure).rejects.toThrow(/not installed\. Install the Debian package xdelta3/);
  });

  it('refuses a missing release image with a storage error', async () => {
    await expect(
      generateDelta({ ...request('missing.vcdiff.gz'), from: { path: join(dir, 'nope.img'), version: '0' } }),
    ).rejects.toMatchObject({ code: 'STORAGE' });
  });
});
