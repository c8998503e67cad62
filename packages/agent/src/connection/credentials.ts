import { mutualTlsIdentity } from '../identity/current.js';
import type { IdentityStore } from '../identity/store.js';
import type { MutualTls } from '../tls/mutual-tls.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';

/** What the device presents and trusts on the gateway connection. */
export interface ConnectionCredentials {
  /** The device certificate followed by its CA chain up to (not including) the root, PEM. */
  certPem: string;
  /**
   * How the handshake is signed with the device key: by Node's TLS stack (software anchor) or by the
   * OpenSSL tunnel in the TPM or the PKCS#11 token. The key never leaves a hardware anchor.
   */
  tls: MutualTls;
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
 * store, its key's TLS signer from the trust anchor, and the root pinned at enrollment. Read again on every
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
    tls,
  } = await mutualTlsIdentity(store, anchor, now(), 'the gateway');
  return {
    certPem: store.clientCertificatePem(),
    tls,
    caPem,
    deviceId,
    serial: current.info.serial,
    notAfter: current.info.notAfter,
  };
}
