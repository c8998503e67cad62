import { execFile } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers, auditEntriesAfter, auditHead } from '../test-support/pki.js';

/**
 * Claim-certificate and individual enrollment policies, with curl and openssl as the device: the
 * claim certificate (or a certificate the device already holds) is the TLS client certificate of an
 * unmodified EST simpleenroll. Each attack of the issue — a claim certificate for a device id not on
 * its allowlist, or used twice — is tried and refused, audited and logged.
 */
let tp: TestPlatform;
let peers: PkiPeers;
const MODEL = 'cl100';

/** EST simpleenroll with curl, `<holder>.crt`/`<holder>.key` as the TLS client certificate. */
function enrollWithCert(name: string, deviceId: string, holder: string, csrOpts: { key?: string } = {}) {
  return peers.curl([
    '--cert',
    peers.path(`${holder}.crt`),
    '--key',
    peers.path(`${holder}.key`),
    '-H',
    'Content-Type: application/pkcs10',
    '--data-binary',
    `@${peers.csr(name, deviceId, csrOpts)}`,
    `${peers.est}/simpleenroll`,
  ]);
}

const claimEnroll = (name: string, deviceId: string, claim = 'claim') =>
  enrollWithCert(name, deviceId, claim);

/** A self-signed P-256 certificate made by openssl as `<name>.crt`/`<name>.key`; openssl's output. */
function selfSigned(name: string, cn: string, extra: string[] = []): string {
  return peers.openssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    '-days',
    '30',
    '-subj',
    `/CN=${cn}`,
    ...extra,
  );
}

async function createPolicy(body: Record<string, unknown>) {
  return tp.call('POST', '/api/v1/enrollment-policies', { body });
}

beforeAll(async () => {
  tp = await startTestPlatform('sqlite', {}, { captureLogs: true });
  peers = new PkiPeers(tp);
  expect((await tp.call('POST', '/api/v1/device-models', { body: { id: MODEL } })).status).toBe(201);
  expect(
    (await tp.call('POST', '/api/v1/device-groups', { body: { id: 'claimed', name: 'Claimed' } })).status,
  ).toBe(201);
}, 60_000);
afterAll(async () => {
  await tp?.close();
});

