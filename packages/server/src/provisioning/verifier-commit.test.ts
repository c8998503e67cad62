import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { buildCsr, deviceUri } from '@rampart/shared/pki';
import { MANIFEST_FORMAT, signDocument, type AttestationEvidence } from '@rampart/shared/provisioning';
import { measure, measurementStore } from '../../../agent/src/attestation/measurements.js';
import { collectEvidence } from '../../../agent/src/provisioning/evidence.js';
import { SoftwareTrustAnchor } from '../../../agent/src/trust-anchor/software.js';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { issueBirthCertificate, stationSigner } from './factory.js';

/**
 * The verifier writes in group commits (one transaction for the evidence that arrives together)
 * and keeps birth certificates it has checked: neither may weaken what it guarantees. A nonce is
 * still good for one piece of evidence only, however many arrive at once, and a birth certificate
 * checked before is refused as soon as its station is revoked.
 */
let tp: TestPlatform;
let est: string;
let stationKey: KeyObject;
let stationCa: string;
let scratch: string;
const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
const MODEL = 'vc100';
const BOOT = [
  ['os', 'rootfs 7'],
  ['application', 'app 7'],
] as const;

interface Device {
  id: string;
  anchor: SoftwareTrustAnchor;
  birth: string;
}

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await request(`${est}${path}`, {
    method: 'POST',
    dispatcher,
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? (JSON.parse(text) as any) : null }; // eslint-disable-line @typescript-eslint/no-explicit-any
}

async function nonce(): Promise<string> {
  return (await post('/attestation/v1/nonce', {})).body.nonce as string;
}

/** Evidence as the agent collects it, over a measured boot of the model's known software. */
async function evidence(d: Device, n: string): Promise<AttestationEvidence> {
  const dataDir = join(scratch, d.id);
  return collectEvidence({
    anchor: d.anchor,
    dataDir,
    nonce: n,
    deviceId: d.id,
    birthCertificates: [d.birth, stationCa],
  });
}

async function makeDevices(batch: string, ids: string[]): Promise<Device[]> {
  const devices: Device[] = [];
  for (const id of ids) {
    const dataDir = join(scratch, id);
    const anchor = new SoftwareTrustAnchor(join(dataDir, 'identity', 'device-key.pem'));
    const spki = (await anchor.ensureKey()).export({ type: 'spki', format: 'der' });
    const { register, log } = measurementStore(dataDir, null);
    for (const [component, text] of BOOT)
      await measure({ register, log, component, data: Buffer.from(text), description: text });
    const birth = await issueBirthCertificate({
      stationKey,
      stationCaPem: stationCa,
      deviceSpki: spki,
      deviceId: id,
      serial: `SN-${id}`,
      validityDays: 365,
    });
    devices.push({ id, anchor, birth });
  }
  const manifest = await signDocument(
    {
      format: MANIFEST_FORMAT,
      batch,
      station: 'line-vc',
      createdAt: new Date().toISOString(),
      closedAt: new Date().toISOString(),
      devices: await Promise.all(
        devices.map(async (d) => ({
          deviceId: d.id,
          serial: `SN-${d.id}`,
          model: MODEL,
          hardwareRevision: null,
          trustAnchor: 'software' as const,
          publicKey: (await d.anchor.publicKey())!.export({ type: 'spki', format: 'der' }).toString('base64'),
          birthCertificate: d.birth,
          provisionedAt: new Date().toISOString(),
        })),
      ),
    },
    stationSigner(stationKey),
  );
  expect((await tp.call('POST', '/api/v1/batches', { body: manifest })).status).toBe(201);
  return devices;
}

async function enroll(d: Device, token: string) {
  const csr = await buildCsr({
    commonName: d.id,
    publicKey: (await d.anchor.publicKey())!,
    sanUris: [deviceUri(d.id)],
    sign: (data) => d.anchor.sign(data),
  });
  const res = await request(`${est}/.well-known/est/simpleenroll`, {
    method: 'POST',
    dispatcher,
    headers: { 'content-type': 'application/pkcs10', authorization: `Bearer ${token}` },
    body: csr.toString('base64'),
  });
  return { status: res.statusCode, body: await res.body.text() };
}

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'rampart-verifier-commit-'));
  tp = await startTestPlatform('sqlite');
  est = tp.platform.listeners.find((l) => l.name === 'est')!.url.replace(/\/\.well-known\/est$/, '');
  stationKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const reg = await tp.call('POST', '/api/v1/stations', {
    body: { name: 'line-vc', publicKey: createPublicKey(stationKey).export({ type: 'spki', format: 'pem' }) },
  });
  expect(reg.status).toBe(201);
  stationCa = reg.body.certificate;
  expect((await tp.call('POST', '/api/v1/device-models', { body: { id: MODEL, name: 'VC' } })).status).toBe(
    201,
  );
  const { register, log } = measurementStore(join(scratch, 'reference'), null);
  for (const [component, text] of BOOT) {
    const e = await measure({ register, log, component, data: Buffer.from(text), description: text });
    expect(
      (
        await tp.call('POST', '/api/v1/reference-values', {
          body: { model: MODEL, component, digest: e.digest },
        })
      ).status,
    ).toBe(201);
  }
}, 60_000);
afterAll(async () => {
  await tp?.close();
  rmSync(scratch, { recursive: true, force: true });
});

