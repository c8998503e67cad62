import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import {
  PCR_OF,
  ZERO_DIGEST,
  attestationQualifyingData,
  extendDigest,
  type MeasurementEvent,
} from '@rampart/shared/attestation';
import { canonicalJson } from '@rampart/shared/audit';
import { buildCsr } from '@rampart/shared/pki';
import {
  EVIDENCE_FORMAT,
  MANIFEST_FORMAT,
  QUOTED_PCRS,
  SOFTWARE_QUOTE_FORMAT,
  signDocument,
  signatureProblem,
  type AttestationEvidence,
} from '@rampart/shared/provisioning';
import { DIALECTS } from '../test-support/databases.js';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { issueBirthCertificate, stationSigner } from './factory.js';

/**
 * Zero-touch provisioning end to end against a running platform: a station registered, a birth
 * certificate issued offline, a signed manifest imported, software-anchor evidence over a fresh
 * nonce verified, an operational certificate issued over EST with the attestation token, a signed
 * transcript — and each attack of the issue tried and refused.
 */
let tp: TestPlatform;
let est: string;
const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
const MODEL = 'gw200';

const digest = (n: number) => n.toString(16).padStart(64, '0');
const APP = digest(0xa1);
const OS = digest(0x05);

interface Device {
  id: string;
  key: KeyObject;
  spki: Buffer;
  birth: string;
}

let stationKey: KeyObject;
let stationCa: string;

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await request(`${est}${path}`, {
    method: 'POST',
    dispatcher,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? (JSON.parse(text) as any) : null }; // eslint-disable-line @typescript-eslint/no-explicit-any
}

async function makeDevice(
  id: string,
  options: { notBefore?: Date; validityDays?: number; caPem?: string; caKey?: KeyObject } = {},
): Promise<Device> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const birth = await issueBirthCertificate({
    stationKey: options.caKey ?? stationKey,
    stationCaPem: options.caPem ?? stationCa,
    deviceSpki: spki,
    deviceId: id,
    serial: `SN-${id}`,
    validityDays: options.validityDays ?? 3650,
    ...(options.notBefore ? { notBefore: options.notBefore } : {}),
  });
  return { id, key: privateKey, spki, birth };
}

function manifestDevice(d: Device) {
  return {
    deviceId: d.id,
    serial: `SN-${d.id}`,
    model: MODEL,
    hardwareRevision: null,
    trustAnchor: 'software' as const,
    publicKey: d.spki.toString('base64'),
    birthCertificate: d.birth,
    provisionedAt: new Date().toISOString(),
  };
}

async function manifest(batch: string, devices: Device[], key = stationKey) {
  return signDocument(
    {
      format: MANIFEST_FORMAT,
      batch,
      station: 'line-1',
      createdAt: new Date().toISOString(),
      closedAt: new Date().toISOString(),
      devices: devices.map(manifestDevice),
    },
    stationSigner(key),
  );
}

function log(digests: { component: 'application' | 'os'; digest: string }[]): MeasurementEvent[] {
  return digests.map((d, i) => ({
    seq: i + 1,
    pcr: PCR_OF[d.component],
    component: d.component,
    digest: d.digest,
    description: `${d.component} image`,
    at: new Date().toISOString(),
  }));
}

function evidence(
  d: Device,
  nonce: string,
  events: MeasurementEvent[],
  options: { signedEvents?: MeasurementEvent[]; signer?: KeyObject } = {},
): AttestationEvidence {
  const registers: Record<string, string> = {};
  for (const p of QUOTED_PCRS) registers[String(p)] = ZERO_DIGEST;
  for (const e of options.signedEvents ?? events)
    registers[String(e.pcr)] = extendDigest(registers[String(e.pcr)]!, e.digest);
  const body = Buffer.from(
    canonicalJson({
      format: SOFTWARE_QUOTE_FORMAT,
      qualifyingData: attestationQualifyingData(nonce, d.spki).toString('hex'),
      registers,
    }),
  );
  return {
    format: EVIDENCE_FORMAT,
    nonce,
    deviceId: d.id,
    anchor: 'software',
    key: d.spki.toString('base64'),
    birthCertificates: [d.birth, stationCa],
    eventLog: events,
    statement: {
      body: body.toString('base64'),
      signature: sign('sha256', body, options.signer ?? d.key).toString('base64'),
    },
  };
}

async function nonce(): Promise<string> {
  const r = await post('/attestation/v1/nonce', {});
  expect(r.status).toBe(200);
  return r.body.nonce as string;
}

async function enroll(d: Device, token: string) {
  const csr = await buildCsr({
    commonName: d.id,
    publicKey: createPublicKey(d.key),
    sign: async (data: Uint8Array) => sign('sha256', data, d.key),
  });
  const res = await request(`${est}/.well-known/est/simpleenroll`, {
    method: 'POST',
    dispatcher,
    headers: { 'content-type': 'application/pkcs10', authorization: `Bearer ${token}` },
    body: csr.toString('base64'),
  });
  return { status: res.statusCode, body: await res.body.text() };
}

const GOOD = () =>
  log([
    { component: 'os', digest: OS },
    { component: 'application', digest: APP },
  ]);
