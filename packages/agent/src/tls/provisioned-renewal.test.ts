import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MeasuredComponent } from '@rampart/shared/attestation';
import { measure, measurementStore } from '../attestation/measurements.js';
import { EstClient } from '../est/client.js';
import { renewDevice } from '../identity/enroll.js';
import { IdentityStore } from '../identity/store.js';
import { provisionDevice } from '../provisioning/provision.js';
import { provisionAtFactory } from '../test-support/factory.js';
import { startFakePlatform, type FakePlatform } from '../test-support/platform.js';
import { TestPki, type TestCa } from '../test-support/pki.js';
import { createSoftHsmToken, type SoftHsmToken } from '../test-support/softhsm.js';
import { startSwtpm, type Swtpm } from '../test-support/swtpm.js';
import { Pkcs11TrustAnchor } from '../trust-anchor/pkcs11.js';
import { TpmTrustAnchor } from '../trust-anchor/tpm.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { startTpmResourceManager, type TpmResourceManager } from './test-support/tpm-resource-manager.js';

/**
 * Zero-touch devices with hardware keys renew as the agent does it: a fresh attestation (TPM quote,
 * or a statement signed in the token) and then simplereenroll over mutual TLS through the OpenSSL
 * tunnel, against the EST and attestation endpoints as the platform answers them.
 */
let pki: TestPki;
let root: TestCa;
let station: TestCa;
let platform: FakePlatform;
let swtpm: Swtpm;
let rm: TpmResourceManager;
let token: SoftHsmToken;
const anchors: TrustAnchor[] = [];

beforeAll(async () => {
  token = createSoftHsmToken();
  pki = new TestPki();
  root = pki.rootCa('Test Root CA');
  station = pki.issuingCa('Station 1 CA', root);
  [platform, swtpm] = await Promise.all([
    startFakePlatform(pki, root, pki.issuingCa('Test Issuing CA', root)),
    startSwtpm(),
  ]);
  rm = await startTpmResourceManager(swtpm.tcti);
}, 60_000);
afterAll(async () => {
  await Promise.all(anchors.map((a) => a.close?.()));
  token?.cleanup();
  await rm?.stop();
  await swtpm?.stop();
  await platform?.close();
});

const IMAGES: [MeasuredComponent, string][] = [
  ['bootloader', 'u-boot 2026.01'],
  ['os', 'rootfs 2026.11'],
];

describe.each(['tpm', 'pkcs11'] as const)('a provisioned device with a %s key', (kind) => {
  it('renews with a fresh attestation token over mutual TLS signed in the chip', async () => {
    const deviceId = `dw-zt-${kind}`;
    const dataDir = mkdtempSync(join(tmpdir(), 'agent-zt-tls-'));
    const anchor =
      kind === 'tpm'
        ? new TpmTrustAnchor({ dir: join(dataDir, 'identity', 'tpm'), tcti: rm.tcti })
        : new Pkcs11TrustAnchor({
            module: token.module,
            tokenLabel: token.tokenLabel,
            pin: token.pin,
            keyLabel: deviceId,
          });
    anchors.push(anchor);
    const { birth } = await provisionAtFactory({
      pki,
      root,
      station,
      dataDir,
      deviceId,
      anchor,
      device: { trustAnchor: kind },
    });
    // Measured boot: into the TPM's PCRs, or the software register for the token.
    const { register, log } = measurementStore(dataDir, kind === 'tpm' ? rm.tcti : null);
    for (const [component, description] of IMAGES)
      await measure({ register, log, component, data: Buffer.from(description), description });
    for (const e of log.read().events)
      platform.verifier.references.set(
        e.component,
        (platform.verifier.references.get(e.component) ?? new Set()).add(e.digest),
      );
    const store = new IdentityStore(dataDir);
    const est = new EstClient({ url: platform.url, caPem: birth.rootPem });
    const first = await provisionDevice({ anchor, store, est, birth });
    expect(first.refusal).toBeNull();

    const before = platform.requests.length;
    const renewed = await renewDevice({
      anchor,
      store,
      est: new EstClient({ url: platform.url, caPem: store.rootPem()! }),
    });
    expect(renewed.serial).not.toBe(first.certificate!.serial);
    const requests = platform.requests.slice(before);
    expect(requests.map((r) => r.path)).toEqual([
      '/.well-known/est/cacerts',
      '/attestation/v1/nonce',
      '/attestation/v1/evidence',
      '/.well-known/est/simplereenroll',
    ]);
    const reenroll = requests[3]!;
    // Authenticated by the previous certificate, presented by the tunnel, and by a fresh token.
    expect(reenroll.clientVerified).toBe(true);
    expect(reenroll.clientCert!.serialNumber.toLowerCase()).toBe(first.certificate!.serial);
    expect(reenroll.headers.authorization).toMatch(/^Bearer rpa_[0-9a-f]+$/);
    expect(platform.verifier.statuses.at(-1)).toBe('affirming');
  });
});
