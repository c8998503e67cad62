import { mutualTlsIdentity } from '../identity/current.js';
import type { IdentityStore } from '../identity/store.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';

/** What the device presents and trusts on the gateway connection. */
export interface ConnectionCredentials {
  /** The device certificate followed by its CA chain up to (not including) the root, PEM. */
  certPem: string;
  /** The device's private key (PKCS#8 PEM), for the TLS stack. */
  keyPem: string;
  /** The pinned root CA (PEM): the only certificate authority the gateway's certificate may chain to. */
  caPem: string;
  /** The device id the certificate names: the MQTT client id. */
  deviceId: string;
  /** Serial of the device certificate (lowercase hex), for logs and status. */
  serial: string;
  notAfter: Date;
}

/**
 * The credentials of the device's current identity: its certificate and chain from the identity
 * store, its key from the trust anchor, and the root pinned at enrollment. Read again on every
 * connection attempt, so that a renewed certificate is used as soon as it is installed.
 */
export async function identityCredentials(
  store: IdentityStore,
  anchor: TrustAnchor,
  now: () => number = Date.now,
): Promise<ConnectionCredentials> {
  const {
    current,
    deviceId,
    rootPem: caPem,
    key,
  } = await mutualTlsIdentity(store, anchor, now(), 'the gateway');
  return {
    certPem: store.clientCertificatePem(),
    keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string,
    caPem,
    deviceId,
    serial: current.info.serial,
    notAfter: current.info.notAfter,
  };
}
