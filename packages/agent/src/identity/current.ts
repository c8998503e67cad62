import { AgentError } from '../errors.js';
import { mutualTlsFor, type MutualTls } from '../tls/mutual-tls.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import type { ParsedCertificate } from './certificate.js';
import { expiredCertificateMessage } from './renewal.js';
import type { IdentityStore } from './store.js';

/** What the device presents over mutual TLS: its valid certificate, the pinned root, and how its key signs the handshake. */
export interface MutualTlsIdentity {
  current: ParsedCertificate;
  deviceId: string;
  rootPem: string;
  /** In-process for the software anchor; through the OpenSSL tunnel for a key in a TPM or a PKCS#11 token. */
  tls: MutualTls;
}

/**
 * The device's current identity for a mutual-TLS connection (`purpose`: the gateway, renewal):
 * enrolled, naming a device, not expired, with the pinned root, and the certificate's key in the
 * trust anchor, usable for TLS where it lives. Each missing piece is an AgentError that says how to
 * fix it.
 */
export async function mutualTlsIdentity(
  store: IdentityStore,
  anchor: TrustAnchor,
  now: number,
  purpose: string,
): Promise<MutualTlsIdentity> {
  const current = store.current();
  if (!current)
    throw new AgentError(
      'NOT_ENROLLED',
      `the device has no certificate in ${store.dir} yet; enroll it first: rampart-agent enroll --token-file FILE`,
    );
  const deviceId = current.info.deviceId;
  if (!deviceId || current.commonName !== deviceId)
    throw new AgentError(
      'CERT_REFUSED',
      `${store.certFile} does not name a device (subject ${current.info.subject}); enroll again: rampart-agent enroll`,
    );
  if (now >= current.info.notAfter.getTime())
    throw new AgentError('CERT_EXPIRED', expiredCertificateMessage(current.info));
  const rootPem = store.rootPem();
  if (!rootPem)
    throw new AgentError(
      'NOT_ENROLLED',
      `${store.rootFile} is missing (it is written at enrollment); enroll again: rampart-agent enroll`,
    );
  const publicKey = await anchor.publicKey();
  if (!publicKey)
    throw new AgentError(
      'TRUST_ANCHOR',
      `the ${anchor.kind} trust anchor holds no identity key, and ${purpose} needs mutual TLS with the key ` +
        `${store.certFile} certifies; enroll again: rampart-agent enroll`,
    );
  const certified = current.x509.publicKey.export({ type: 'spki', format: 'der' });
  if (!certified.equals(publicKey.export({ type: 'spki', format: 'der' })))
    throw new AgentError(
      'CERT_REFUSED',
      `${store.certFile} certifies another key than the one in the ${anchor.kind} trust anchor; ` +
        'enroll again: rampart-agent enroll',
    );
  const tls = await mutualTlsFor(anchor);
  return { current, deviceId, rootPem, tls };
}
