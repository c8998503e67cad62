import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { BaseFetcher, Updater } from 'tuf-js';
import { DownloadHTTPError } from 'tuf-js/dist/error.js';
import {
  CUSTOM_KEY,
  chunkHashesProblem,
  computeChunkHashes,
  type RampartTarget,
} from '@rampart/shared/updates';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { FileArtifactStore } from './artifacts/store.js';

/**
 * An attacker between the device and the updates listener: fetches from the real listener and
 * swaps in other bytes for the URLs it is told to.
 */
class Interceptor extends BaseFetcher {
  swap = new Map<string, (real: Buffer) => Buffer>();
  async fetch(url: string): Promise<ReadableStream<Uint8Array<ArrayBuffer>>> {
    const res = await globalThis.fetch(url);
    if (!res.ok) throw new DownloadHTTPError(`HTTP ${res.status} for ${url}`, res.status);
    let body: Buffer = Buffer.from(await res.arrayBuffer());
    for (const [suffix, change] of this.swap) if (url.endsWith(suffix)) body = change(body);
    return new Response(new Uint8Array(body)).body as ReadableStream<Uint8Array<ArrayBuffer>>;
  }
}

describe('release repository served to an unmodified tuf-js client', { timeout: 60_000 }, () => {
  let t: TestPlatform;
  let updatesUrl: string;
  let rootV1: string;
  const dirs: string[] = [];
  const firmware = randomBytes(40_000);

  /** A device's TUF client: trusts root v1, keeps its metadata in its own directory. */
  function client(fetcher?: Interceptor, dir?: string): { updater: Updater; dir: string } {
    const d = dir ?? mkdtempSync(join(tmpdir(), 'rampart-tuf-'));
    if (!dir) {
      dirs.push(d);
      writeFileSync(join(d, 'root.json'), rootV1);
    }
    const updater = new Updater({
      metadataDir: d,
      metadataBaseUrl: `${updatesUrl}/metadata`,
      targetDir: d,
      targetBaseUrl: `${updatesUrl}/targets`,
      ...(fetcher ? { fetcher } : {}),
      config: { fetchRetries: 0 },
    });
    return { updater, dir: d };
  }

  const upload = (query: string, body: Buffer, token?: string) =>
    t.call('POST', `/api/v1/updates/releases?${query}`, {
      raw: body,
      contentType: 'application/octet-stream',
      ...(token ? { token } : {}),
    });

  beforeAll(async () => {
    t = await startTestPlatform('sqlite', {
      'updates.development': true,
      'updates.maxArtifactBytes': 100_000,
      // Targets streamed from the store as written, so that a file changed on disk reaches the client
      // (the in-memory copy of hot artifacts is checked and tested in artifacts/hot-cache.test.ts).
      'updates.artifactCacheBytes': 0,
    });
    updatesUrl = t.platform.listeners.find((l) => l.name === 'updates')!.url;
    rootV1 = await (await fetch(`${updatesUrl}/metadata/1.root.json`)).text();
  });
  afterAll(async () => {
    await t?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('sets up a development repository, labelled as such', async () => {
    const r = await t.call('GET', '/api/v1/updates/repository');
    expect(r.status).toBe(200);
    expect(r.body.development).toBe(true);
    expect(r.body.warning).toMatch(/DEVELOPMENT.*INSECURE/);
    expect(r.body.url).toBe(updatesUrl);
    expect(r.body.roles.map((x: { name: string }) => x.name)).toEqual([
      'root',
      'targets',
      'snapshot',
      'timestamp',
    ]);
    for (const role of r.body.roles) {
      expect(role.threshold).toBe(1);
      expect(role.onlineKeyIds).toHaveLength(1);
    }
  });

  it('publishes a release at once; tuf-js refreshes and downloads it with its Rampart metadata', async () => {
    const r = await upload(
      'name=sensor-fw&version=1.0.0&model=DW100&hardwareRevision=B&kind=firmware&releaseCounter=3&fileName=fw.bin' +
        '&dependency=bootloader>=2.1&measurement=app=' +
        'a'.repeat(64),
      firmware,
    );
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ path: 'DW100/sensor-fw-1.0.0.bin', state: 'published', role: 'targets' });
    expect(r.body.url).toBe(`${updatesUrl}/targets/DW100/${r.body.sha256}.sensor-fw-1.0.0.bin`);

    const served = async (kind: string) => {
      const m = new RegExp(`rampart_updates_served_bytes_total\\{kind="${kind}"\\} (\\d+)`).exec(
        (await t.call('GET', '/metrics')).body as string,
      );
      return m ? Number(m[1]) : 0;
    };
    const [metadataBefore, targetBefore] = [await served('metadata'), await served('target')];
    const { updater, dir } = client();
    await updater.refresh();
    // What went to the device is counted: the metadata it fetched, then the artifact's bytes.
    expect(await served('metadata')).toBeGreaterThan(metadataBefore);
    const info = await updater.getTargetInfo('DW100/sensor-fw-1.0.0.bin');
    expect(info).toBeDefined();
    expect(info!.length).toBe(firmware.length);
    const custom = info!.custom[CUSTOM_KEY] as RampartTarget;
    expect(custom).toMatchObject({
      models: ['DW100'],
      hardwareRevisions: ['B'],
      releaseCounter: 3,
      kind: 'firmware',
      version: '1.0.0',
      dependencies: [{ name: 'bootloader', minVersion: '2.1' }],
      measurements: [{ component: 'app', sha256: 'a'.repeat(64) }],
    });
    const path = await updater.downloadTarget(info!, join(dir, 'fw.bin'));
    expect(readFileSync(path).equals(firmware)).toBe(true);
    expect((await served('target')) - targetBefore).toBe(firmware.length);
    // The signed chunk hashes describe the artifact, so a download can be checked chunk by chunk.
    expect(chunkHashesProblem(custom.chunks, firmware.length)).toBeNull();
    const recomputed = await computeChunkHashes([firmware], { chunkSize: custom.chunks!.chunkSize });
    expect(recomputed.chunks).toEqual(custom.chunks);
  });

  it('serves byte ranges of targets', async () => {
    const list = await t.call('GET', '/api/v1/updates/releases');
    const url = list.body.items[0].url as string;
    const part = await fetch(url, { headers: { range: 'bytes=100-199' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 100-199/${firmware.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(firmware.subarray(100, 200))).toBe(true);
    const tail = await fetch(url, { headers: { range: `bytes=${firmware.length - 10}-` } });
    expect(Buffer.from(await tail.arrayBuffer()).equals(firmware.subarray(firmware.length - 10))).toBe(true);
    expect((await fetch(url, { headers: { range: `bytes=${firmware.length}-` } })).status).toBe(416);
  });

  it('refuses a target tampered with on disk', async () => {
    const list = await t.call('GET', '/api/v1/updates/releases');
    const store = new FileArtifactStore(join(t.dataDir, 'artifacts'));
    const file = store.pathOf(list.body.items[0].sha256);
    const original = readFileSync(file);
    const flipped = Buffer.from(original);
    flipped[1000] = flipped[1000]! ^ 0xff;
    writeFileSync(file, flipped);
    try {
      const { updater, dir } = client();
      await updater.refresh();
      const info = await updater.getTargetInfo('DW100/sensor-fw-1.0.0.bin');
      await expect(updater.downloadTarget(info!, join(dir, 'fw.bin'))).rejects.toThrow(/hash/i);
    } finally {
      writeFileSync(file, original);
    }
  });

  it('refuses a target longer than its metadata says (endless data)', async () => {
    const attacker = new Interceptor();
    attacker.swap.set('.sensor-fw-1.0.0.bin', (real) => Buffer.concat([real, randomBytes(5000)]));
    const { updater, dir } = client(attacker);
    await updater.refresh();
    const info = await updater.getTargetInfo('DW100/sensor-fw-1.0.0.bin');
    await expect(updater.downloadTarget(info!, join(dir, 'fw.bin'))).rejects.toThrow(/length|exceed|Max/i);
  });

  it('refuses expired metadata (freeze attack)', async () => {
    // The client's clock: two days on, the one-day timestamp has expired.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 2 * 86_400_000);
    const { updater } = client();
    await expect(updater.refresh()).rejects.toThrow(/expired/i);
  });

  it('refuses a rolled-back timestamp', async () => {
    const { updater, dir } = client();
    await updater.refresh(); // trusts the newest timestamp now
    const old = await t.platform.updates.repository.document(t.platform.storage.db, 'timestamp', 1);
    const attacker = new Interceptor();
    attacker.swap.set('/metadata/timestamp.json', () => Buffer.from(old!));
    const again = client(attacker, dir).updater;
    await expect(again.refresh()).rejects.toThrow(/version/i);
  });

  it('refuses a snapshot that does not match the timestamp (mix and match)', async () => {
    const oldSnapshot = await t.platform.updates.repository.document(t.platform.storage.db, 'snapshot', 1);
    const attacker = new Interceptor();
    attacker.swap.set('.snapshot.json', () => Buffer.from(oldSnapshot!));
    const { updater } = client(attacker);
    await expect(updater.refresh()).rejects.toThrow(/length|hash|version/i);
  });

  it('re-signs the timestamp and snapshot before they expire', async () => {
    const before = await t.call('GET', '/api/v1/updates/repository');
    const version = (name: string) =>
      (before.body.roles as { name: string; version: number }[]).find((r) => r.name === name)!.version;
    // 20 hours later the one-day timestamp is past half its life; the 7-day snapshot is not.
    const roles = await t.platform.updates.refresh(Date.now() + 20 * 3_600_000);
    expect(roles).toEqual(['timestamp']);
    const after = await t.call('GET', '/api/v1/updates/repository');
    const now = (name: string) =>
      (after.body.roles as { name: string; version: number }[]).find((r) => r.name === name)!.version;
    expect(now('timestamp')).toBe(version('timestamp') + 1);
    expect(now('snapshot')).toBe(version('snapshot'));
    expect(await t.platform.updates.refresh()).toEqual([]);
    const { updater } = client();
    await updater.refresh();
  });

  it('rotates an online key: a new root, accepted by the client', async () => {
    const r = await t.call('PUT', '/api/v1/updates/roles/timestamp', { body: { onlineKey: true } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ role: 'root', version: 2, published: true });
    const repo = await t.call('GET', '/api/v1/updates/repository');
    const ts = repo.body.roles.find((x: { name: string }) => x.name === 'timestamp');
    expect(ts.keyIds).toHaveLength(1);
    expect(ts.onlineKeyIds).toEqual(ts.keyIds);
    const { updater, dir } = client();
    await updater.refresh();
    expect(JSON.parse(readFileSync(join(dir, 'root.json'), 'utf8')).signed.version).toBe(2);
  });

  describe('refuses bad input with nothing written', () => {
    const count = async () =>
      Number(
        (
          await t.platform.storage.db
            .selectFrom('update_releases')
            .select((eb) => eb.fn.countAll().as('n'))
            .executeTakeFirstOrThrow()
        ).n,
      );

    it('metadata that is not valid', async () => {
      const n = await count();
      const noModel = await upload('name=x&version=1.0.0', Buffer.from('x'));
      expect(noModel.status).toBe(400);
      const badKind = await upload('name=x&version=1.0.0&model=DW100&kind=kernel', Buffer.from('x'));
      expect(badKind.status).toBe(400);
      const badPath = await upload('name=x&version=1.0.0&model=DW100&path=../etc/passwd', Buffer.from('x'));
      expect(badPath.status).toBe(400);
      expect(badPath.body.errors[0].field).toBe('path');
      const badMeasurement = await upload(
        'name=x&version=1.0.0&model=DW100&measurement=app=zz',
        Buffer.from('x'),
      );
      expect(badMeasurement.status).toBe(400);
      expect(await count()).toBe(n);
    });

    it('an upload larger than updates.maxArtifactBytes', async () => {
      const n = await count();
      const r = await upload('name=big&version=1.0.0&model=DW100', randomBytes(100_001));
      expect(r.status).toBe(413);
      expect(r.body.detail).toMatch(/maxArtifactBytes/);
      expect(await count()).toBe(n);
    });

    it('a second release with the same path (releases are immutable)', async () => {
      const r = await upload(
        'name=sensor-fw&version=1.0.0&model=DW100&fileName=fw.bin',
        Buffer.from('other'),
      );
      expect(r.status).toBe(409);
    });

    it('a viewer may read but not publish', async () => {
      const viewer = await t.tokenFor('viewer');
      expect((await t.call('GET', '/api/v1/updates/releases', { token: viewer })).status).toBe(200);
      expect((await upload('name=v&version=1.0.0&model=DW100', Buffer.from('x'), viewer)).status).toBe(403);
      const rm = await t.tokenFor('release-manager');
      expect((await upload('name=v&version=1.0.0&model=DW100', Buffer.from('x'), rm)).status).toBe(201);
    });

    it('role changes that make no sense', async () => {
      const snapKeys = await t.call('PUT', '/api/v1/updates/roles/snapshot', {
        body: { keys: [{ keytype: 'ecdsa', scheme: 'ecdsa-sha2-nistp256', keyval: { public: 'nope' } }] },
      });
      expect(snapKeys.status).toBe(400);
      const badKey = await t.call('PUT', '/api/v1/updates/roles/acme', {
        body: {
          keys: [{ keytype: 'ecdsa', scheme: 'ecdsa-sha2-nistp256', keyval: { public: 'not a key' } }],
          paths: ['acme/*'],
        },
      });
      expect(badKey.status).toBe(400);
      const noPaths = await t.call('PUT', '/api/v1/updates/roles/acme', { body: { threshold: 1 } });
      expect(noPaths.status).toBe(400);
      const badName = await t.call('PUT', '/api/v1/updates/roles/Bad%20Name', { body: {} });
      expect(badName.status).toBe(400);
    });
  });
});