describe('the verifier under concurrent evidence', () => {
  it('accepts one piece of evidence per nonce when the same evidence arrives many times at once', async () => {
    const [d] = await makeDevices('vc-replay', ['vc-1']);
    const e = await evidence(d!, await nonce());
    const answers = await Promise.all(Array.from({ length: 8 }, () => post('/attestation/v1/evidence', e)));
    const ok = answers.filter((a) => a.status === 200);
    expect(ok).toHaveLength(1);
    expect(ok[0]!.body.result).toMatchObject({ deviceId: 'vc-1', status: 'affirming' });
    const replays = answers.filter((a) => a.status !== 200);
    expect(replays.map((a) => a.status)).toEqual(Array(7).fill(401));
    for (const r of replays) expect(r.body.detail).toMatch(/already used/);
    // One result stored, one token, one enrollment.
    expect((await tp.call('GET', '/api/v1/devices/vc-1/attestation')).body).toHaveLength(1);
    expect((await enroll(d!, ok[0]!.body.token)).status).toBe(200);
    expect((await enroll(d!, ok[0]!.body.token)).status).toBe(401);
  });

  it('burns the nonce of evidence it refuses as not authentic, in the same commit as the others', async () => {
    const [a, b] = await makeDevices('vc-forged', ['vc-2', 'vc-3']);
    const good = await evidence(a!, await nonce());
    const n = await nonce();
    const forged = await evidence(b!, n);
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    forged.statement!.signature = sign(
      'sha256',
      Buffer.from(forged.statement!.body, 'base64'),
      other,
    ).toString('base64');
    const [r1, r2] = await Promise.all([
      post('/attestation/v1/evidence', good),
      post('/attestation/v1/evidence', forged),
    ]);
    expect(r1.status).toBe(200);
    expect(r2.status).toBe(403);
    // The genuine evidence for the nonce the forgery used comes too late.
    const late = await post('/attestation/v1/evidence', await evidence(b!, n));
    expect(late.status).toBe(401);
    expect(late.body.detail).toMatch(/already used/);
  });

  it('answers many devices attesting at once, each with a result and a token of its own', async () => {
    const devices = await makeDevices(
      'vc-many',
      Array.from({ length: 12 }, (_, i) => `vc-m${i}`),
    );
    const answers = await Promise.all(
      devices.map(async (d) => post('/attestation/v1/evidence', await evidence(d, await nonce()))),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(12).fill(200));
    expect(answers.map((a) => a.body.result.deviceId)).toEqual(devices.map((d) => d.id));
    expect(new Set(answers.map((a) => a.body.token)).size).toBe(12);
    const enrolled = await Promise.all(devices.map((d, i) => enroll(d, answers[i]!.body.token)));
    expect(enrolled.map((e) => e.status)).toEqual(Array(12).fill(200));
  });

  it('refuses a birth certificate it has checked before once its station is revoked', async () => {
    const [d] = await makeDevices('vc-revoked', ['vc-r']);
    const first = await post('/attestation/v1/evidence', await evidence(d!, await nonce()));
    expect(first.status).toBe(200);
    expect((await tp.call('POST', '/api/v1/stations/line-vc/revoke', { body: {} })).status).toBe(200);
    const again = await post('/attestation/v1/evidence', await evidence(d!, await nonce()));
    expect(again.status).toBe(403);
    expect(again.body.detail).toMatch(/station line-vc was revoked/);
    // The token earned before the revocation does not get a certificate either.
    const late = await enroll(d!, first.body.token);
    expect(late.status).toBe(403);
    expect(late.body).toMatch(/station line-vc was revoked/);
  });
});
