import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generateDelta } from '@rampart/server';
import { applyDelta } from '@rampart/shared/updates';
import { record, summary } from './lib/report.js';

/**
 * Binary deltas: a 4 MiB image of random (incompressible) bytes, and a new release with 5% of
 * its bytes changed, half as single bytes scattered over the whole image and half in runs of
 * 1–8 KiB. Reports the patch size as a share of the full image (target ≤ 15%), beside xdelta3's
 * own best (its secondary compression, which devices cannot decode without the xdelta3 program),
 * and the time to generate on the server and to apply as a device does.
 */

const IMAGE_BYTES = 4 * 1024 * 1024;
const CHANGED_SHARE = 0.05;
const TARGET_PERCENT = 15;

/** A small deterministic generator (xorshift32), so every run measures the same images. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

export function releaseImages(seed = 42): { base: Buffer; next: Buffer; changed: number } {
  const next32 = random(seed);
  const base = Buffer.alloc(IMAGE_BYTES);
  for (let i = 0; i < IMAGE_BYTES; i += 4) base.writeUInt32LE(next32(), i);
  const next = Buffer.from(base);
  const budget = Math.floor(IMAGE_BYTES * CHANGED_SHARE);
  const touched = new Uint8Array(IMAGE_BYTES);
  let changed = 0;
  const change = (at: number) => {
    next[at] = base[at]! ^ (1 + (next32() % 255));
    if (!touched[at]) changed++;
    touched[at] = 1;
  };
  while (changed < budget / 2) change(next32() % IMAGE_BYTES);
  while (changed < budget) {
    const length = Math.min(1024 + (next32() % 7168), budget - changed);
    const at = next32() % (IMAGE_BYTES - length);
    for (let i = 0; i < length; i++) change(at + i);
  }
  return { base, next, changed };
}

export async function benchDelta(): Promise<void> {
  process.stdout.write('\n# delta: 4 MiB image, 5% of the bytes changed (scattered and in runs)\n');
  const dir = mkdtempSync(join(tmpdir(), 'rampart-bench-delta-'));
  try {
    const { base, next, changed } = releaseImages();
    writeFileSync(join(dir, 'a.img'), base);
    writeFileSync(join(dir, 'b.img'), next);

    let t0 = performance.now();
    const outcome = await generateDelta({
      from: { path: join(dir, 'a.img'), version: '1.0.0' },
      to: { path: join(dir, 'b.img') },
      outputPath: join(dir, 'a-to-b.vcdiff.gz'),
      targetPath: 'bench/app-1.0.0-to-1.0.1.vcdiff.gz',
    });
    const generateMs = performance.now() - t0;
    if (!('delta' in outcome)) throw new Error(`no delta was generated: ${outcome.skipped}`);

    // The peer: xdelta3 with its default secondary compression, the smallest it makes.
    execFileSync('xdelta3', [
      '-e',
      '-9',
      '-f',
      '-s',
      join(dir, 'a.img'),
      join(dir, 'b.img'),
      join(dir, 'peer.vcdiff'),
    ]);
    const peerBytes = statSync(join(dir, 'peer.vcdiff')).size;

    const patch = readFileSync(outcome.patchPath);
    t0 = performance.now();
    applyDelta(base, patch, outcome.delta, {
      length: next.length,
      sha256: createHash('sha256').update(next).digest('hex'),
    });
    const applyMs = performance.now() - t0;

    const percent = (patch.length / IMAGE_BYTES) * 100;
    record({
      bench: 'delta',
      dialect: '-',
      metric: 'patch size, % of the full image',
      value: percent,
      unit: '%',
      peer: { name: 'xdelta3 -S djw', value: (peerBytes / IMAGE_BYTES) * 100 },
      target: { op: '<=', value: TARGET_PERCENT },
      notes: `${percent.toFixed(2)}%: ${patch.length} of ${IMAGE_BYTES} bytes; ${changed} bytes changed`,
    });
    record({
      bench: 'delta',
      dialect: '-',
      metric: 'generate (server, xdelta3)',
      value: generateMs,
      unit: 'ms',
    });
    record({
      bench: 'delta',
      dialect: '-',
      metric: 'apply (device, JavaScript)',
      value: applyMs,
      unit: 'ms',
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await benchDelta();
  const ok = summary(join(fileURLToPath(new URL('../../../', import.meta.url)), '.bench', 'delta.json'));
  process.exitCode = ok ? 0 : 1;
}
