import { AgentError } from '../errors.js';
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
  const current = store.current();
  if (!current)
    throw new AgentError(
      'NOT_ENROLLED',
      `the device has no certificate in ${store.dir} yet; enroll it first: rampart-agent enroll --token-file FILE`,
    );
  const deviceId = current.info.deviceId;
  if (!deviceId)
    throw new AgentError(
      'CERT_REFUSED',
      `${store.certFile} does not name a device (subject ${current.info.subject}); enroll again: rampart-agent enroll`,
    );
  if (now() >= current.info.notAfter.getTime())
    throw new AgentError(
      'CERT_EXPIRED',
      `the device certificate (serial ${current.info.serial}) expired at ${current.info.notAfter.toISOString()}; ` +
        'the gateway refuses it and it cannot be renewed: enroll again with a new one-time token (rampart-agent enroll)',
    );
  const caPem = store.rootPem();
  if (!caPem)
    throw new AgentError(
      'NOT_ENROLLED',
      `${store.rootFile} is missing (it is written at enrollment); enroll again: rampart-agent enroll`,
    );
  const key = await anchor.tlsKey();
  if (!key)
    throw new AgentError(
      'TRUST_ANCHOR',
      `the ${anchor.kind} trust anchor cannot lend its key to the TLS stack, and the gateway needs mutual TLS`,
    );
  return {
    certPem: store.clientCertificatePem(),
    keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string,
    caPem,
    deviceId,
    serial: current.info.serial,
    notAfter: current.info.notAfter,
  };
}
