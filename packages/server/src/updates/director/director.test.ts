import { generateKeyPairSync, randomBytes, sign, X509Certificate } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { Agent, createServer, request as httpRequest, type ClientRequestArgs, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { signDocument } from '@rampart/shared/provisioning';
import { verifyReceipt, type SignedUpdateReceipt } from '@rampart/shared/updates';
import { startTestPlatform, type TestPlatform } from '../../test-support/platform.js';
import {
  enrollUpdateDevice,
  expectUpdateRefused,
  publishRelease,
  type UpdateDevice,
} from '../../test-support/update-device.js';
import { CONNECTION_AUTH_REUSE_MS } from './director.js';
// The device side is the real agent code, talking to the real platform over mutual TLS.
import { mutualTlsIdentity } from '../../../../agent/src/identity/current.js';
import { AgentError } from '../../../../agent/src/errors.js';

type Device = UpdateDevice;

describe('director and the agent update loop (Uptane style)', { timeout: 60_000 }, () => {
  let t: TestPlatform;
  let estUrl: string;
  const dirs: string[] = [];
  const v1 = randomBytes(30_000);
  const v2 = randomBytes(20_000);
  const v0 = randomBytes(10_000);

  const upload = (query: string, body: Buffer) => publishRelease(t, query, body);
  const db = () => t.platform.updates.storage.db;

  const enroll = (id: string, options: { selfTest?: string } = {}): Promise<Device> =>
    enrollUpdateDevice(t, { id, model: 'DW100', dirs, ...options });

  let dev: Device;
  let rel1: { path: string; sha256: string };
  let rel0: { path: string; sha256: string };

  beforeAll(async () => {
    t = await startTestPlatform('sqlite', {
      'updates.development': true,
      'updates.maxArtifactBytes': 100_000,
    });
    estUrl = t.platform.listeners.find((l) => l.name === 'est')!.url;
    await t.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } });
    await t.call('POST', '/api/v1/device-models', { body: { id: 'OTHER' } });
    rel0 = await upload('name=fw&version=0.9.0&model=DW100&releaseCounter=3&fileName=fw.bin', v0);
    rel1 = await upload('name=fw&version=1.0.0&model=DW100&releaseCounter=5&fileName=fw.bin', v1);
    dev = await enroll('DIR-0001');
  });
  afterAll(async () => {
    await t?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('with nothing assigned, the device installs nothing', async () => {
    const r = await dev.client().check();
    expect(r.outcome).toBe('nothing-assigned');
  });

  it('installs the assigned release, commits, and the platform stores a receipt that verifies', async () => {
    const a = await t.call('PUT', `/api/v1/devices/${dev.id}/update-assignment`, {
      body: { path: rel1.path },
    });
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    let handshakes = 0;
    const r = await dev.client({ onConnect: () => handshakes++ }).check();
    expect(r).toMatchObject({ outcome: 'installed', target: rel1.path, version: '1.0.0', receiptSent: true });
    // The repository, the director root, the device's targets and the receipt share one mutual-TLS connection.
    expect(handshakes).toBe(1);
    expect(r.timings!.metadataMs).toBeGreaterThan(0);
    expect(r.timings!.totalMs).toBeGreaterThanOrEqual(r.timings!.metadataMs);
    expect(r.result?.outcome).toBe('committed');
    const rows = await db()
      .selectFrom('update_receipts')
      .selectAll()
      .where('device_id', '=', dev.id)
      .execute();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ outcome: 'committed', target_path: rel1.path, sha256: rel1.sha256 });
    const receipt = verifyReceipt(JSON.parse(rows[0]!.document), (await dev.anchor.publicKey())!);
    expect(receipt.release.version).toBe('1.0.0');
    // The next check finds it running.
    expect((await dev.client().check()).outcome).toBe('up-to-date');
  });

  it('refuses a receipt that does not verify with the device key', async () => {
    const file = JSON.parse(
      (await db().selectFrom('update_receipts').select('document').executeTakeFirstOrThrow()).document,
    ) as Record<string, unknown>;
    file.detail = 'changed after signing';
    file.id = randomBytes(16).toString('hex');
    const tmp = join(dev.dataDir, 'forged-receipt.json');
    (await import('node:fs')).writeFileSync(tmp, JSON.stringify(file));
    expect(await dev.client().sendReceipt(tmp)).toBe('refused');
    const n = await db()
      .selectFrom('update_receipts')
      .select('id')
      .where('id', '=', file.id as string)
      .execute();
    expect(n).toHaveLength(0);
  });

  it("refuses a receipt signed by another key under the id of the device's key", async () => {
    const stored = JSON.parse(
      (await db().selectFrom('update_receipts').select('document').executeTakeFirstOrThrow()).document,
    ) as SignedUpdateReceipt;
    const certificate = new X509Certificate(dev.store.clientCertificatePem());
    const device = { deviceId: dev.id, serial: certificate.serialNumber.toLowerCase(), certificate };
    const { signature: _drop, ...unsigned } = stored;
    const impostor = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    // The key id names the device's certificate key; the signature is the impostor's.
    const forged = await signDocument(
      { ...unsigned, id: randomBytes(16).toString('hex') },
      { publicKey: certificate.publicKey, sign: async (data) => sign('sha256', data, impostor) },
    );
    await expect(t.platform.updates.director.storeReceipt(device, forged)).rejects.toThrow(
      /the signature does not match the content/,
    );
    // Signed by the device's own key (the stored one, sent again): accepted, not stored twice.
    await expect(t.platform.updates.director.storeReceipt(device, stored)).resolves.toMatchObject({
      stored: false,
    });
  });

  it('refuses a release the director lists with other hashes than the release repository (compromised director)', async () => {
    const up = await upload('name=fw&version=2.0.0&model=DW100&releaseCounter=6&fileName=fw.bin', v2);
    await t.call('PUT', `/api/v1/devices/${dev.id}/update-assignment`, { body: { path: up.path } });
    // The director's database is tampered with: it now signs another hash and length for the target.
    await db()
      .updateTable('update_releases')
      .set({ sha256: rel1.sha256, length: v1.length })
      .where('path', '=', up.path)
      .execute();
    await expectUpdateRefused(dev.client().check(), /disagree on .*fw-2\.0\.0/, dev);
    await db()
      .updateTable('update_releases')
      .set({ sha256: up.sha256, length: v2.length })
      .where('path', '=', up.path)
      .execute();
  });

  it('refuses a target the release repository does not have (compromised director)', async () => {
    await db()
      .insertInto('update_releases')
      .values({
        path: 'DW100/evil-6.6.6.bin',
        role: 'targets',
        name: 'evil',
        version: '6.6.6',
        sha256: rel1.sha256,
        length: v1.length,
        first_model: 'DW100',
        release_counter: 99,
        custom: JSON.stringify({ models: ['DW100'], releaseCounter: 99, kind: 'firmware', version: '6.6.6' }),
        state: 'published',
        signing_request: null,
        created_at: new Date().toISOString(),
        created_by: 'attacker',
      })
      .execute();
    await db()
      .updateTable('update_assignments')
      .set({ target_path: 'DW100/evil-6.6.6.bin' })
      .where('device_id', '=', dev.id)
      .execute();
    await expectUpdateRefused(dev.client().check(), /release repository does not have/, dev);
  });

  it('refuses a release for another hardware model', async () => {
    const other = await upload(
      'name=fw&version=3.0.0&model=OTHER&releaseCounter=7&fileName=fw.bin',
      randomBytes(5000),
    );
    // The API refuses to assign it ...
    const a = await t.call('PUT', `/api/v1/devices/${dev.id}/update-assignment`, {
      body: { path: other.path },
    });
    expect(a.status).toBe(400);
    // ... and a device told to install it anyway refuses.
    await db()
      .updateTable('update_assignments')
      .set({ target_path: other.path })
      .where('device_id', '=', dev.id)
      .execute();
    await expectUpdateRefused(dev.client().check(), /is for OTHER, this device is a DW100/, dev);
  });

  it('refuses a rollback to a lower release counter', async () => {
    const a = await t.call('PUT', `/api/v1/devices/${dev.id}/update-assignment`, {
      body: { path: rel0.path },
    });
    expect(a.status).toBe(200);
    await expectUpdateRefused(dev.client().check(), /release counter 3 .* below the 5 .*\(rollback\)/, dev);
  });

  it('refuses expired director metadata (freeze)', async () => {
    const later = () => new Date(Date.now() + 3 * 24 * 3600_000);
    await expectUpdateRefused(dev.client({ now: later }).check(), /expired .*frozen or replayed/, dev);
  });

  it("refuses a device reading another device's director metadata", async () => {
    const other = await enroll('DIR-0002');
    const id = await mutualTlsIdentity(other.store, other.anchor, Date.now(), 'test');
    // DIR-0002's certificate asks for DIR-0001's metadata.
    const { request } = await import('node:http');
    const url = new URL(`/director/v1/devices/${dev.id}/targets.json`, estUrl);
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        headers: { host: url.host },
        createConnection: () =>
          id.tls.connect({
            host: url.hostname,
            port: Number(url.port),
            certPem: other.store.clientCertificatePem(),
            caPem: id.rootPem,
          }),
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(403);
    const audit = await t.call('GET', '/api/v1/audit/entries?action=director.read');
    expect(
      (audit.body.items as { action: string; actor: string; target: string; outcome: string }[]).some(
        (e) =>
          e.action === 'director.read' &&
          e.actor === 'device:DIR-0002' &&
          e.target === `device:${dev.id}` &&
          e.outcome === 'failure',
      ),
    ).toBe(true);
    // Without a certificate there is nothing at all.
    const anon = await fetch(new URL('/director/v1/root.json', estUrl), {
      // @ts-expect-error undici option: trust the test platform's CA
      dispatcher: new (await import('undici')).Agent({ connect: { rejectUnauthorized: false } }),
    });
    expect(anon.status).toBe(401);
  });

  describe('one mutual-TLS connection, authenticated once', () => {
    /** A kept-alive connection with the device's certificate, counting the connections it opens. */
    class DeviceConnection extends Agent {
      opened = 0;
      constructor(private readonly open: () => Duplex) {
        super({ keepAlive: true, maxSockets: 1 });
      }
      override createConnection(_options: ClientRequestArgs): Duplex {
        this.opened++;
        return this.open();
      }
    }
    const connect = async (d: Device) => {
      const id = await mutualTlsIdentity(d.store, d.anchor, Date.now(), 'test');
      const url = new URL(estUrl);
      const agent = new DeviceConnection(() =>
        id.tls.connect({
          host: url.hostname,
          port: Number(url.port),
          certPem: d.store.clientCertificatePem(),
          caPem: id.rootPem,
        }),
      );
      const get = (path: string) =>
        new Promise<number>((resolve, reject) => {
          const req = httpRequest({
            host: url.hostname,
            port: url.port,
            path,
            agent,
            headers: { host: url.host },
          });
          req.on('response', (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          });
          req.on('error', reject);
          req.end();
        });
      return { agent, get };
    };
    const serialOf = (d: Device) =>
      new X509Certificate(d.store.clientCertificatePem()).serialNumber.toLowerCase();

    it('refuses the next request on the same connection once the certificate is revoked', async () => {
      const d = await enroll('DIR-0010');
      const c = await connect(d);
      expect(await c.get('/director/v1/root.json')).toBe(200);
      expect(await c.get('/director/v1/repository')).toBe(200);
      const revoked = await t.call('POST', `/api/v1/certificates/${serialOf(d)}/revoke`, {
        body: { reason: 'keyCompromise' },
      });
      expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
      expect(await c.get('/director/v1/root.json')).toBe(401);
      expect(await c.get(`/director/v1/devices/${d.id}/targets.json`)).toBe(401);
      // All of it over the one connection: the refusal is not a new handshake's.
      expect(c.agent.opened).toBe(1);
      c.agent.destroy();
    });

    it('refuses the next request on the same connection once the device is disabled', async () => {
      const d = await enroll('DIR-0011');
      const c = await connect(d);
      expect(await c.get(`/director/v1/devices/${d.id}/targets.json`)).toBe(200);
      const disabled = await t.call('PATCH', `/api/v1/devices/${d.id}`, { body: { status: 'disabled' } });
      expect(disabled.status, JSON.stringify(disabled.body)).toBe(200);
      expect(await c.get(`/director/v1/devices/${d.id}/targets.json`)).toBe(401);
      expect(c.agent.opened).toBe(1);
      c.agent.destroy();
    });

    it('reuses the answer on a connection (not on a new one), for a few seconds at most', async () => {
      const d = await enroll('DIR-0012');
      const c = await connect(d);
      expect(await c.get('/director/v1/root.json')).toBe(200);
      // A status written behind the platform's back (as another instance on the same database
      // would): the open connection keeps its answer for now, a new connection is refused.
      await db()
        .updateTable('certificates')
        .set({ status: 'revoked', revoked_at: new Date().toISOString(), revocation_reason: 'keyCompromise' })
        .where('serial', '=', serialOf(d))
        .execute();
      expect(await c.get('/director/v1/root.json')).toBe(200);
      const fresh = await connect(d);
      expect(await fresh.get('/director/v1/root.json')).toBe(401);
      fresh.agent.destroy();
      // ... and no longer than CONNECTION_AUTH_REUSE_MS.
      const later = Date.now() + CONNECTION_AUTH_REUSE_MS + 1;
      const clock = vi.spyOn(Date, 'now').mockImplementation(() => later);
      try {
        expect(await c.get('/director/v1/root.json')).toBe(401);
      } finally {
        clock.mockRestore();
      }
      expect(c.agent.opened).toBe(1);
      c.agent.destroy();
    });
  });

  it('clears an assignment through the API (audited), after which the director lists nothing', async () => {
    const viewer = await t.tokenFor('viewer');
    const denied = await t.call('DELETE', `/api/v1/devices/${dev.id}/update-assignment`, { token: viewer });
    expect(denied.status).toBe(403);
    const del = await t.call('DELETE', `/api/v1/devices/${dev.id}/update-assignment`);
    expect(del.status).toBe(204);
    expect((await dev.client().check()).outcome).toBe('nothing-assigned');
    expect((await t.call('DELETE', `/api/v1/devices/${dev.id}/update-assignment`)).status).toBe(404);
    expect(
      (await t.call('PUT', '/api/v1/devices/NO-SUCH/update-assignment', { body: { path: rel1.path } }))
        .status,
    ).toBe(404);
    const audit = await t.call('GET', '/api/v1/audit/entries?action=device.update-assignment.clear');
    expect((audit.body.items as { target: string }[]).some((e) => e.target === `device:${dev.id}`)).toBe(
      true,
    );
  });

  it('counts the device as succeeded in the deployment that assigned the release, once its receipt arrives', async () => {
    const v3 = Buffer.concat([v2, Buffer.from('release 3.0.0')]);
    const up = await upload('name=fw&version=3.0.0&model=DW100&releaseCounter=20&fileName=fw.bin', v3);
    const created = await t.call('POST', '/api/v1/deployments', {
      body: { release: up.path, target: { devices: [dev.id] }, ratePerMinute: 60 },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const id = created.body.id as string | number;
    await t.platform.deployments.tick();
    const r = await dev.client().check();
    expect(r).toMatchObject({ outcome: 'installed', target: up.path, receiptSent: true });
    const shown = await t.call('GET', `/api/v1/deployments/${id}`);
    expect(shown.body.devices).toEqual([expect.objectContaining({ deviceId: dev.id, state: 'succeeded' })]);
    await t.platform.deployments.tick();
    expect((await t.call('GET', `/api/v1/deployments/${id}`)).body.deployment.state).toBe('completed');
  });

  it('counts a rollback as a failure of the deployment, and does not ask the device for that release again', async () => {
    const faulty = await enroll('DIR-0009', { selfTest: 'exit 3' });
    const up = await upload(
      'name=fw&version=4.0.0&model=DW100&releaseCounter=30&fileName=fw.bin',
      Buffer.concat([v1, Buffer.from('release 4.0.0')]),
    );
    const created = await t.call('POST', '/api/v1/deployments', {
      body: { release: up.path, target: { devices: [faulty.id] }, ratePerMinute: 60 },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    await t.platform.deployments.tick();
    const r = await faulty.client().check();
    expect(r).toMatchObject({ outcome: 'installed', receiptSent: true });
    expect(r.result?.outcome).toBe('rolled-back');
    const shown = await t.call('GET', `/api/v1/deployments/${created.body.id}`);
    expect(shown.body.devices).toEqual([
      expect.objectContaining({ deviceId: faulty.id, state: 'rolled-back' }),
    ]);
    expect((await faulty.client().check()).outcome).toBe('nothing-assigned');
  });

  describe('a hostile updates listener (a test server in front of the real one)', () => {
    let proxy: Server;
    let realUrl: string;
    let mode: 'flip' | 'truncate' | 'endless' = 'flip';

    beforeAll(async () => {
      realUrl = t.platform.updates.url!;
      proxy = createServer((req, res) => {
        void (async () => {
          const real = await fetch(realUrl + req.url, {
            headers: req.headers.range ? { range: req.headers.range } : {},
          });
          const body = Buffer.from(await real.arrayBuffer());
          const headers: Record<string, string> = {};
          real.headers.forEach((v, k) => {
            if (k !== 'content-length' && k !== 'transfer-encoding' && k !== 'connection') headers[k] = v;
          });
          if (mode === 'endless' && req.url!.endsWith('timestamp.json')) {
            // Never-ending metadata: keep sending until the client hangs up.
            res.writeHead(200, { 'content-type': 'application/json' });
            const more = () => {
              while (res.write(Buffer.alloc(64 * 1024, 0x20)));
            };
            res.on('drain', more);
            res.on('close', () => res.off('drain', more));
            more();
            return;
          }
          if (req.url!.startsWith('/targets/')) {
            if (mode === 'flip' && body.length > 100) body[100] = body[100]! ^ 1;
            if (mode === 'truncate') {
              res.writeHead(real.status, { ...headers, 'content-length': String(body.length) });
              res.write(body.subarray(0, Math.floor(body.length / 2)));
              res.destroy();
              return;
            }
          }
          res.writeHead(real.status, { ...headers, 'content-length': String(body.length) });
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

    const expectNothingInstalled = (d: Device) => {
      expect(
        d.logs.some((l) => l.includes('"update.download-failed"') || l.includes('"update.refused"')),
      ).toBe(true);
      expect(existsSync(join(d.dataDir, 'slots', 'a', 'fw.bin'))).toBe(false);
      expect(existsSync(join(d.dataDir, 'slots', 'b', 'fw.bin'))).toBe(false);
    };

    it('refuses a bit-flipped artifact', async () => {
      const d = await enroll('DIR-0003');
      await t.call('PUT', `/api/v1/devices/${d.id}/update-assignment`, { body: { path: rel1.path } });
      mode = 'flip';
      const err = await d
        .client()
        .check()
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(AgentError);
      expect((err as AgentError).code).toMatch(/^DOWNLOAD_/);
      expectNothingInstalled(d);
    });

    it('does not install a truncated artifact', async () => {
      const d = await enroll('DIR-0004');
      await t.call('PUT', `/api/v1/devices/${d.id}/update-assignment`, { body: { path: rel1.path } });
      mode = 'truncate';
      const err = await d
        .client()
        .check()
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(AgentError);
      expect((err as AgentError).code).toMatch(/^DOWNLOAD_/);
      expectNothingInstalled(d);
    });

    it('refuses endless metadata', async () => {
      const d = await enroll('DIR-0005');
      await t.call('PUT', `/api/v1/devices/${d.id}/update-assignment`, { body: { path: rel1.path } });
      mode = 'endless';
      await expectUpdateRefused(d.client().check(), /release repository's metadata does not verify/, d);
    });
  });
});
