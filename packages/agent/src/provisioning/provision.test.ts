import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { MeasuredComponent } from '@rampart/shared/attestation';
import { evidenceProblem } from '@rampart/shared/provisioning';
import { measure, measurementStore } from '../attestation/measurements.js';
import { EstClient } from '../est/client.js';
import { renewDevice } from '../identity/enroll.js';
import { IdentityStore } from '../identity/store.js';
import { startFakeEst } from '../test-support/est-server.js';
import { provisionAtFactory } from '../test-support/factory.js';
import { startFakePlatform, textReply, type FakePlatform } from '../test-support/platform.js';
import { TestPki, type TestCa } from '../test-support/pki.js';
import { SoftwareTrustAnchor } from '../trust-anchor/software.js';
import { AttestationClient } from './client.js';
import { collectEvidence } from './evidence.js';
import { provisionDevice } from './provision.js';

let pki: TestPki;
let root: TestCa;
let issuing: TestCa;
let station: TestCa;
let platform: FakePlatform;

beforeAll(async () => {
  pki = new TestPki();
  root = pki.rootCa('Test Root CA');
  issuing = pki.issuingCa('Test Issuing CA', root);
  station = pki.issuingCa('Station 1 CA', root);
  platform = await startFakePlatform(pki, root, issuing);
});
afterAll(() => platform.close());
beforeEach(() => {
  platform.verifier.references.clear();
  platform.verifier.tokenOnWarning = false;
});

const IMAGES: [MeasuredComponent, string][] = [
  ['bootloader', 'u-boot 2026.01'],
  ['os', 'rootfs 2026.11'],
  ['application', 'app 4.2.0'],
  ['configuration', 'config.yaml'],
];

/** A device as it leaves the factory and boots: birth identity written, boot stages measured. */
async function device(deviceId: string) {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-provision-'));
  const { anchor, birth } = await provisionAtFactory({ pki, root, station, dataDir, deviceId });
  const { register, log } = measurementStore(dataDir, null);
  for (const [component, description] of IMAGES)
    await measure({ register, log, component, data: Buffer.from(description), description });
  const store = new IdentityStore(dataDir);
  // Before the first certificate the device trusts the root from its birth identity, nothing else.
  const est = new EstClient({ url: platform.url, caPem: birth.rootPem, caFile: birth.files.rootCa });
  return { dataDir, anchor, birth, store, est, log };
}

/** The operator registers the reference values of what the devices run. */
function registerReferences(log: ReturnType<typeof measurementStore>['log']) {
  for (const e of log.read().events)
    platform.verifier.references.set(
      e.component,
      (platform.verifier.references.get(e.component) ?? new Set()).add(e.digest),
    );
}

