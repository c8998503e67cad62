import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Updater } from 'tuf-js';
import { signDetached, tufKeyId, tufKeyOf, type TufKey } from '@rampart/shared/updates';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';

const ecKey = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;

/**
 * A production repository from the start: root and targets keys are offline (their private halves
 * never reach the server), root v1 and targets v1 collect detached signatures like any other change.
 */
describe('offline initialisation of a production release repository', { timeout: 60_000 }, () => {
  let t: TestPlatform;
  let updatesUrl: string;
  const dirs: string[] = [];
  const firmware = randomBytes(30_000);
  // Two root key holders (2 of 2) and one targets key holder, each on an offline machine.
  const r1 = ecKey();
  const r2 = ecKey();
  const t1 = generateKeyPairSync('ed25519').privateKey;
  const pub = (k: KeyObject): TufKey => tufKeyOf(k);
  const body = {
    root: { keys: [pub(r1), pub(r2)], threshold: 2 },
    targets: { keys: [pub(t1)], threshold: 1 },
  };
  let rootRequest: number;
  let targetsRequest: number;

  const init = (b: unknown, token?: string) =>
    t.call('POST', '/api/v1/updates/repository/init', { body: b, ...(token ? { token } : {}) });
  /** What an offline key holder does with a request: sign its document (rampart release sign). */
  const signRequest = async (id: number, key: KeyObject) => {
    const view = await t.call('GET', `/api/v1/updates/signing-requests/${id}`);
    const doc = await t.call('GET', `/api/v1/updates/signing-requests/${id}/metadata`);
    return t.call('POST', `/api/v1/updates/signing-requests/${id}/signatures`, {
      body: signDetached(doc.body, view.body.role, key),
    });
  };
  const rows = async (table: 'tuf_metadata' | 'tuf_signing_requests' | 'tuf_keys') =>
    Number(
      (
        await t.platform.storage.db
          .selectFrom(table)
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );
  const served = async (file: string) => (await fetch(`${updatesUrl}/metadata/${file}`)).status;
  const device = (root: string) => {
    const d = mkdtempSync(join(tmpdir(), 'rampart-tuf-offline-'));
    dirs.push(d);
    writeFileSync(join(d, 'root.json'), root);
    return {
      dir: d,
      updater: new Updater({
        metadataDir: d,
        metadataBaseUrl: `${updatesUrl}/metadata`,
        targetDir: d,
        targetBaseUrl: `${updatesUrl}/targets`,
        config: { fetchRetries: 0 },
      }),
    };
  };

  beforeAll(async () => {
    t = await startTestPlatform('sqlite', {
      'updates.development': false,
      'updates.maxArtifactBytes': 100_000,
    });
    updatesUrl = t.platform.listeners.find((l) => l.name === 'updates')!.url;
  });
  afterAll(async () => {
    await t?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('starts without a root: nothing served, releases refused', async () => {
    const repo = await t.call('GET', '/api/v1/updates/repository');
    expect(repo.body).toMatchObject({ development: false, initialized: false, roles: [] });
    expect(await served('timestamp.json')).toBe(404);
    const r = await t.call('POST', '/api/v1/updates/releases?name=fw&version=1.0.0&model=DW100', {
      raw: firmware,
      contentType: 'application/octet-stream',
    });
    expect(r.status).toBe(409);
  });

  it('refuses bad input and callers without release:write, with nothing written', async () => {
    const expectField = (r: { status: number; body: { errors: { field: string }[] } }, field: RegExp) => {
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      const fields = r.body.errors.map((e) => e.field);
      expect(
        fields.some((f) => field.test(f)),
        JSON.stringify(r.body),
      ).toBe(true);
    };
    // A threshold above the number of keys.
    expectField(await init({ ...body, root: { keys: [pub(r1)], threshold: 2 } }), /root\.threshold/);
    expectField(await init({ ...body, targets: { keys: [pub(t1)], threshold: 3 } }), /targets\.threshold/);
    // A malformed key, a key that is not what it says, a key listed twice.
    const broken = {
      ...pub(r1),
      keyval: { public: '-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n' },
    };
    expectField(await init({ ...body, root: { keys: [pub(r2), broken], threshold: 1 } }), /root\.keys/);
    const lying = { ...pub(t1), keytype: 'ecdsa', scheme: 'ecdsa-sha2-nistp256' };
    expectField(await init({ ...body, targets: { keys: [lying], threshold: 1 } }), /targets\.keys/);
    expectField(await init({ ...body, root: { keys: [pub(r1), pub(r1)], threshold: 1 } }), /root\.keys/);
    // Missing fields (the schema answers).
    expectField(await init({ root: body.root }), /^targets/);
    expectField(await init({ ...body, root: { keys: body.root.keys } }), /^root\.threshold/);
    expectField(await init({ ...body, targets: { keys: [], threshold: 1 } }), /^targets\.keys/);
    // A token that may read the repository but not change it.
    const operator = await t.tokenFor('operator');
    const denied = await init(body, operator);
    expect(denied.status).toBe(403);
    expect(denied.body.detail).toMatch(/release:write/);

    expect(await rows('tuf_metadata')).toBe(0);
    expect(await rows('tuf_signing_requests')).toBe(0);
    expect(await rows('tuf_keys')).toBe(0);
    expect((await t.platform.keys.list()).map((k) => k.label).filter((l) => l.startsWith('tuf-'))).toEqual(
      [],
    );
    const failures = await t.call(
      'GET',
      '/api/v1/audit/entries?action=release.repository.init&outcome=failure',
    );
    expect(failures.body.items.length).toBeGreaterThanOrEqual(8);
  });

  it('makes root v1 and targets v1 signing requests; online keys in the key store, offline ones only public', async () => {
    const r = await init(body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.root).toMatchObject({ role: 'root', version: 1, published: false });
    expect(r.body.targets).toMatchObject({ role: 'targets', version: 1, published: false });
    rootRequest = r.body.root.signingRequest.id;
    targetsRequest = r.body.targets.signingRequest.id;
    expect(r.body.root.signingRequest.missing).toEqual([
      { role: 'root v1', keyIds: [tufKeyId(pub(r1)), tufKeyId(pub(r2))], needed: 2 },
    ]);
    expect(r.body.targets.signingRequest.missing).toEqual([
      { role: 'targets', keyIds: [tufKeyId(pub(t1))], needed: 1 },
    ]);
    // The server holds the snapshot and timestamp keys, and neither root nor targets key.
    const labels = (await t.platform.keys.list()).map((k) => k.label);
    expect(labels).toEqual(expect.arrayContaining(['tuf-snapshot-1', 'tuf-timestamp-1']));
    expect(labels.filter((l) => l.startsWith('tuf-dev'))).toEqual([]);
    const keys = await t.platform.storage.db.selectFrom('tuf_keys').selectAll().execute();
    const offline = keys.filter((k) => k.origin === 'offline');
    expect(offline.map((k) => k.key_id).sort()).toEqual(
      [pub(r1), pub(r2), pub(t1)].map((k) => tufKeyId(k)).sort(),
    );
    expect(offline.every((k) => k.keystore_label === null)).toBe(true);
    const doc = await t.call('GET', `/api/v1/updates/signing-requests/${rootRequest}/metadata`);
    expect(doc.body.signed.roles.snapshot.keyids).toHaveLength(1);
    expect(doc.body.signatures).toEqual([]);

    const audit = await t.call('GET', '/api/v1/audit/entries?action=release.repository.init&outcome=success');
    expect(audit.body.items).toHaveLength(1);
    expect(audit.body.items[0]).toMatchObject({
      target: 'tuf:root',
      details: { rootKeys: 2, rootThreshold: 2, targetsKeys: 1, targetsThreshold: 1 },
    });

    // Not served, and nothing else may change meanwhile.
    expect(await served('timestamp.json')).toBe(404);
    expect((await init(body)).status).toBe(409);
    expect(
      (await t.call('PUT', '/api/v1/updates/roles/timestamp', { body: { onlineKey: true } })).status,
    ).toBe(409);
    const list = await t.call('GET', '/api/v1/updates/signing-requests?state=pending');
    expect(list.body.items.map((x: { role: string }) => x.role).sort()).toEqual(['root', 'targets']);
  });

  it('one root signature is not enough; the targets key may not sign root', async () => {
    const wrong = await signRequest(rootRequest, t1);
    expect(wrong.status).toBe(400);
    const first = await signRequest(rootRequest, r1);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toMatchObject({ state: 'pending', missing: [{ role: 'root v1', needed: 1 }] });
    // Targets v1 signed now is kept, but there is no repository to serve until root is.
    const targets = await signRequest(targetsRequest, t1);
    expect(targets.status, JSON.stringify(targets.body)).toBe(200);
    expect(targets.body.state).toBe('published');
    expect(await served('timestamp.json')).toBe(404);
    expect(await served('1.root.json')).toBe(404);
    expect((await t.call('GET', '/api/v1/updates/repository')).body.initialized).toBe(false);
  });

  it('publishes with the second root signature; an unmodified tuf-js client refreshes from root v1', async () => {
    const second = await signRequest(rootRequest, r2);
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    expect(second.body.state).toBe('published');
    const repo = await t.call('GET', '/api/v1/updates/repository');
    expect(repo.body).toMatchObject({ development: false, warning: null, initialized: true });
    const role = (n: string) => repo.body.roles.find((x: { name: string }) => x.name === n);
    expect(role('root')).toMatchObject({ version: 1, threshold: 2, onlineKeyIds: [] });
    expect(role('targets')).toMatchObject({ version: 1, threshold: 1, onlineKeyIds: [] });
    expect(role('snapshot').version).toBe(1);
    expect(role('timestamp').version).toBe(1);

    const rootV1 = await (await fetch(`${updatesUrl}/metadata/1.root.json`)).text();
    expect(JSON.parse(rootV1).signatures).toHaveLength(2);
    const { updater } = device(rootV1);
    await updater.refresh();
    // Set up once: a second initialisation is refused.
    const again = await init(body);
    expect(again.status).toBe(409);
    expect(again.body.detail).toMatch(/initialised already/);
  });

  it('a release waits for the offline targets signature; once signed tuf-js downloads it', async () => {
    const r = await t.call(
      'POST',
      '/api/v1/updates/releases?name=fw&version=1.0.0&model=DW100&fileName=fw.bin',
      {
        raw: firmware,
        contentType: 'application/octet-stream',
      },
    );
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({
      path: 'DW100/fw-1.0.0.bin',
      role: 'targets',
      state: 'pending',
      url: null,
    });
    const rootV1 = await (await fetch(`${updatesUrl}/metadata/1.root.json`)).text();
    const before = device(rootV1).updater;
    await before.refresh();
    expect(await before.getTargetInfo('DW100/fw-1.0.0.bin').catch(() => undefined)).toBeUndefined();

    const signed = await signRequest(r.body.signingRequest, t1);
    expect(signed.status, JSON.stringify(signed.body)).toBe(200);
    expect(signed.body.state).toBe('published');
    const { updater, dir } = device(rootV1);
    await updater.refresh();
    const info = await updater.getTargetInfo('DW100/fw-1.0.0.bin');
    expect(info?.length).toBe(firmware.length);
    const path = await updater.downloadTarget(info!, join(dir, 'fw.bin'));
    expect(readFileSync(path).equals(firmware)).toBe(true);
  });

  it('a development platform initialises itself and refuses offline initialisation', async () => {
    const dev = await startTestPlatform('sqlite', { 'updates.development': true });
    try {
      const r = await dev.call('POST', '/api/v1/updates/repository/init', { body });
      expect(r.status).toBe(409);
      expect(r.body.detail).toMatch(/development/);
    } finally {
      await dev.close();
    }
  });
});

describe('cancelling an offline initialisation', { timeout: 60_000 }, () => {
  let t: TestPlatform;
  beforeAll(async () => {
    t = await startTestPlatform('sqlite', { 'updates.development': false });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('cancels root v1 and targets v1 together, after which it can start again', async () => {
    const body = {
      root: { keys: [tufKeyOf(ecKey())], threshold: 1 },
      targets: { keys: [tufKeyOf(ecKey())], threshold: 1 },
    };
    const first = await t.call('POST', '/api/v1/updates/repository/init', { body });
    expect(first.status).toBe(201);
    const cancel = await t.call(
      'POST',
      `/api/v1/updates/signing-requests/${first.body.targets.signingRequest.id}/cancel`,
    );
    expect(cancel.status, JSON.stringify(cancel.body)).toBe(200);
    const list = await t.call('GET', '/api/v1/updates/signing-requests');
    expect(list.status).toBe(200);
    expect(list.body.items.map((x: { state: string }) => x.state)).toEqual(['cancelled', 'cancelled']);
    const second = await t.call('POST', '/api/v1/updates/repository/init', { body });
    expect(second.status, JSON.stringify(second.body)).toBe(201);
  });
});
