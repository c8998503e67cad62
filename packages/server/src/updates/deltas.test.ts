import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Updater } from 'tuf-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReleaseView } from '@rampart/shared/api';
import { createLogger } from '@rampart/shared/logging';
import { CUSTOM_KEY, type RampartTarget } from '@rampart/shared/updates';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { enrollUpdateDevice, type UpdateDevice } from '../test-support/update-device.js';
import type { FileArtifactStore } from './artifacts/store.js';
import { UpdatesService, updatesSettingsOf } from './service.js';
// The device side is the real agent code, talking to the real platform over mutual TLS.

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** The next release's image: the same bytes with a few scattered changes and a run appended. */
function nextImage(image: Buffer): Buffer {
  const next = Buffer.from(image);
  for (let i = 0; i < 200; i++) {
    const at = (i * 7919) % next.length;
    next[at] = next[at]! ^ 0x5a;
  }
  return Buffer.concat([next, randomBytes(2000)]);
}

type Device = UpdateDevice;

describe('binary deltas in the update flow (server generates, device chooses)', { timeout: 120_000 }, () => {
  let t: TestPlatform;
  const dirs: string[] = [];
  const v1 = randomBytes(300_000);
  const v2 = nextImage(v1);
  let rel1: ReleaseView;
  let rel2: ReleaseView;

  const upload = async (query: string, body: Buffer): Promise<ReleaseView> => {
    const r = await t.call('POST', `/api/v1/updates/releases?${query}`, {
      raw: body,
      contentType: 'application/octet-stream',
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body as ReleaseView;
  };
  const release = async (path: string): Promise<ReleaseView> => {
    const r = await t.call('GET', `/api/v1/updates/releases?path=${encodeURIComponent(path)}`);
    expect(r.status).toBe(200);
    return r.body.items[0] as ReleaseView;
  };
  const store = () => t.platform.updates.artifacts as FileArtifactStore;

  const enroll = (id: string): Promise<Device> => enrollUpdateDevice(t, { id, model: 'DW100', dirs });

  const assign = async (d: Device, path: string) => {
    const a = await t.call('PUT', `/api/v1/devices/${d.id}/update-assignment`, { body: { path } });
    expect(a.status, JSON.stringify(a.body)).toBe(200);
  };
  /** The image in the slot the device runs, read from disk. */
  const runningImage = (d: Device): Buffer => {
    const state = d.installer.state();
    const slot = state.slots[state.active]!;
    return readFileSync(join(d.installer.slotDir(state.active), slot.name));
  };

  beforeAll(async () => {
    t = await startTestPlatform(
      'sqlite',
      {
        'updates.development': true,
        'updates.maxArtifactBytes': 2_000_000,
        // Artifacts streamed from the store as written, so that a patch changed on disk reaches the
        // device and the device's own checks are what is tested (the in-memory copy refuses such
        // bytes itself: artifacts/hot-cache.test.ts).
        'updates.artifactCacheBytes': 0,
      },
      { captureLogs: true },
    );
    await t.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } });
    // The first release of a model has nothing to build a delta from: it is published at once.
    rel1 = await upload('name=fw&version=1.0.0&model=DW100&fileName=fw.bin', v1);
    expect(rel1).toMatchObject({ state: 'published', deltas: [] });
  });
  afterAll(async () => {
    await t?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('prepares release 2 off the request path, then publishes it with a signed delta from release 1', async () => {
    const created = await upload('name=fw&version=2.0.0&model=DW100&fileName=fw.bin', v2);
    expect(created).toMatchObject({ state: 'preparing', url: null, deltas: [] });
    // Not offered to devices while preparing: it is not published yet.
    expect(
      (await t.call('POST', '/api/v1/devices', { body: { id: 'DELTA-EARLY', model: 'DW100' } })).status,
    ).toBe(201);
    const early = await t.call('PUT', '/api/v1/devices/DELTA-EARLY/update-assignment', {
      body: { path: created.path },
    });
    expect(early.status).toBe(404);
    expect(early.body.detail).toMatch(/no published release/);
    await t.platform.updates.preparationsSettled();
    rel2 = await release(created.path);
    expect(rel2.state).toBe('published');
    expect(rel2.deltas).toEqual([
      expect.objectContaining({
        fromVersion: '1.0.0',
        fromSha256: sha256(v1),
        path: 'DW100/fw-2.0.0.from-1.0.0.vcdiff.gz',
      }),
    ]);
    expect(rel2.deltas[0]!.ratio).toBeLessThan(0.2);

    // What a TUF client sees: the descriptor is inside the signed target.
    const dir = mkdtempSync(join(tmpdir(), 'rampart-delta-tuf-'));
    dirs.push(dir);
    writeFileSync(
      join(dir, 'root.json'),
      await (await fetch(`${t.platform.updates.url}/metadata/1.root.json`)).text(),
    );
    const updater = new Updater({
      metadataDir: dir,
      metadataBaseUrl: `${t.platform.updates.url}/metadata`,
      targetDir: dir,
      targetBaseUrl: `${t.platform.updates.url}/targets`,
      config: { fetchRetries: 0 },
    });
    await updater.refresh();
    const info = await updater.getTargetInfo(rel2.path);
    const custom = info!.custom[CUSTOM_KEY] as RampartTarget;
    expect(custom.deltas).toHaveLength(1);
    const delta = custom.deltas![0]!;
    expect(delta.from).toEqual({ version: '1.0.0', length: v1.length, sha256: sha256(v1) });
    // The patch is not a TUF target of its own ...
    expect(await updater.getTargetInfo(delta.path)).toBeUndefined();
    // ... but the listener serves it under its consistent-snapshot name, with Range.
    const url = `${t.platform.updates.url}/targets/DW100/${delta.sha256}.fw-2.0.0.from-1.0.0.vcdiff.gz`;
    const whole = Buffer.from(await (await fetch(url)).arrayBuffer());
    expect(whole.length).toBe(delta.length);
    expect(sha256(whole)).toBe(delta.sha256);
    const part = await fetch(url, { headers: { range: 'bytes=0-9' } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(whole.subarray(0, 10))).toBe(true);

    const audit = await t.call('GET', '/api/v1/audit/entries?action=release.prepare');
    expect(audit.body.items).toEqual([
      expect.objectContaining({ actor: 'system', target: `release:${rel2.path}`, outcome: 'success' }),
    ]);
  });

  it('a device running release 1 installs release 2 from the delta, downloading less than the image', async () => {
    const d = await enroll('DELTA-0001');
    await assign(d, rel1.path);
    expect(await d.client().check()).toMatchObject({ outcome: 'installed', transfer: 'full' });
    await assign(d, rel2.path);
    const r = await d.client().check();
    expect(r).toMatchObject({
      outcome: 'installed',
      target: rel2.path,
      transfer: 'delta',
      receiptSent: true,
    });
    expect(r.result?.outcome).toBe('committed');
    expect(r.downloadedBytes).toBeGreaterThan(0);
    expect(r.downloadedBytes).toBeLessThan(v2.length / 5);
    expect(sha256(runningImage(d))).toBe(rel2.sha256);
    expect(d.logs.some((l) => l.includes('"update.delta"'))).toBe(true);
  });

  it('a device running something else downloads the full image', async () => {
    const d = await enroll('DELTA-0002');
    await assign(d, rel2.path);
    const r = await d.client().check();
    expect(r).toMatchObject({ outcome: 'installed', transfer: 'full', downloadedBytes: v2.length });
    expect(sha256(runningImage(d))).toBe(rel2.sha256);
    expect(d.logs.some((l) => l.includes('"update.delta'))).toBe(false);
  });

  it('refuses a tampered patch on the server, logs it, and installs the right bytes from the full image', async () => {
    const d = await enroll('DELTA-0003');
    await assign(d, rel1.path);
    expect((await d.client().check()).outcome).toBe('installed');
    const stored = store().pathOf(rel2.custom.deltas![0]!.sha256);
    const original = readFileSync(stored);
    const tampered = Buffer.from(original);
    const at = Math.floor(tampered.length / 2);
    tampered[at] = tampered[at]! ^ 0x01;
    writeFileSync(stored, tampered);
    try {
      await assign(d, rel2.path);
      const r = await d.client().check();
      expect(r).toMatchObject({ outcome: 'installed', transfer: 'full', downloadedBytes: v2.length });
      expect(sha256(runningImage(d))).toBe(rel2.sha256);
      expect(d.logs.some((l) => l.includes('"update.delta-failed"'))).toBe(true);
    } finally {
      writeFileSync(stored, original);
    }
  });

  it('publishes without deltas when xdelta3 is missing, and logs why', async () => {
    const settings = t.platform.updates.settings.deltas;
    const program = settings.xdelta3;
    settings.xdelta3 = join(tmpdir(), 'no-such-dir', 'xdelta3');
    try {
      const created = await upload('name=fw&version=3.0.0&model=DW100&fileName=fw.bin', nextImage(v2));
      expect(created.state).toBe('preparing');
      await t.platform.updates.preparationsSettled();
      const r3 = await release(created.path);
      expect(r3).toMatchObject({ state: 'published', deltas: [] });
      expect(r3.custom.deltas).toBeUndefined();
      expect(t.logs.some((l) => l.includes('"release.delta-failed"') && l.includes('not installed'))).toBe(
        true,
      );
    } finally {
      settings.xdelta3 = program;
    }
  });

  it('marks a release that cannot be signed after preparing as failed (audited), and frees its path', async () => {
    const db = t.platform.storage.db;
    const path = 'DW100/fw-2.5.0.bin';
    const { deltas: _none, ...custom } = { ...rel2.custom, version: '2.5.0', releaseCounter: 25 };
    await db
      .insertInto('update_releases')
      .values({
        path,
        role: 'targets',
        name: 'fw',
        version: '2.5.0',
        sha256: rel2.sha256,
        length: rel2.length,
        first_model: 'DW100',
        release_counter: 25,
        custom: JSON.stringify(custom),
        state: 'preparing',
        signing_request: null,
        created_at: new Date().toISOString(),
        created_by: 'admin',
      })
      .execute();
    // Meanwhile another change to the targets role waits for signatures.
    const blocker = await db
      .insertInto('tuf_signing_requests')
      .values({
        role: 'targets',
        version: 999,
        document: '{}',
        state: 'pending',
        reason: 'test',
        created_at: new Date().toISOString(),
        created_by: 'test',
        published_at: null,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    try {
      expect(await t.platform.updates.prepareRelease(path)).toBeNull();
    } finally {
      await db.deleteFrom('tuf_signing_requests').where('id', '=', blocker.id).execute();
    }
    const failed = await release(path);
    expect(failed.state).toBe('failed');
    expect(failed.failure).toMatch(/could not be signed .*waiting for signatures.*create it again/);
    const audit = await t.call('GET', '/api/v1/audit/entries?action=release.prepare&outcome=failure');
    expect(audit.body.items).toEqual([
      expect.objectContaining({ target: `release:${path}`, outcome: 'failure' }),
    ]);
    // Its path is free again.
    const again = await upload('name=fw&version=2.5.0&model=DW100&fileName=fw.bin&releaseCounter=25', v2);
    expect(again.path).toBe(path);
    await t.platform.updates.preparationsSettled();
    expect((await release(path)).state).toBe('published');
  });

  it('a release left preparing by a stop is prepared at the next start', async () => {
    // The running service stops (as at shutdown) before it gets to the new release.
    await t.platform.updates.stop();
    const created = await upload('name=fw&version=4.0.0&model=DW100&fileName=fw.bin', nextImage(v2));
    expect(created.state).toBe('preparing');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await release(created.path)).state).toBe('preparing');

    // A new start over the same database and data directory picks it up.
    const p = t.platform;
    const restarted = new UpdatesService(
      p.storage,
      p.keys,
      p.audit,
      updatesSettingsOf(p.config),
      p.config.dataDir,
      createLogger({ level: 'silent' }),
    );
    await restarted.open();
    await restarted.preparationsSettled();
    await restarted.stop();
    const r4 = await release(created.path);
    expect(r4.state).toBe('published');
    // The three most recent earlier images (2.5.0 has the bytes of 2.0.0: one patch serves both).
    expect(r4.deltas.map((x) => x.fromVersion).sort()).toEqual(['1.0.0', '2.5.0', '3.0.0']);
  });
});
