import type { EventLog, MeasurementRegister } from '../attestation/measurements.js';
import { AgentError } from '../errors.js';
import type { EstClient } from '../est/client.js';
import type { CertificateInfo } from '../identity/certificate.js';
import { checkDeviceId } from '../identity/csr.js';
import { enrollDevice } from '../identity/enroll.js';
import type { IdentityStore } from '../identity/store.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import type { BirthIdentity } from './birth.js';
import { attestDevice, attestationRefusal, type AttestationResult } from './client.js';

export interface ProvisionOptions {
  anchor: TrustAnchor;
  store: IdentityStore;
  /** An EST client that trusts the birth identity's root CA (and only it). */
  est: EstClient;
  birth: BirthIdentity;
  /** Another register and log than the data directory's (tests). */
  measurements?: { register: MeasurementRegister; log: EventLog };
  now?: () => number;
}

export interface ProvisionOutcome {
  deviceId: string;
  attestation: AttestationResult;
  /** The certificate installed, or null when the verifier issued no token. */
  certificate: CertificateInfo | null;
  /** Why the device got no certificate (what the verifier found, what to do), or null. */
  refusal: AgentError | null;
}

/** The birth identity must be this device's: the anchor the factory used, the key it certified. */
async function checkBirthIdentity(anchor: TrustAnchor, birth: BirthIdentity): Promise<void> {
  if (birth.device.trustAnchor !== anchor.kind)
    throw new AgentError(
      'USAGE',
      `the factory provisioned this device with a ${birth.device.trustAnchor} trust anchor (${birth.files.device}), ` +
        `but the configuration says trustAnchor ${anchor.kind}; set RAMPART_AGENT_TRUST_ANCHOR=${birth.device.trustAnchor}`,
    );
  const key = await anchor.publicKey();
  if (!key)
    throw new AgentError(
      'BIRTH_IDENTITY',
      `the ${anchor.kind} trust anchor holds no device key, but ${birth.files.certificate} certifies one: ` +
        'the key the factory created is gone (a reset trust anchor, or another data directory); ' +
        'the device must be provisioned again at the factory, or enrolled with a one-time token (rampart-agent enroll)',
    );
  const der = key.export({ type: 'spki', format: 'der' });
  if (!birth.birthCertificate.x509.publicKey.export({ type: 'spki', format: 'der' }).equals(der))
    throw new AgentError(
      'BIRTH_IDENTITY',
      `the birth certificate in ${birth.files.certificate} certifies another key than the one in the ` +
        `${anchor.kind} trust anchor; the birth identity belongs to another device or an older key`,
    );
}

/**
 * Zero-touch provisioning: prove to the platform's verifier what the device is and runs (remote
 * attestation with a fresh nonce), and with the attestation token it hands out, enroll over EST
 * (`simpleenroll`, `Authorization: Bearer`) exactly as with a one-time token. The birth identity's
 * root CA is pinned for both and saved as the device's root once the certificate is installed.
 * Without a token nothing is changed and `refusal` says what the verifier found.
 */
export async function provisionDevice(options: ProvisionOptions): Promise<ProvisionOutcome> {
  const { anchor, store, est, birth } = options;
  const deviceId = checkDeviceId(birth.device.deviceId);
  await checkBirthIdentity(anchor, birth);
  const { result, token } = await attestDevice({
    anchor,
    est,
    dataDir: store.dataDir,
    measurements: options.measurements,
    deviceId,
    birthCertificates: birth.certificates,
  });
  if (!token)
    return {
      deviceId,
      attestation: result,
      certificate: null,
      refusal: attestationRefusal(result, { model: birth.device.model }),
    };
  const certificate = await enrollDevice({
    anchor,
    store,
    est,
    rootPem: birth.rootPem,
    deviceId,
    credentials: { bearer: token },
    now: options.now,
  });
  return { deviceId, attestation: result, certificate, refusal: null };
}
