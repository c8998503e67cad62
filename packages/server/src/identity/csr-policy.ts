import { OID, deviceUri, type ParsedCsr } from '@rampart/shared/pki';

/**
 * What Rampart refuses in a CSR before any policy looks at who is asking: an invalid
 * self-signature, weak keys, SHA-1, CA rights and extensions it would not honour. Each reason says
 * what was wrong, so the device maker can fix the request.
 */
export interface CsrRejection {
  reason: string;
}

/** Extensions a device may ask for; the certificate's content is set by the profile regardless. */
const ALLOWED_REQUESTED = new Set<string>([
  OID.subjectAltName,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.basicConstraints,
  OID.subjectKeyIdentifier,
]);

export function checkCsr(csr: ParsedCsr): CsrRejection | null {
  if (csr.key.type === 'ec' && csr.key.curve !== 'P-256' && csr.key.curve !== 'P-384')
    return { reason: `the key is on curve ${csr.key.curve}; use P-256 or P-384` };
  if (csr.key.type === 'rsa' && csr.key.bits < 2048)
    return { reason: `the key is RSA-${csr.key.bits}; RSA keys must have at least 2048 bits` };
  if (csr.key.type === 'other')
    return {
      reason: `the key type ${csr.key.description} is not accepted; use ECDSA P-256/P-384 or RSA ≥ 2048`,
    };
  if (csr.signatureHash === 'sha1')
    return {
      reason: `the CSR is signed with ${csr.signatureAlgorithm}; SHA-1 is refused, sign with SHA-256 or stronger`,
    };
  if (csr.signatureHash === null)
    return { reason: `the CSR signature algorithm ${csr.signatureAlgorithm} is not accepted` };
  if (!csr.signatureValid) return { reason: 'the CSR signature does not verify with the key it contains' };
  if (csr.requestsCa)
    return { reason: 'the CSR asks for CA rights (basicConstraints cA=TRUE); devices cannot be CAs' };
  const unknown = csr.extensions.find((e) => !ALLOWED_REQUESTED.has(e.oid));
  if (unknown && unknown.critical)
    return { reason: `the CSR requests the critical extension ${unknown.oid}, which Rampart does not issue` };
  return null;
}

/** The requested identity must be exactly the device the credentials belong to. */
export function checkDeviceIdentity(csr: ParsedCsr, deviceId: string): CsrRejection | null {
  if (csr.commonName !== deviceId)
    return {
      reason: `the CSR subject CN is ${csr.commonName === null ? 'missing' : `"${csr.commonName}"`}, but the credentials are for device "${deviceId}"; put the device id in the CN`,
    };
  const expected = deviceUri(deviceId);
  const otherUri = csr.sanUris.find((u) => u !== expected);
  if (otherUri)
    return { reason: `the CSR asks for SAN URI ${otherUri}; only ${expected} can be issued to this device` };
  if (csr.sanOther.length)
    return {
      reason: `the CSR asks for SAN ${csr.sanOther.join(', ')}; device certificates carry only ${expected}`,
    };
  return null;
}