describe('zero-touch provisioning', () => {
  it('attests with a fresh nonce, then enrolls with the attestation token as bearer', async () => {
    const d = await device('dw-0500');
    registerReferences(d.log);
    const before = platform.requests.length;
    const outcome = await provisionDevice(d);
    expect(outcome.refusal).toBeNull();
    expect(outcome.attestation).toMatchObject({
      deviceId: 'dw-0500',
      status: 'affirming',
      anchor: 'software',
      reasons: [],
    });
    expect(outcome.certificate).toMatchObject({ deviceId: 'dw-0500', issuer: 'CN=Test Issuing CA' });
    expect(d.store.current()!.info).toEqual(outcome.certificate);
    expect(readFileSync(d.store.rootFile, 'utf8')).toBe(root.pem);

    const requests = platform.requests.slice(before);
    expect(requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      'POST /attestation/v1/nonce',
      'POST /attestation/v1/evidence',
      'GET /.well-known/est/cacerts',
      'POST /.well-known/est/simpleenroll',
    ]);
    expect(requests[0]!.headers['content-type']).toBe('application/json');
    expect(JSON.parse(requests[0]!.body)).toEqual({});
    const evidence = JSON.parse(requests[1]!.body) as Record<string, unknown>;
    expect(evidenceProblem(evidence)).toBeNull();
    expect(evidence).toMatchObject({
      deviceId: 'dw-0500',
      anchor: 'software',
      birthCertificates: d.birth.certificates,
    });
    expect(requests[3]!.headers.authorization).toMatch(/^Bearer rpa_[0-9a-f]+$/);
    expect(requests[3]!.clientCert).toBeNull();
    // The token was used up.
    expect(platform.verifier.tokens.size).toBe(0);
  });

  it('renews a provisioned device with a fresh attestation token over mutual TLS', async () => {
    const d = await device('dw-0501');
    registerReferences(d.log);
    const first = (await provisionDevice(d)).certificate!;
    const renewalEst = new EstClient({ url: platform.url, caPem: d.store.rootPem()! });
    const before = platform.requests.length;
    const renewed = await renewDevice({ anchor: d.anchor, store: d.store, est: renewalEst });
    expect(renewed.serial).not.toBe(first.serial);
    const requests = platform.requests.slice(before);
    expect(requests.map((r) => r.path)).toEqual([
      '/.well-known/est/cacerts',
      '/attestation/v1/nonce',
      '/attestation/v1/evidence',
      '/.well-known/est/simplereenroll',
    ]);
    const reenroll = requests[3]!;
    expect(reenroll.clientCert!.serialNumber.toLowerCase()).toBe(first.serial);
    expect(reenroll.headers.authorization).toMatch(/^Bearer rpa_/);
    expect(JSON.parse(requests[2]!.body)).toMatchObject({
      deviceId: 'dw-0501',
      birthCertificates: d.birth.certificates,
    });

    // Measured software the platform does not know: renewal is refused and the certificate kept.
    const { register, log } = measurementStore(d.dataDir, null);
    await measure({
      register,
      log,
      component: 'application',
      data: Buffer.from('implant'),
      description: 'implant',
    });
    const kept = readFileSync(d.store.certFile, 'utf8');
    await expect(renewDevice({ anchor: d.anchor, store: d.store, est: renewalEst })).rejects.toMatchObject({
      code: 'ATTESTATION_REFUSED',
      message: expect.stringMatching(
        /found device dw-0501 contraindicated: application measurement [0-9a-f]{16}… \(implant\) is not among the reference values.*rampart attestation reference add … for model DW100.*rampart-agent renew/,
      ),
    });
    expect(readFileSync(d.store.certFile, 'utf8')).toBe(kept);
  });

  it('gets no certificate when the verifier finds the device contraindicated, and says what it found', async () => {
    const d = await device('dw-0502');
    registerReferences(d.log);
    platform.verifier.references.set('os', new Set(['ab'.repeat(32)]));
    const outcome = await provisionDevice(d);
    expect(outcome.certificate).toBeNull();
    expect(outcome.attestation.status).toBe('contraindicated');
    expect(outcome.attestation.reasons).toEqual([
      expect.stringMatching(
        /^os measurement [0-9a-f]{16}… \(rootfs 2026\.11\) is not among the reference values of model DW100$/,
      ),
    ]);
    expect(outcome.refusal).toMatchObject({
      code: 'ATTESTATION_REFUSED',
      message: expect.stringMatching(
        /contraindicated: os measurement .*no attestation token.*reference values \(rampart attestation reference add … for model DW100\).*run rampart-agent provision again \(attestation result att_/,
      ),
    });
    expect(d.store.current()).toBeNull();
    expect(readdirSync(d.store.dir).sort()).toEqual(['birth', 'device-key.pem']);
  });

  it('gets no certificate on a warning unless the policy admits warnings', async () => {
    const d = await device('dw-0503');
    // No reference values registered at all: every component is unreferenced.
    let outcome = await provisionDevice(d);
    expect(outcome.attestation.status).toBe('warning');
    expect(outcome.certificate).toBeNull();
    expect(outcome.refusal!.message).toMatch(
      /with warnings: no reference values are registered for bootloader of model DW100; .*admits it only when affirming.*rampart attestation reference add/,
    );
    platform.verifier.tokenOnWarning = true;
    outcome = await provisionDevice(d);
    expect(outcome.attestation.status).toBe('warning');
    expect(outcome.certificate).toMatchObject({ deviceId: 'dw-0503' });
  });

  it('checks the birth identity against the trust anchor before sending anything', async () => {
    const d = await device('dw-0504');
    const before = platform.requests.length;
    await expect(
      provisionDevice({ ...d, birth: { ...d.birth, device: { ...d.birth.device, trustAnchor: 'tpm' } } }),
    ).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringMatching(
        /provisioned this device with a tpm trust anchor .*RAMPART_AGENT_TRUST_ANCHOR=tpm/,
      ),
    });
    const other = new SoftwareTrustAnchor(join(d.dataDir, 'other-key.pem'));
    await other.ensureKey();
    await expect(provisionDevice({ ...d, anchor: other })).rejects.toMatchObject({
      code: 'BIRTH_IDENTITY',
      message: expect.stringMatching(/certifies another key than the one in the software trust anchor/),
    });
    const empty = new SoftwareTrustAnchor(join(d.dataDir, 'no-key.pem'));
    await expect(provisionDevice({ ...d, anchor: empty })).rejects.toMatchObject({ code: 'BIRTH_IDENTITY' });
    expect(platform.requests.length).toBe(before);
  });
});

