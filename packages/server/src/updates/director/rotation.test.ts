import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, MetadataKind, Signature, Targets } from '@tufjs/models';
import { signedBytes, tufKeyId, tufKeyOf } from '@rampart/shared/updates';
import { startTestPlatform, type TestPlatform } from '../../test-support/platform.js';
import {
  enrollUpdateDevice,
  expectUpdateRefused,
  publishRelease,
  type UpdateDevice,
} from '../../test-support/update-device.js';
import { DIRECTOR_KEY_LABELS, Director } from './director.js';
// The device side is the real agent code, talking to the real platform over mutual TLS.
import { mutualTlsIdentity } from '../../../../agent/src/identity/current.js';

type TufJSON = Parameters<typeof Metadata.fromJSON>[1];

describe('director root rotation: devices walk from the root they pinned', { timeout: 60_000 }, () => {
  let t: TestPlatform;
  let estUrl: string;
  const dirs: string[] = [];
  let rel1: { path: string; sha256: string };
  let rel2: { path: string; sha256: string };
  /** Pins root v1, installs, rotates with the platform. */
  let a: UpdateDevice;
  /** Pins root v1 and does not check again until the forged root is served. */
  let b: UpdateDevice;
  /** A's director targets document signed with the retired (version 1) targets key. */
  let retired: string;
  let v1RootKeyId: string;

  const db = () => t.platform.updates.storage.db;
  const upload = (query: string, body: Buffer) => publishRelease(t, query, body);
  const pinned = (d: UpdateDevice) =>
    JSON.parse(readFileSync(join(d.dataDir, 'updates', 'director', 'root.json'), 'utf8')) as {
      signed: { version: number; roles: { targets: { keyids: string[] } } };
      signatures: { keyid: string }[];
    };
  /** GET a director path over mutual TLS with the device's certificate. */
  const get = async (d: UpdateDevice, path: string) => {
    const id = await mutualTlsIdentity(d.store, d.anchor, Date.now(), 'test');
    const url = new URL(path, estUrl);
    return new Promise<{ status: number; body: string; type: string }>((resolve, reject) => {
      const req = httpRequest({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        headers: { host: url.host },
        createConnection: () =>
          id.tls.connect({
            host: url.hostname,
            port: Number(url.port),
            certPem: d.store.clientCertificatePem(),
            caPem: id.rootPem,
          }),
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
            type: String(res.headers['content-type']),
          }),
        );
      });
      req.on('error', reject);
      req.end();
    });
  };

  beforeAll(async () => {
    t = await startTestPlatform('sqlite', {
      'updates.development': true,
      'updates.maxArtifactBytes': 100_000,
    });
    estUrl = t.platform.listeners.find((l) => l.name === 'est')!.url;
    await t.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } });
    const fw = randomBytes(20_000);
    rel1 = await upload('name=fw&version=1.0.0&model=DW100&releaseCounter=1&fileName=fw.bin', fw);
    rel2 = await upload(
      'name=fw&version=2.0.0&model=DW100&releaseCounter=2&fileName=fw.bin',
      Buffer.concat([fw, Buffer.from('version 2')]),
    );
    a = await enrollUpdateDevice(t, { id: 'ROT-0001', model: 'DW100', dirs });
    b = await enrollUpdateDevice(t, { id: 'ROT-0002', model: 'DW100', dirs });
  });
  afterAll(async () => {
    await t?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('refuses a rotation request that names no role, an unknown role, or comes without release:write', async () => {
    for (const body of [{ roles: [] }, { roles: ['snapshot'] }, {}, { roles: ['root', 'root'] }]) {
      const r = await t.call('POST', '/api/v1/updates/director/rotate', { body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(String(r.headers['content-type'])).toMatch(/application\/problem\+json/);
    }
    const viewer = await t.tokenFor('viewer');
    const denied = await t.call('POST', '/api/v1/updates/director/rotate', {
      token: viewer,
      body: { roles: ['root'] },
    });
    expect(denied.status).toBe(403);
    const spec = await t.call('GET', '/openapi.json', { token: null });
    expect(spec.body.paths['/api/v1/updates/director/rotate']?.post).toBeDefined();
  });

  it('a device that pinned root v1 keeps updating after rotating root and targets: it walks to v2', async () => {
    expect(
      (await t.call('PUT', `/api/v1/devices/${a.id}/update-assignment`, { body: { path: rel1.path } }))
        .status,
    ).toBe(200);
    expect(await a.client().check()).toMatchObject({ outcome: 'installed', target: rel1.path });
    expect((await b.client().check()).outcome).toBe('nothing-assigned');
    expect(pinned(a).signed.version).toBe(1);
    expect(pinned(b).signed.version).toBe(1);
    v1RootKeyId = pinned(a).signatures[0]!.keyid;
    const v1TargetsKeyIds = pinned(a).signed.roles.targets.keyids;
    retired = (
      await db()
        .selectFrom('director_metadata')
        .select('document')
        .where('device_id', '=', a.id)
        .executeTakeFirstOrThrow()
    ).document;
    // Nothing past the newest version.
    expect((await get(a, '/director/v1/2.root.json')).status).toBe(404);

    const r = await t.call('POST', '/api/v1/updates/director/rotate', {
      body: { roles: ['root', 'targets'] },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ version: 2, rotated: ['root', 'targets'] });
    // Signed by the old root key and the new one.
    expect(r.body.signedBy).toHaveLength(2);
    expect(r.body.signedBy).toContain(v1RootKeyId);
    expect(r.body.rootKeyIds).not.toContain(v1RootKeyId);
    expect(r.body.targetsKeyIds).not.toEqual(v1TargetsKeyIds);
    const audit = await t.call('GET', '/api/v1/audit/entries?action=director.rotate');
    const entries = audit.body.items as { outcome: string; target: string; details: { version?: number } }[];
    // The refused requests above are audited as failures; the rotation once, as a success.
    expect(entries.filter((e) => e.outcome === 'success')).toEqual([
      expect.objectContaining({ target: 'director:root', details: expect.objectContaining({ version: 2 }) }),
    ]);
    expect(entries.filter((e) => e.outcome === 'failure').length).toBeGreaterThan(0);
    expect(await t.platform.keys.get('director-root-2')).not.toBeNull();
    expect(await t.platform.keys.get('director-targets-2')).not.toBeNull();

    // Every version is served; root.json is the newest; 404 past it.
    const v1 = await get(a, '/director/v1/1.root.json');
    const v2 = await get(a, '/director/v1/2.root.json');
    expect([v1.status, v2.status]).toEqual([200, 200]);
    expect(Director.parseRoot(v1.body).signed.version).toBe(1);
    expect(Director.parseRoot(v2.body).signed.version).toBe(2);
    expect((await get(a, '/director/v1/root.json')).body).toBe(v2.body);
    const past = await get(a, '/director/v1/3.root.json');
    expect(past.status).toBe(404);
    expect(past.type).toMatch(/application\/problem\+json/);
    expect((await get(a, '/director/v1/0.root.json')).status).toBe(404);

    expect(
      (await t.call('PUT', `/api/v1/devices/${a.id}/update-assignment`, { body: { path: rel2.path } }))
        .status,
    ).toBe(200);
    const check = await a.client().check();
    expect(check).toMatchObject({ outcome: 'installed', target: rel2.path, receiptSent: true });
    expect(pinned(a).signed.version).toBe(2);
    expect(pinned(a).signed.roles.targets.keyids).toEqual(r.body.targetsKeyIds);
    expect(a.logs.some((l) => l.includes('"update.director-root"'))).toBe(true);
    // The device's document was re-signed with the new targets key.
    const doc = (
      await db()
        .selectFrom('director_metadata')
        .select('document')
        .where('device_id', '=', a.id)
        .executeTakeFirstOrThrow()
    ).document;
    expect((JSON.parse(doc) as { signatures: { keyid: string }[] }).signatures[0]!.keyid).toBe(
      r.body.targetsKeyIds[0],
    );
    expect((await a.client().check()).outcome).toBe('up-to-date');
  });

  it('refuses director targets signed with the retired targets key (replayed, or forged with the old key)', async () => {
    const row = await db()
      .selectFrom('director_metadata')
      .selectAll()
      .where('device_id', '=', a.id)
      .executeTakeFirstOrThrow();
    // The director's database serves the document captured before the rotation as if current.
    await db()
      .updateTable('director_metadata')
      .set({ document: retired })
      .where('device_id', '=', a.id)
      .execute();
    await expectUpdateRefused(a.client().check(), /does not verify with the pinned director root/, a);
    // The retired key (stolen, say) signs a fresh document with a higher version: refused as well.
    const oldKey = (await t.platform.keys.get(DIRECTOR_KEY_LABELS.targets))!;
    const forged = Metadata.fromJSON(MetadataKind.Targets, JSON.parse(row.document) as TufJSON);
    const next = new Targets({ ...forged.signed, version: Number(row.version) + 100 });
    const md = new Metadata(next);
    const id = tufKeyId(tufKeyOf(oldKey.publicKey));
    md.signatures[id] = new Signature({
      keyID: id,
      sig: (await oldKey.sign(signedBytes(next.toJSON()))).toString('hex'),
    });
    await db()
      .updateTable('director_metadata')
      .set({ document: JSON.stringify(md.toJSON()) })
      .where('device_id', '=', a.id)
      .execute();
    await expectUpdateRefused(a.client().check(), /does not verify with the pinned director root/, a);
    await db()
      .updateTable('director_metadata')
      .set({ document: row.document })
      .where('device_id', '=', a.id)
      .execute();
    expect((await a.client().check()).outcome).toBe('up-to-date');
  });

  it('refuses a forged v2 root signed only by the new key, and keeps v1 pinned', async () => {
    const real = (await db()
      .selectFrom('director_roots')
      .select('document')
      .where('version', '=', 2)
      .executeTakeFirstOrThrow())!.document;
    const doc = JSON.parse(real) as { signatures: { keyid: string }[] };
    doc.signatures = doc.signatures.filter((s) => s.keyid !== v1RootKeyId);
    expect(doc.signatures).toHaveLength(1);
    await db()
      .updateTable('director_roots')
      .set({ document: JSON.stringify(doc) })
      .where('version', '=', 2)
      .execute();
    try {
      await expectUpdateRefused(
        b.client().check(),
        /director root version 2 does not verify .*version 1 stays pinned/,
        b,
      );
      expect(pinned(b).signed.version).toBe(1);
    } finally {
      await db().updateTable('director_roots').set({ document: real }).where('version', '=', 2).execute();
    }
    // The genuine v2 is accepted.
    expect((await b.client().check()).outcome).toBe('nothing-assigned');
    expect(pinned(b).signed.version).toBe(2);
  });

  it('rotates the targets key alone: the root key signs v3, and devices follow', async () => {
    const r = await t.call('POST', '/api/v1/updates/director/rotate', { body: { roles: ['targets'] } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ version: 3, rotated: ['targets'] });
    expect(r.body.signedBy).toEqual(r.body.rootKeyIds);
    const v2 = Director.parseRoot((await get(a, '/director/v1/2.root.json')).body);
    expect(r.body.rootKeyIds).toEqual(v2.signed.roles.root!.keyIDs);
    expect((await a.client().check()).outcome).toBe('up-to-date');
    expect(pinned(a).signed.version).toBe(3);
  });
});
