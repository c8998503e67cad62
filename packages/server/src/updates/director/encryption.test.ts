import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RampartTarget } from '@rampart/shared/updates';
import { startTestPlatform, type TestPlatform } from '../../test-support/platform.js';
import {
  enrollUpdateDevice,
  type UpdateDevice,
  expectUpdateRefused,
} from '../../test-support/update-device.js';
// The device side is the real agent code, talking to the real platform over mutual TLS.
import { TpmTrustAnchor } from '../../../../agent/src/trust-anchor/tpm.js';
import type { AgentError } from '../../../../agent/src/errors.js';

type Device = UpdateDevice;

interface Release {
  path: string;
  sha256: string;
  length: number;
  url: string | null;
  custom: RampartTarget;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : [],
  );
}

describe(
  'encrypted releases: per-model switch, content key wrapped to each device',
  { timeout: 90_000 },
  () => {
    let t: TestPlatform;
    const dirs: string[] = [];
    const image = randomBytes(60_000);
    let rel: Release;
    let devA: Device;
    let devB: Device;
    const db = () => t.platform.updates.storage.db;

    const upload = async (query: string, body: Buffer): Promise<Release> => {
      const r = await t.call('POST', `/api/v1/updates/releases?${query}`, {
        raw: body,
        contentType: 'application/octet-stream',
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      return r.body as Release;
    };

    const enroll = (id: string): Promise<Device> => enrollUpdateDevice(t, { id, model: 'ENC', dirs });

    const slotFiles = (d: Device) =>
      ['a', 'b'].map((s) => join(d.dataDir, 'slots', s, 'fw-1.0.0.bin')).filter((f) => existsSync(f));

    async function refused(d: Device, p: Promise<unknown>, message: RegExp) {
      await expectUpdateRefused(p, message, d);
      expect(slotFiles(d)).toEqual([]);
      // No plaintext is left behind in the downloads.
      const downloads = join(d.dataDir, 'updates', 'downloads');
      if (existsSync(downloads))
        for (const f of filesUnder(downloads)) expect(readFileSync(f).equals(image)).toBe(false);
    }

    /** The director's metadata for `deviceId`, made due for re-signing (a higher version) at the next check. */
    const resignNext = (deviceId: string) =>
      db()
        .updateTable('director_metadata')
        .set({ expires: new Date(Date.now() + 1000).toISOString() })
        .where('device_id', '=', deviceId)
        .execute();

    /** A compromised director: its key wrapping replaced by `wrap` while `work` runs. */
    async function withWrapping(wrap: () => Promise<string>, work: () => Promise<void>) {
      const director = t.platform.updates.director as unknown as { wrappedContentKey: () => Promise<string> };
      const original = director.wrappedContentKey;
      director.wrappedContentKey = wrap;
      try {
        await work();
      } finally {
        director.wrappedContentKey = original;
      }
    }

    const contentKeyOf = async (r: Release) => {
      const row = await db()
        .selectFrom('update_content_keys')
        .selectAll()
        .where('sha256', '=', r.sha256)
        .executeTakeFirstOrThrow();
      return t.platform.updates.contentKeys.open(row.wrapped_key, r.sha256);
    };

    beforeAll(async () => {
      t = await startTestPlatform(
        'sqlite',
        { 'updates.development': true, 'updates.maxArtifactBytes': 200_000 },
        { captureLogs: true },
      );
      const enc = await t.call('POST', '/api/v1/device-models', {
        body: { id: 'ENC', encryptUpdates: true },
      });
      expect(enc.status).toBe(201);
      expect(enc.body.encryptUpdates).toBe(true);
      await t.call('POST', '/api/v1/device-models', { body: { id: 'PLAIN' } });
      rel = await upload('name=fw&version=1.0.0&model=ENC&releaseCounter=5&fileName=fw.bin', image);
      devA = await enroll('ENC-0001');
      devB = await enroll('ENC-0002');
    });
    afterAll(async () => {
      await t?.close();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });

    it('switches encryption per model through the API (audited)', async () => {
      const list = await t.call('GET', '/api/v1/device-models');
      const byId = Object.fromEntries(
        (list.body.items as { id: string; encryptUpdates: boolean }[]).map((m) => [m.id, m.encryptUpdates]),
      );
      expect(byId).toMatchObject({ ENC: true, PLAIN: false });
      const on = await t.call('PATCH', '/api/v1/device-models/PLAIN', { body: { encryptUpdates: true } });
      expect(on.body.encryptUpdates).toBe(true);
      const off = await t.call('PATCH', '/api/v1/device-models/PLAIN', { body: { encryptUpdates: false } });
      expect(off.body.encryptUpdates).toBe(false);
      expect((await t.call('GET', '/api/v1/device-models/PLAIN')).body.encryptUpdates).toBe(false);
      const bad = await t.call('PATCH', '/api/v1/device-models/PLAIN', { body: { encryptUpdates: 'yes' } });
      expect(bad.status).toBe(400);
      const audit = await t.call('GET', '/api/v1/audit/entries?action=model.update');
      expect(
        (audit.body.items as { target: string; details: Record<string, unknown> }[]).some(
          (e) => e.target === 'model:PLAIN' && e.details.encryptUpdates === true,
        ),
      ).toBe(true);
    });

    it('stores and serves only the ciphertext, and signs what the device needs to check the plaintext', async () => {
      expect(rel.custom.encryption).toMatchObject({
        algorithm: 'aes-256-gcm',
        length: image.length,
        sha256: sha256(image),
      });
      expect(rel.sha256).not.toBe(sha256(image));
      expect(rel.length).toBe(image.length);
      const served = Buffer.from(await (await fetch(rel.url!)).arrayBuffer());
      expect(served.length).toBe(image.length);
      expect(sha256(served)).toBe(rel.sha256);
      expect(served.equals(image)).toBe(false);
      expect(served.includes(image.subarray(0, 32))).toBe(false);
      // The artifact store holds no plaintext either.
      for (const f of filesUnder(join(t.dataDir, 'artifacts')))
        expect(readFileSync(f).includes(image.subarray(1000, 1032))).toBe(false);
      // The signed release repository metadata carries the same encryption member.
      const targets = await t.call('GET', '/api/v1/updates/metadata/targets');
      expect(targets.body.signed.targets[rel.path].custom.rampart.encryption).toEqual(rel.custom.encryption);
    });

    it('encrypts a release when asked (--encrypt) or when any of its models requires it, and not otherwise', async () => {
      const plain = await upload('name=p&version=1.0.0&model=PLAIN&fileName=p.bin', randomBytes(1000));
      expect(plain.custom.encryption).toBeUndefined();
      const asked = await upload(
        'name=p&version=1.1.0&model=PLAIN&encrypt=true&fileName=p.bin',
        randomBytes(1000),
      );
      expect(asked.custom.encryption).toBeDefined();
      const mixed = await upload(
        'name=m&version=1.0.0&model=PLAIN&model=ENC&fileName=m.bin',
        randomBytes(1000),
      );
      expect(mixed.custom.encryption).toBeDefined();
      const audit = await t.call('GET', '/api/v1/audit/entries?action=release.create');
      expect(
        (audit.body.items as { target: string; details: Record<string, unknown> }[]).find(
          (e) => e.target === `release:${asked.path}`,
        )?.details.encrypted,
      ).toBe(true);
    });

    it('installs an encrypted release: the slot holds the original file, the receipt matches the release', async () => {
      const a = await t.call('PUT', `/api/v1/devices/${devA.id}/update-assignment`, {
        body: { path: rel.path },
      });
      expect(a.status, JSON.stringify(a.body)).toBe(200);
      const r = await devA.client().check();
      expect(r).toMatchObject({
        outcome: 'installed',
        target: rel.path,
        version: '1.0.0',
        receiptSent: true,
      });
      expect(r.result?.outcome).toBe('committed');
      const slot = readFileSync(join(devA.dataDir, 'slots', r.result!.slot, 'fw-1.0.0.bin'));
      expect(slot.equals(image)).toBe(true);
      // The decrypted copy is gone from the downloads; only the verified ciphertext stays.
      const downloads = filesUnder(join(devA.dataDir, 'updates', 'downloads'));
      expect(downloads.some((f) => f.includes(sha256(image)))).toBe(false);
      for (const f of downloads) expect(readFileSync(f).equals(image)).toBe(false);
      // The receipt names the plaintext in the slot; the platform maps it to the encrypted release.
      const receipt = await db()
        .selectFrom('update_receipts')
        .selectAll()
        .where('device_id', '=', devA.id)
        .executeTakeFirstOrThrow();
      expect(receipt).toMatchObject({ outcome: 'committed', target_path: rel.path, sha256: sha256(image) });
      expect((await devA.client().check()).outcome).toBe('up-to-date');
    });

    it("wraps the key to each device's own key: another device cannot unwrap it", async () => {
      const docA = JSON.parse(await t.platform.updates.director.targetsFor(devA.id)) as {
        signed: { targets: Record<string, { custom: { director: { contentKey: string } } }> };
      };
      const jweA = docA.signed.targets[rel.path]!.custom.director.contentKey;
      expect(jweA.split('.')).toHaveLength(5);
      const header = JSON.parse(Buffer.from(jweA.split('.')[0]!, 'base64url').toString()) as Record<
        string,
        unknown
      >;
      expect(header).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' });
      expect(Buffer.from(await devA.anchor.unwrapKey(jweA)).equals(await contentKeyOf(rel))).toBe(true);
      await expect(devB.anchor.unwrapKey(jweA)).rejects.toThrow();
    });

    it("refuses a content key wrapped to another device's key (a compromised director), installing nothing", async () => {
      await t.call('PUT', `/api/v1/devices/${devB.id}/update-assignment`, { body: { path: rel.path } });
      const docA = JSON.parse(await t.platform.updates.director.targetsFor(devA.id)) as {
        signed: { targets: Record<string, { custom: { director: { contentKey: string } } }> };
      };
      const jweA = docA.signed.targets[rel.path]!.custom.director.contentKey;
      await withWrapping(
        async () => jweA,
        () => refused(devB, devB.client().check(), /does not open with this device's key/),
      );
    });

    it('refuses a key for another content key (the ciphertext does not authenticate), installing nothing', async () => {
      const { wrapForDevice } = await import('../artifacts/encryption.js');
      const pub = (await devB.anchor.publicKey())!;
      await resignNext(devB.id);
      await withWrapping(
        () => wrapForDevice(randomBytes(32), pub, { deviceId: devB.id, sha256: rel.sha256 }),
        () => refused(devB, devB.client().check(), /does not decrypt with its content key/),
      );
      // With the director honest again, the same device installs it.
      await resignNext(devB.id);
      const r = await devB.client().check();
      expect(r.outcome).toBe('installed');
      expect(readFileSync(join(devB.dataDir, 'slots', r.result!.slot, 'fw-1.0.0.bin')).equals(image)).toBe(
        true,
      );
    });

    it('refuses an encrypted release on a trust anchor that cannot unwrap keys, before downloading', async () => {
      const d = await enroll('ENC-0003');
      await t.call('PUT', `/api/v1/devices/${d.id}/update-assignment`, { body: { path: rel.path } });
      // An anchor without unwrapKey (the TPM and PKCS#11 anchors have one since content keys can be
      // unwrapped in hardware; tpm.test.ts and pkcs11.test.ts open real JWEs with them).
      const signOnly = { kind: 'pkcs11' as const };
      await refused(
        d,
        d.client({ anchor: signOnly }).check(),
        /the pkcs11 trust anchor cannot unwrap content keys/,
      );
      expect(existsSync(join(d.dataDir, 'updates', 'downloads', `${rel.sha256}.fw-1.0.0.bin`))).toBe(false);
    });

    it('refuses, installing nothing, when the TPM cannot unwrap (no key in it): said as such, not as another device', async () => {
      const d = await enroll('ENC-0103');
      await t.call('PUT', `/api/v1/devices/${d.id}/update-assignment`, { body: { path: rel.path } });
      const tpm = new TpmTrustAnchor({ dir: join(d.dataDir, 'tpm'), tcti: 'device:/dev/null' });
      await refused(
        d,
        d.client({ anchor: tpm }).check(),
        /cannot be unwrapped on this device: the device has no identity key in the TPM yet/,
      );
    });

    it('refuses to assign an encrypted release to a device whose key cannot do ECDH (RSA)', async () => {
      expect(
        (await t.call('POST', '/api/v1/devices', { body: { id: 'RSA-0001', model: 'ENC' } })).status,
      ).toBe(201);
      const work = mkdtempSync(join(tmpdir(), 'rampart-rsa-'));
      dirs.push(work);
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const keyFile = join(work, 'k.pem');
      (await import('node:fs')).writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
      const pem = execFileSync(
        'openssl',
        ['req', '-x509', '-key', keyFile, '-subj', '/CN=RSA-0001', '-days', '2'],
        {
          encoding: 'utf8',
        },
      );
      const existing = await db()
        .selectFrom('certificates')
        .selectAll()
        .where('device_id', '=', devA.id)
        .executeTakeFirstOrThrow();
      await db()
        .insertInto('certificates')
        .values({
          ...existing,
          serial: 'aa01',
          device_id: 'RSA-0001',
          key_algorithm: 'rsa-2048',
          certificate: pem,
        })
        .execute();
      const a = await t.call('PUT', '/api/v1/devices/RSA-0001/update-assignment', {
        body: { path: rel.path },
      });
      expect(a.status).toBe(400);
      expect(a.body.detail).toMatch(
        /is encrypted and device RSA-0001 cannot receive its key: .*rsa key.*EC P-256/,
      );
      // Assigned anyway (a deployment, the database): the director says so in a problem, logged.
      await db()
        .insertInto('update_assignments')
        .values({
          device_id: 'RSA-0001',
          target_path: rel.path,
          deployment_id: null,
          assigned_at: '',
          assigned_by: 'x',
        })
        .execute();
      await expect(t.platform.updates.director.targetsFor('RSA-0001')).rejects.toThrow(
        /is encrypted and device RSA-0001 cannot receive its key/,
      );
      expect(t.logs.some((l) => l.includes('"director.encryption-refused"'))).toBe(true);
    });

    describe('a hostile updates listener', () => {
      let proxy: Server;
      let realUrl: string;
      let mode: 'tag' | 'flip' = 'tag';

      beforeAll(async () => {
        realUrl = t.platform.updates.url!;
        proxy = createServer((req, res) => {
          void (async () => {
            const real = await fetch(realUrl + req.url, {
              headers: req.headers.range ? { range: req.headers.range } : {},
            });
            let body = Buffer.from(await real.arrayBuffer());
            if (mode === 'tag' && /\.targets\.json$/.test(req.url!)) {
              // Another (well-formed) GCM tag in the release's metadata.
              const tag = rel.custom.encryption!.tag;
              body = Buffer.from(body.toString('utf8').replace(tag, randomBytes(16).toString('base64url')));
            }
            if (mode === 'flip' && req.url!.startsWith('/targets/') && body.length > 100)
              body[100] = body[100]! ^ 1;
            res.writeHead(real.status, {
              'content-type': real.headers.get('content-type') ?? 'application/octet-stream',
              'content-length': String(body.length),
              ...(real.headers.get('content-range')
                ? { 'content-range': real.headers.get('content-range')! }
                : {}),
            });
            res.end(body);
          })();
        });
        await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
        t.platform.updates.url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
      });
      afterAll(async () => {
        t.platform.updates.url = realUrl;
        proxy.closeAllConnections();
        await new Promise((resolve) => proxy.close(resolve));
      });

      it('refuses another GCM tag in the metadata: it is signed with the release (needs the release key)', async () => {
        const d = await enroll('ENC-0004');
        await t.call('PUT', `/api/v1/devices/${d.id}/update-assignment`, { body: { path: rel.path } });
        mode = 'tag';
        await refused(d, d.client().check(), /release repository's metadata does not verify/);
      });

      it('refuses tampered ciphertext (caught by the chunk and TUF hashes before any decryption)', async () => {
        const d = await enroll('ENC-0005');
        await t.call('PUT', `/api/v1/devices/${d.id}/update-assignment`, { body: { path: rel.path } });
        mode = 'flip';
        const err = await d
          .client()
          .check()
          .then(
            () => null,
            (e: unknown) => e,
          );
        expect((err as AgentError).code).toMatch(/^DOWNLOAD_/);
        expect(slotFiles(d)).toEqual([]);
        expect(d.logs.some((l) => l.includes('"update.download-failed"'))).toBe(true);
      });
    });

    it("refuses a sealed content key moved to another artifact's row (an altered database), logged and audited", async () => {
      const rows = await db().selectFrom('update_content_keys').selectAll().execute();
      const mine = rows.find((r) => r.sha256 === rel.sha256)!;
      const other = rows.find((r) => r.sha256 !== rel.sha256)!;
      await db()
        .updateTable('update_content_keys')
        .set({ wrapped_key: other.wrapped_key })
        .where('sha256', '=', rel.sha256)
        .execute();
      try {
        await resignNext(devA.id);
        await expect(t.platform.updates.director.targetsFor(devA.id)).rejects.toThrow(
          /belongs to another artifact/,
        );
        expect(t.logs.some((l) => l.includes('"director.content-key-refused"'))).toBe(true);
        const audit = await t.call('GET', '/api/v1/audit/entries?action=director.content-key');
        expect(
          (audit.body.items as { target: string; outcome: string }[]).some(
            (e) => e.target === `release:${rel.path}` && e.outcome === 'failure',
          ),
        ).toBe(true);
      } finally {
        await db()
          .updateTable('update_content_keys')
          .set({ wrapped_key: mine.wrapped_key })
          .where('sha256', '=', rel.sha256)
          .execute();
      }
    });

    it('never holds a content key in clear: not in the database file, the data directory or the logs', async () => {
      const keys = await Promise.all(
        (await db().selectFrom('update_content_keys').selectAll().execute()).map((row) =>
          t.platform.updates.contentKeys.open(row.wrapped_key, row.sha256),
        ),
      );
      expect(keys.length).toBe(3);
      const forms = keys.flatMap((k) => [
        k,
        Buffer.from(k.toString('hex')),
        Buffer.from(k.toString('base64')),
        Buffer.from(k.toString('base64url')),
      ]);
      const dbFile = t.platform.config.database.url!.replace(/^sqlite:/, '');
      const files = [dbFile, `${dbFile}-wal`, ...filesUnder(t.dataDir)].filter(
        (f) => existsSync(f) && statSync(f).isFile(),
      );
      expect(files.length).toBeGreaterThan(3);
      for (const f of files) {
        const bytes = readFileSync(f);
        for (const form of forms) expect(bytes.includes(form), `${f} holds a content key`).toBe(false);
      }
      // Row by row, too (a value the file might hold compressed or split).
      const rows = JSON.stringify([
        await db().selectFrom('update_content_keys').selectAll().execute(),
        await db().selectFrom('update_releases').selectAll().execute(),
        await db().selectFrom('director_metadata').selectAll().execute(),
        await db().selectFrom('audit_entries').selectAll().execute(),
      ]);
      const logs = t.logs.join('\n') + devA.logs.join('\n') + devB.logs.join('\n');
      expect(logs.length).toBeGreaterThan(0);
      for (const k of keys)
        for (const form of [k.toString('hex'), k.toString('base64'), k.toString('base64url')]) {
          expect(rows.includes(form)).toBe(false);
          expect(logs.includes(form)).toBe(false);
        }
    });
  },
);