describe('the attestation client', () => {
  it("surfaces the verifier's problem detail when it refuses the evidence", async () => {
    const d = await device('dw-0600');
    const client = new AttestationClient(d.est);
    const { nonce, expiresAt } = await client.nonce();
    expect(Date.parse(expiresAt)).toBeGreaterThan(Date.now());
    // Evidence made for another nonce, presented with the one handed out: not authentic.
    const evidence = await collectEvidence({
      anchor: d.anchor,
      dataDir: d.dataDir,
      nonce: randomBytes(24).toString('base64url'),
      deviceId: 'dw-0600',
      birthCertificates: d.birth.certificates,
    });
    await expect(client.submit({ ...evidence, nonce })).rejects.toMatchObject({
      code: 'EST_REFUSED',
      status: 422,
      serverMessage:
        'the evidence is not authentic: the statement is not over this nonce and key (a replayed or redirected statement)',
      message: expect.stringMatching(
        /^attestation failed: the platform answered 422: "the evidence is not authentic: .*"\. The verifier refused the evidence/,
      ),
    });
    // The nonce is used up either way.
    await expect(client.submit({ ...evidence, nonce })).rejects.toMatchObject({
      status: 409,
      message: expect.stringMatching(/unknown, used or expired.*run the command again for a new one/),
    });
  });

  it('says when the platform has no attestation endpoints, or answers something else', async () => {
    const d = await device('dw-0601');
    let reply = textReply(404, 'Not Found');
    const server = await startFakeEst({ ...pki.serverCert(issuing), handle: () => reply });
    try {
      const client = new AttestationClient(new EstClient({ url: server.url, caPem: root.pem }));
      await expect(client.nonce()).rejects.toMatchObject({
        code: 'EST_REFUSED',
        message: expect.stringMatching(
          /offers no remote attestation at \/attestation\/v1.*rampart-agent enroll/,
        ),
      });
      reply = { status: 200, headers: { 'content-type': 'text/html' }, body: '<html></html>' };
      await expect(client.nonce()).rejects.toMatchObject({
        code: 'EST_BAD_RESPONSE',
        message: expect.stringMatching(
          /reply to nonce is not what the attestation protocol promises: its content type/,
        ),
      });
      reply = { status: 200, headers: { 'content-type': 'application/json' }, body: '{"result": {}}' };
      const evidence = await collectEvidence({
        anchor: d.anchor,
        dataDir: d.dataDir,
        nonce: 'n'.repeat(16),
        deviceId: 'dw-0601',
      });
      await expect(client.submit(evidence)).rejects.toMatchObject({
        code: 'EST_BAD_RESPONSE',
        message: expect.stringMatching(/it has no attestation result/),
      });
      expect(server.requests.map((r) => r.path)).toEqual([
        '/attestation/v1/nonce',
        '/attestation/v1/nonce',
        '/attestation/v1/evidence',
      ]);
    } finally {
      await server.close();
    }
  });
});
