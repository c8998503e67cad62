import type { KeyObject } from 'node:crypto';
import { AgentError } from '../errors.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import type { ParsedCertificate } from './certificate.js';
import { expiredCertificateMessage } from './renewal.js';
import type { IdentityStore } from './store.js';

/** What the device presents over mutual TLS: its valid certificate, the pinned root and the TLS key. */
export interface MutualTlsIdentity {
  current: ParsedCertificate;
  deviceId: string;
  rootPem: string;
  key: KeyObject;
}

/**
 * The device's current identity for a mutual-TLS connection (`purpose`: the gateway, renewal):
 * enrolled, naming a device, not expired, with the pinned root and a key the TLS stack can use.
 * Each missing piece is an AgentError that says how to fix it.
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
  const key = await anchor.tlsKey();
  if (!key)
    throw new AgentError(
      'TRUST_ANCHOR',
      `the ${anchor.kind} trust anchor cannot lend its key to the TLS stack, and ${purpose} needs mutual TLS`,
    );
  return { current, deviceId, rootPem, key };
}