describe('claim-certificate enrollment', () => {
  let claimSerial: string;

  beforeAll(async () => {
    const created = await createPolicy({
      name: 'batch-7-claim',
      kind: 'claim',
      config: { batch: 'b-007', allowlist: ['cl-1', 'cl-2'], ratePerMinute: 2 },
      placement: { model: MODEL, groups: ['claimed'], attributes: { line: 'seven' } },
    });
    expect(created.status).toBe(201);
    const issued = await tp.call('POST', '/api/v1/enrollment-policies/batch-7-claim/claim-certificate', {
      body: {},
    });
    expect(issued.status).toBe(201);
    expect(issued.body.privateKey).toMatch(/BEGIN PRIVATE KEY/);
    writeFileSync(peers.path('claim.crt'), issued.body.certificate);
    writeFileSync(peers.path('claim.key'), issued.body.privateKey);
    claimSerial = issued.body.serial;
    const x = new X509Certificate(issued.body.certificate);
    expect(x.subjectAltName).toBe('URI:urn:rampart:claim:batch-7-claim');
    expect(x.verify(new X509Certificate(issued.body.chain[0]).publicKey)).toBe(true);
    // The generated key is never kept, so the audit entry does not carry it.
    const audit = await tp.call('GET', '/api/v1/audit/entries?action=enrollment.claim-certificate.issue');
    expect(JSON.stringify(audit.body)).not.toMatch(/PRIVATE KEY/);
  });

  it('enrolls a device on the allowlist once, registered where the policy places it', async () => {
    const r = await claimEnroll('cl-1', 'cl-1');
    expect(r.status, r.body.toString()).toBe(200);
    const device = await tp.call('GET', '/api/v1/devices/cl-1');
    expect(device.body).toMatchObject({
      id: 'cl-1',
      model: MODEL,
      status: 'active',
      attributes: { line: 'seven' },
      groups: ['claimed'],
    });
    const transcripts = await tp.call('GET', '/api/v1/devices/cl-1/transcripts');
    expect(transcripts.body[0]).toMatchObject({
      decision: 'issued',
      policy: { name: 'batch-7-claim', kind: 'claim', version: 1 },
      credential: { claimCertificate: claimSerial },
    });
  });

  it('refuses the claim certificate for a device id not on its allowlist, and a second time for the same id', async () => {
    const seq = await auditHead(tp);
    const stranger = await claimEnroll('cl-9', 'cl-9');
    expect(stranger.status).toBe(403);
    expect(stranger.body.toString()).toMatch(/not on the allowlist of claim policy batch-7-claim/);
    const twice = await claimEnroll('cl-1b', 'cl-1');
    expect(twice.status).toBe(403);
    expect(twice.body.toString()).toMatch(/already used for device cl-1/);
    expect((await tp.call('GET', '/api/v1/devices/cl-9')).status).toBe(404);

    const refusals = await auditEntriesAfter(tp, 'certificate.enroll', seq, 2);
    expect(refusals.map((e) => [e.target, e.outcome])).toEqual([
      ['device:cl-9', 'denied'],
      ['device:cl-1', 'denied'],
    ]);
    const logged = tp.logs.map((l) => JSON.parse(l) as { event?: string; device?: string });
    expect(logged.some((l) => l.event === 'certificate.enroll.refused' && l.device === 'cl-9')).toBe(true);
  });

  it('admits at most ratePerMinute enrollments a minute through the policy', async () => {
    expect((await claimEnroll('cl-2', 'cl-2')).status).toBe(200);
    const grown = await tp.call('PATCH', '/api/v1/enrollment-policies/batch-7-claim', {
      body: { config: { batch: 'b-007', allowlist: ['cl-1', 'cl-2', 'cl-3'], ratePerMinute: 2 } },
    });
    expect(grown.body.version).toBe(2);
    const limited = await claimEnroll('cl-3', 'cl-3');
    expect(limited.status).toBe(429);
    expect(limited.body.toString()).toMatch(/admits 2 enrollments a minute/);
  });

  it('refuses a look-alike claim certificate Rampart did not issue, and a revoked one', async () => {
    // Same SAN, self-signed: TLS proves the key, but Rampart never issued this certificate.
    selfSigned('fake', 'Claim batch-7-claim', [
      '-addext',
      'subjectAltName=URI:urn:rampart:claim:batch-7-claim',
    ]);
    const fake = await claimEnroll('cl-2f', 'cl-2', 'fake');
    expect(fake.status).toBe(401);
    expect(fake.body.toString()).toMatch(/not issued by this Rampart/);

    const revoked = await tp.call('POST', `/api/v1/certificates/${claimSerial}/revoke`, {
      body: { reason: 'keyCompromise' },
    });
    expect(revoked.status).toBe(200);
    const after = await claimEnroll('cl-2r', 'cl-2');
    expect(after.status).toBe(401);
    expect(after.body.toString()).toMatch(/revoked/);
  });

  it('issues a claim certificate for a key it never sees when given a CSR', async () => {
    const csr = peers.csr('held', 'claim-holder');
    const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${readFileSync(csr, 'utf8')}-----END CERTIFICATE REQUEST-----\n`;
    const r = await tp.call('POST', '/api/v1/enrollment-policies/batch-7-claim/claim-certificate', {
      body: { csr: pem, validityDays: 30 },
    });
    expect(r.status).toBe(201);
    expect(r.body.privateKey).toBeUndefined();
    const cert = new X509Certificate(r.body.certificate);
    const held = peers.openssl('pkey', '-in', 'held.key', '-pubout');
    expect(cert.publicKey.export({ type: 'spki', format: 'pem' })).toBe(held);
    const bad = await tp.call('POST', '/api/v1/enrollment-policies/batch-7-claim/claim-certificate', {
      body: { csr: 'not a request' },
    });
    expect(bad.status).toBe(400);
    expect(bad.body.detail).toMatch(/csr/);
  });
});

describe('individual enrollment', () => {
  it('enrolls a device known by its key, for that key only', async () => {
    selfSigned('known', 'ind-1');
    const spki = new X509Certificate(readFileSync(peers.path('known.crt'))).publicKey.export({
      type: 'spki',
      format: 'der',
    });
    const created = await createPolicy({
      name: 'ind-1',
      kind: 'individual',
      config: { deviceId: 'ind-1', keyFingerprint: createHash('sha256').update(spki).digest('hex') },
      placement: { model: MODEL },
    });
    expect(created.status).toBe(201);
    const other = await enrollWithCert('ind-1-other', 'ind-1', 'known');
    expect(other.status).toBe(403);
    expect(other.body.toString()).toMatch(/for its registered key only/);
    const same = await enrollWithCert('ind-1', 'ind-1', 'known', { key: peers.path('known.key') });
    expect(same.status, same.body.toString()).toBe(200);
    expect((await tp.call('GET', '/api/v1/devices/ind-1')).body).toMatchObject({
      model: MODEL,
      status: 'active',
    });
    const wrongId = await enrollWithCert('ind-1-x', 'ind-2', 'known', { key: peers.path('known.key') });
    expect(wrongId.status).toBe(403);
    expect(wrongId.body.toString()).toMatch(/credentials are for device "ind-1"/);
  });

  it('enrolls a device known by a certificate it holds, and refuses an unknown one', async () => {
    selfSigned('vendor', 'vendor-cert-42');
    const der = new X509Certificate(readFileSync(peers.path('vendor.crt'))).raw;
    expect(
      (
        await createPolicy({
          name: 'ind-2',
          kind: 'individual',
          config: {
            deviceId: 'ind-2',
            certificateFingerprint: createHash('sha256').update(der).digest('hex'),
          },
          placement: { model: MODEL },
        })
      ).status,
    ).toBe(201);
    const r = await enrollWithCert('ind-2', 'ind-2', 'vendor');
    expect(r.status, r.body.toString()).toBe(200);
    selfSigned('unknown', 'ind-3');
    const refused = await enrollWithCert('ind-3', 'ind-3', 'unknown');
    expect(refused.status).toBe(403);
    expect((await tp.call('GET', '/api/v1/devices/ind-3')).status).toBe(404);
    // A disabled policy enrolls nobody.
    await tp.call('PATCH', '/api/v1/enrollment-policies/ind-2', { body: { enabled: false } });
    expect((await enrollWithCert('ind-2b', 'ind-2', 'vendor')).status).toBe(403);
  });
});

describe('the device agent with a claim certificate', () => {
  const AGENT = fileURLToPath(new URL('../../../agent/bin/rampart-agent.js', import.meta.url));
  const agent = async (args: string[]) => {
    try {
      const r = await promisify(execFile)(process.execPath, [AGENT, ...args], {
        env: { PATH: process.env.PATH ?? '', HOME: tmpdir() },
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  };

  it('enrolls with `rampart-agent enroll --claim-cert --claim-key`, once', async () => {
    expect(
      (
        await createPolicy({
          name: 'agent-claim',
          kind: 'claim',
          config: { batch: 'b-008', allowlist: ['ag-1'] },
          placement: { model: MODEL },
        })
      ).status,
    ).toBe(201);
    const issued = await tp.call('POST', '/api/v1/enrollment-policies/agent-claim/claim-certificate', {
      body: {},
    });
    writeFileSync(peers.path('agent-claim.crt'), issued.body.certificate);
    writeFileSync(peers.path('agent-claim.key'), issued.body.privateKey, { mode: 0o600 });
    const enroll = (id: string, dir: string, key = 'agent-claim.key') =>
      agent([
        'enroll',
        '--data-dir',
        join(peers.dir, dir),
        '--est-url',
        peers.est,
        '--ca',
        peers.rootCa,
        '--device-id',
        id,
        '--claim-cert',
        peers.path('agent-claim.crt'),
        '--claim-key',
        peers.path(key),
        '--json',
      ]);
    const first = await enroll('ag-1', 'device-a');
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ deviceId: 'ag-1' });
    expect((await tp.call('GET', '/api/v1/devices/ag-1')).body.status).toBe('active');
    // Another data directory (a factory-reset device, or a clone) cannot use the claim again.
    const again = await enroll('ag-1', 'device-b');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/already used for device ag-1/);
    // A key that is not the claim certificate's is refused before anything is sent.
    const wrong = await enroll('ag-1', 'device-c', 'fake.key');
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/not the key of the claim certificate/);
  });
});

describe('a policy that cannot place the device', () => {
  it('refuses with the reason (409), not an internal error, when the placement model is gone', async () => {
    await tp.call('POST', '/api/v1/device-models', { body: { id: 'gone-1' } });
    const cert = selfSigned('orphan', 'orphan-1');
    expect(cert).toBe('');
    const der = new X509Certificate(readFileSync(peers.path('orphan.crt'))).raw;
    expect(
      (
        await createPolicy({
          name: 'orphan',
          kind: 'individual',
          config: {
            deviceId: 'orphan-1',
            certificateFingerprint: createHash('sha256').update(der).digest('hex'),
          },
          placement: { model: 'gone-1' },
        })
      ).status,
    ).toBe(201);
    expect((await tp.call('DELETE', '/api/v1/device-models/gone-1')).status).toBe(200);
    const r = await enrollWithCert('orphan-1', 'orphan-1', 'orphan');
    expect(r.status).toBe(409);
    expect(r.body.toString()).toMatch(/device model gone-1 is not registered/);
  });
});

describe('policy configuration', () => {
  it('refuses a config that does not fit the kind, naming the field, and stores nothing', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ name: 'c1', kind: 'claim', config: { allowlist: ['a'] } }, /config\.batch is required/],
      [
        { name: 'c2', kind: 'group', config: { allowlist: ['a'] } },
        /config\.allowlist does not apply to group/,
      ],
      [
        {
          name: 'c3',
          kind: 'individual',
          config: { deviceId: 'x', keyFingerprint: 'a'.repeat(64), certificateFingerprint: 'b'.repeat(64) },
        },
        /exactly one/,
      ],
      [{ name: 'c4', kind: 'individual', config: { deviceId: 'x' } }, /exactly one/],
    ];
    for (const [body, message] of cases) {
      const r = await createPolicy(body);
      expect(r.status).toBe(400);
      expect(r.body.detail).toMatch(message);
    }
    const names = (await tp.call('GET', '/api/v1/enrollment-policies')).body.map(
      (p: { name: string }) => p.name,
    );
    expect(names).not.toContain('c1');
    const claimForGroup = await tp.call('POST', '/api/v1/enrollment-policies/factory/claim-certificate', {
      body: {},
    });
    expect(claimForGroup.status).toBe(409);
  });
});
