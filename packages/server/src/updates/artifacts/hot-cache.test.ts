import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HotArtifacts } from './hot-cache.js';
import { FileArtifactStore } from './store.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function storeWith(...contents: Buffer[]) {
  const dir = mkdtempSync(join(tmpdir(), 'rampart-hot-'));
  dirs.push(dir);
  const store = new FileArtifactStore(dir);
  const stored = [];
  for (const c of contents) stored.push(await store.put(Readable.from([c]), 1 << 30));
  return { store, stored };
}

describe('HotArtifacts', () => {
  it('serves the stored bytes and reads the store once for many requests', async () => {
    const image = randomBytes(100_000);
    const { store, stored } = await storeWith(image);
    const open = vi.spyOn(store, 'open');
    const hot = new HotArtifacts(store, 1_000_000);
    const got = await Promise.all(Array.from({ length: 5 }, () => hot.get(stored[0]!.sha256, image.length)));
    for (const g of got) expect(g!.equals(image)).toBe(true);
    expect(await hot.get(stored[0]!.sha256, image.length)).toBe(got[0]);
    expect(open).toHaveBeenCalledTimes(1);
    expect(hot.size).toBe(image.length);
  });

  it('refuses bytes that changed on disk instead of serving them', async () => {
    const image = randomBytes(10_000);
    const { store, stored } = await storeWith(image);
    const flipped = Buffer.from(image);
    flipped[500] = flipped[500]! ^ 1;
    writeFileSync(store.pathOf(stored[0]!.sha256), flipped);
    const hot = new HotArtifacts(store, 1_000_000);
    await expect(hot.get(stored[0]!.sha256, image.length)).rejects.toThrow(/changed on disk/);
    expect(hot.size).toBe(0);
  });

  it('keeps at most its budget, dropping the least recently served first', async () => {
    const parts = Array.from({ length: 5 }, () => randomBytes(120));
    const { store, stored } = await storeWith(...parts);
    const [a, b, c, d, e] = stored.map((s) => s.sha256) as [string, string, string, string, string];
    const hot = new HotArtifacts(store, 500); // four fit; each is under a quarter (125)
    for (const sha of [a, b, c, d]) await hot.get(sha, 120);
    await hot.get(a, 120); // a is now the most recently served, b the least
    await hot.get(e, 120);
    expect(hot.size).toBe(480);
    const open = vi.spyOn(store, 'open');
    for (const sha of [a, c, d, e]) await hot.get(sha, 120);
    expect(open).not.toHaveBeenCalled();
    const again = await hot.get(b, 120);
    expect(again!.equals(parts[1]!)).toBe(true);
    expect(open).toHaveBeenCalledTimes(1);
    expect(hot.size).toBeLessThanOrEqual(500);
  });

  it('does not keep artifacts larger than a quarter of the budget, nor anything when off', async () => {
    const image = randomBytes(300);
    const { store, stored } = await storeWith(image);
    const sha = stored[0]!.sha256;
    expect(createHash('sha256').update(image).digest('hex')).toBe(sha);
    expect(await new HotArtifacts(store, 1000).get(sha, 300)).toBeNull();
    expect(await new HotArtifacts(store, 0).get(sha, 300)).toBeNull();
  });
});