let devices: Record<string, Device>;

describe.each(DIALECTS)('zero-touch provisioning with attestation (%s)', (dialect) => {
  beforeAll(async () => {
    tp = await startTestPlatform(dialect, {}, { captureLogs: true });
    est = tp.platform.listeners.find((l) => l.name === 'est')!.url.replace(/\/\.well-known\/est$/, '');
    ({ privateKey: stationKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' }));
    const reg = await tp.call('POST', '/api/v1/stations', {
      body: {
        name: 'line-1',
        publicKey: createPublicKey(stationKey).export({ type: 'spki', format: 'pem' }),
      },
    });
    expect(reg.status).toBe(201);
    stationCa = reg.body.certificate;
    expect(
      await tp.call('POST', '/api/v1/device-models', { body: { id: MODEL, name: 'Gateway 200' } }),
    ).toMatchObject({ status: 201 });
    for (const [component, d] of [
      ['os', OS],
      ['application', APP],
    ] as const)
      expect(
        (await tp.call('POST', '/api/v1/reference-values', { body: { model: MODEL, component, digest: d } }))
          .status,
      ).toBe(201);
    devices = {};
    for (const id of ['gw-1', 'gw-2', 'gw-3', 'gw-4', 'gw-5']) devices[id] = await makeDevice(id);
    const imported = await tp.call('POST', '/api/v1/batches', {
      body: await manifest('b-001', Object.values(devices)),
    });
    expect(imported.status).toBe(201);
    expect(imported.body).toMatchObject({ batch: 'b-001', station: 'line-1', devices: 5 });
  }, 60_000);
  afterAll(async () => {
    await tp?.close();
  });

  it('issues an operational certificate to a genuine device booting known software, with a signed transcript', async () => {
    const d = devices['gw-1']!;
    const r = await post('/attestation/v1/evidence', evidence(d, await nonce(), GOOD()));
    expect(r.status).toBe(200);
    expect(r.body.result).toMatchObject({ deviceId: 'gw-1', status: 'affirming', anchor: 'software' });
    const issued = await enroll(d, r.body.token);
    expect(issued.status).toBe(200);
    const device = await tp.call('GET', '/api/v1/devices/gw-1');
    expect(device.body).toMatchObject({ id: 'gw-1', model: MODEL, status: 'active', serial: 'SN-gw-1' });
    const certs = await tp.call('GET', '/api/v1/certificates?device=gw-1');
    const cert = certs.body.items[0];
    expect(Date.parse(cert.notAfter) - Date.now()).toBeLessThanOrEqual(24 * 3600_000 + 60_000);

    const transcripts = await tp.call('GET', '/api/v1/devices/gw-1/transcripts');
    expect(transcripts.body).toHaveLength(1);
    const t = transcripts.body[0];
    expect(t).toMatchObject({
      decision: 'issued',
      policy: { name: 'factory', kind: 'group', version: 1 },
      attestation: { status: 'affirming' },
      trace: { batch: 'b-001', station: 'line-1' },
    });
    const key = (await tp.call('GET', '/api/v1/provisioning/transcript-key')).body as string;
    expect(signatureProblem(t, key)).toBeNull();
    expect(signatureProblem({ ...t, decision: 'refused' }, key)).toMatch(/changed/);

    const trace = await tp.call('GET', '/api/v1/devices/gw-1/trace');
    expect(trace.body.manufacture).toMatchObject({
      serial: 'SN-gw-1',
      batch: { id: 'b-001' },
      station: { name: 'line-1' },
    });
    expect(trace.body.enrollments[0]).toMatchObject({ decision: 'issued', policy: 'factory@1' });

    // The token admits one enrollment only.
    expect((await enroll(d, r.body.token)).status).toBe(401);
  });

  it('refuses a replayed nonce', async () => {
    const d = devices['gw-2']!;
    const n = await nonce();
    expect((await post('/attestation/v1/evidence', evidence(d, n, GOOD()))).status).toBe(200);
    const replay = await post('/attestation/v1/evidence', evidence(d, n, GOOD()));
    expect(replay.status).toBe(401);
    expect(replay.body.detail).toMatch(/already used/);
  });

  it('refuses evidence signed by another key, and evidence over another nonce', async () => {
    const d = devices['gw-2']!;
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const forged = await post(
      '/attestation/v1/evidence',
      evidence(d, await nonce(), GOOD(), { signer: other }),
    );
    expect(forged.status).toBe(403);
    expect(forged.body.detail).toMatch(/not signed by the device key/);
    const e = evidence(d, await nonce(), GOOD());
    e.nonce = await nonce();
    const redirected = await post('/attestation/v1/evidence', e);
    expect(redirected.status).toBe(403);
    expect(redirected.body.detail).toMatch(/not over this nonce/);
  });

  it('quarantines a device whose event log does not replay to the signed registers', async () => {
    const d = devices['gw-3']!;
    const hidden = log([
      { component: 'os', digest: OS },
      { component: 'application', digest: APP },
      { component: 'application', digest: digest(0xbad) },
    ]);
    const r = await post(
      '/attestation/v1/evidence',
      evidence(d, await nonce(), GOOD(), { signedEvents: hidden }),
    );
    expect(r.status).toBe(200);
    expect(r.body.result.status).toBe('contraindicated');
    expect(r.body.result.reasons.join()).toMatch(/does not replay/);
    expect(r.body.token).toBeNull();
  });

  it('quarantines a device measuring software not among the reference values, and raises a security event', async () => {
    const d = devices['gw-4']!;
    // Registered first, so that quarantine has a device to act on.
    const ok = await post('/attestation/v1/evidence', evidence(d, await nonce(), GOOD()));
    expect((await enroll(d, ok.body.token)).status).toBe(200);
    const bad = log([
      { component: 'os', digest: OS },
      { component: 'application', digest: digest(0xe11) },
    ]);
    const r = await post('/attestation/v1/evidence', evidence(d, await nonce(), bad));
    expect(r.body.result.status).toBe('contraindicated');
    expect(r.body.result.reasons.join()).toMatch(/not among the reference values/);
    expect((await tp.call('GET', '/api/v1/devices/gw-4')).body.status).toBe('quarantined');
    const shown = await tp.call('GET', '/api/v1/devices/gw-4/attestation');
    expect(shown.body[0]).toMatchObject({
      status: 'contraindicated',
      measurements: expect.arrayContaining([expect.objectContaining({ verdict: 'unknown' })]),
    });
  });

  it('refuses a device missing from every imported manifest', async () => {
    const stray = await makeDevice('gw-stray');
    const r = await post('/attestation/v1/evidence', evidence(stray, await nonce(), GOOD()));
    expect(r.status).toBe(403);
    expect(r.body.detail).toMatch(/not in any imported manifest/);
  });

  it('refuses birth certificates from an unregistered CA, or expired', async () => {
    const rogue = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const foreign = await makeDevice('gw-5', { caKey: rogue });
    const r = await post('/attestation/v1/evidence', evidence(foreign, await nonce(), GOOD()));
    expect(r.status).toBe(403);
    expect(r.body.detail).toMatch(/not a registered manufacturing CA|issuer/);
    const old = await makeDevice('gw-old', {
      notBefore: new Date(Date.now() - 10 * 86400_000),
      validityDays: 1,
    });
    const expired = await post('/attestation/v1/evidence', evidence(old, await nonce(), GOOD()));
    expect(expired.status).toBe(403);
    expect(expired.body.detail).toMatch(/expired/);
  });

  it('refuses a manifest with a bad station signature, and imports nothing', async () => {
    const d = await makeDevice('gw-forged');
    const m = await manifest('b-forged', [d]);
    const tampered = { ...m, devices: m.devices.map((x) => ({ ...x, model: 'other' })) };
    const r = await tp.call('POST', '/api/v1/batches', { body: tampered });
    expect(r.status).toBe(400);
    expect(r.body.detail).toMatch(/station signature is not valid/);
    const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const wrongKey = await tp.call('POST', '/api/v1/batches', {
      body: await manifest('b-forged', [d], otherKey),
    });
    expect(wrongKey.status).toBe(400);
    expect((await tp.call('GET', '/api/v1/batches')).body.map((b: { id: string }) => b.id)).toEqual([
      'b-001',
    ]);
  });

  it('answers 404 for the history of a device or model it never heard of, and shows one policy', async () => {
    for (const path of [
      '/api/v1/devices/nobody/attestation',
      '/api/v1/devices/nobody/transcripts',
      '/api/v1/devices/nobody/trace',
      '/api/v1/device-models/no-such-model/attestation',
      '/api/v1/enrollment-policies/no-such-policy',
    ])
      expect((await tp.call('GET', path)).status, path).toBe(404);
    // A device in a manifest that never attested has an empty history, not a 404.
    expect((await tp.call('GET', '/api/v1/devices/gw-5/transcripts')).body).toEqual([]);
    expect((await tp.call('GET', '/api/v1/enrollment-policies/factory')).body).toMatchObject({
      name: 'factory',
      kind: 'group',
    });
  });

  it('decommissions: certificates revoked, enrollment refused until re-provisioned', async () => {
    const d = devices['gw-1']!;
    const off = await tp.call('PATCH', '/api/v1/devices/gw-1', { body: { status: 'decommissioned' } });
    expect(off.status).toBe(200);
    const certs = await tp.call('GET', '/api/v1/certificates?device=gw-1');
    expect(certs.body.items.every((c: { state: string }) => c.state === 'revoked')).toBe(true);
    const r = await post('/attestation/v1/evidence', evidence(d, await nonce(), GOOD()));
    const refused = await enroll(d, r.body.token);
    expect(refused.status).toBe(403);
    expect(refused.body).toMatch(/decommissioned/);
    expect((await tp.call('PATCH', '/api/v1/devices/gw-1', { body: { status: 'pending' } })).status).toBe(
      200,
    );
    const again = await post('/attestation/v1/evidence', evidence(d, await nonce(), GOOD()));
    expect((await enroll(d, again.body.token)).status).toBe(200);
    expect((await tp.call('GET', '/api/v1/devices/gw-1')).body.status).toBe('active');
  });
});
