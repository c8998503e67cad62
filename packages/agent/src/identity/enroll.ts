import type { EventLog, MeasurementRegister } from '../attestation/measurements.js';
import { AgentError } from '../errors.js';
import type { EnrollmentCredentials, EstClient } from '../est/client.js';
import { readBirthIdentity } from '../provisioning/birth.js';
import { attestDevice, attestationRefusal } from '../provisioning/client.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { parsePinnedRoots, type CertificateInfo } from './certificate.js';
import { checkDeviceId, createDeviceCsr } from './csr.js';
import { mutualTlsIdentity } from './current.js';
import type { IdentityStore } from './store.js';

export interface EnrollOptions {
  anchor: TrustAnchor;
  store: IdentityStore;
  /** An EST client that trusts `rootPem` (and only it). */
  est: EstClient;
  /** The root CA the operator pinned (PEM); copied to identity/root-ca.pem once enrollment succeeds. */
  rootPem: string;
  deviceId: string;
  credentials: EnrollmentCredentials;
  now?: () => number;
}

/**
 * Enroll the device: create the key in the trust anchor if needed, fetch the CA certificates,
 * send a CSR with the one-time token, check what comes back and save it. Nothing is replaced
 * unless every check passes.
 */
export async function enrollDevice(options: EnrollOptions): Promise<CertificateInfo> {
  const { anchor, store, est, rootPem } = options;
  const deviceId = checkDeviceId(options.deviceId);
  parsePinnedRoots(rootPem);
  const publicKey = await anchor.ensureKey();
  const caCertificates = await est.cacerts();
  const csr = await createDeviceCsr(anchor, deviceId);
  const issued = await est.simpleEnroll(csr, options.credentials);
  const checked = store.install({
    issued,
    caCertificates,
    rootPem,
    publicKey,
    deviceId,
    now: (options.now ?? Date.now)(),
  });
  return checked.leaf.info;
}

export interface RenewOptions {
  anchor: TrustAnchor;
  store: IdentityStore;
  /** An EST client that trusts the root pinned at enrollment (store.rootPem()). */
  est: EstClient;
  /** The configured device id, if any: it must be the one the certificate names. */
  deviceId?: string | undefined;
  /** For a device with a birth identity: another register and log than the data directory's (tests). */
  measurements?: { register: MeasurementRegister; log: EventLog };
  now?: () => number;
}

/**
 * Renew the device certificate through EST simplereenroll, authenticated by the current
 * certificate over mutual TLS, signed where the key lives (in-process for the software anchor,
 * through the OpenSSL tunnel in the TPM or the PKCS#11 token). The key stays the same. Throws NOT_ENROLLED without a certificate
 * and CERT_EXPIRED once it has expired (then only a new enrollment with a new token helps).
 *
 * A device with a birth identity (zero-touch provisioning) attests first, with a fresh nonce, and
 * sends the attestation token along (`Authorization: Bearer`): every renewal carries a current
 * appraisal of what the device runs. Without a token it throws ATTESTATION_REFUSED and keeps the
 * current certificate.
 */
export async function renewDevice(options: RenewOptions): Promise<CertificateInfo> {
  const { anchor, store, est } = options;
  const now = (options.now ?? Date.now)();
  const { deviceId, rootPem, tls } = await mutualTlsIdentity(store, anchor, now, 'renewal');
  if (options.deviceId && options.deviceId !== deviceId)
    throw new AgentError(
      'USAGE',
      `the device certificate is for "${deviceId}" but the configuration says device id "${options.deviceId}"; ` +
        'fix deviceId (RAMPART_AGENT_DEVICE_ID), or enroll again as the configured device',
    );
  // mutualTlsIdentity checked that the certificate is for this key.
  const publicKey = await anchor.ensureKey();
  const caCertificates = await est.cacerts();
  const csr = await createDeviceCsr(anchor, deviceId);
  const birth = readBirthIdentity(store.dataDir);
  let bearer: string | undefined;
  if (birth) {
    const { result, token } = await attestDevice({
      anchor,
      est,
      dataDir: store.dataDir,
      measurements: options.measurements,
      deviceId,
      birthCertificates: birth.certificates,
    });
    if (!token)
      throw attestationRefusal(result, {
        model: birth.device.model,
        again: 'renew again: rampart-agent renew (rampart-agent run retries by itself)',
      });
    bearer = token;
  }
  const issued = await est.simpleReenroll(
    csr,
    { certPem: store.clientCertificatePem(), tls },
    deviceId,
    bearer,
  );
  const checked = store.install({
    issued,
    caCertificates,
    rootPem,
    publicKey,
    deviceId,
    now: (options.now ?? Date.now)(),
  });
  return checked.leaf.info;
}
