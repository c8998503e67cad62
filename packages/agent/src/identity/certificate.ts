import { X509Certificate, createHash, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate, SubjectAlternativeName } from '@peculiar/asn1-x509';
import {
  OID,
  commonNameOf,
  deviceIdFromUri,
  deviceUri,
  fromPem,
  nameToString,
  serialFromBytes,
} from '@rampart/shared/pki';
import { AgentError } from '../errors.js';
import { RecentMemo } from '../recent-memo.js';

/** What the agent reports about a certificate. Dates serialize to ISO-8601 in JSON. */
export interface CertificateInfo {
  /** Lowercase hex, no separators (as `rampart` commands take it). */
  serial: string;
  subject: string;
  issuer: string;
  /** From the SAN URI `urn:rampart:device:<id>`, else the subject CN; null when neither names a device. */
  deviceId: string | null;
  notBefore: Date;
  notAfter: Date;
  /** SHA-256 of the DER certificate, lowercase hex. */
  fingerprintSha256: string;
}

/** A certificate read both ways: node:crypto for signatures, the ASN.1 structure for names and times. */
export interface ParsedCertificate {
  x509: X509Certificate;
  der: Buffer;
  info: CertificateInfo;
  commonName: string | null;
  sanUris: string[];
}

/** Certificates may be up to five minutes "in the future" on a device whose clock lags the CA's. */
export const CLOCK_SKEW_MS = 5 * 60_000;
const MAX_CHAIN_DEPTH = 5;

export function parseCertificate(der: Uint8Array): ParsedCertificate {
  let x509: X509Certificate;
  let cert: Certificate;
  try {
    x509 = new X509Certificate(der);
    cert = AsnConvert.parse(der, Certificate);
  } catch (err) {
    throw new AgentError('CERT_REFUSED', `not an X.509 certificate (${(err as Error).message})`);
  }
  const tbs = cert.tbsCertificate;
  const sanUris: string[] = [];
  for (const ext of tbs.extensions ?? []) {
    if (ext.extnID !== OID.subjectAltName) continue;
    for (const n of AsnConvert.parse(ext.extnValue.buffer, SubjectAlternativeName))
      if (n.uniformResourceIdentifier !== undefined) sanUris.push(n.uniformResourceIdentifier);
  }
  const commonName = commonNameOf(tbs.subject);
  const uriId = sanUris.map(deviceIdFromUri).find((id) => id !== null) ?? null;
  return {
    x509,
    der: Buffer.from(der),
    commonName,
    sanUris,
    info: {
      serial: serialFromBytes(tbs.serialNumber),
      subject: nameToString(tbs.subject),
      issuer: nameToString(tbs.issuer),
      deviceId: uriId ?? commonName,
      notBefore: tbs.validity.notBefore.getTime(),
      notAfter: tbs.validity.notAfter.getTime(),
      fingerprintSha256: createHash('sha256').update(der).digest('hex'),
    },
  };
}

/** Every certificate of a PEM text, as DER. */
export function certificatesFromPem(pem: string): Buffer[] {
  return fromPem(pem, 'CERTIFICATE');
}

function validAt(cert: ParsedCertificate, now: number): boolean {
  return cert.info.notBefore.getTime() - CLOCK_SKEW_MS <= now && now < cert.info.notAfter.getTime();
}

/**
 * Whether `issuer` issued `cert` and its signature over it checks out. Both certificates are
 * immutable, so the answer for a pair of objects never changes: it is remembered (weakly, per
 * object), and a certificate parsed once and kept (see `RecentMemo`) is not verified again.
 */
const issuedByMemo = new WeakMap<X509Certificate, WeakMap<X509Certificate, boolean>>();

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  let known = issuedByMemo.get(cert);
  const memo = known?.get(issuer);
  if (memo !== undefined) return memo;
  let answer: boolean;
  try {
    answer = cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    answer = false;
  }
  if (!known) issuedByMemo.set(cert, (known = new WeakMap()));
  known.set(issuer, answer);
  return answer;
}

/** A parsed certificate made read-only (the DER buffer and the X509Certificate cannot be frozen, and are not written to). */
export function frozenCertificate(cert: ParsedCertificate): ParsedCertificate {
  Object.freeze(cert.info);
  Object.freeze(cert.sanUris);
  return Object.freeze(cert);
}

/**
 * Pinned roots by the text of their file, which every connection and update check reads again: asn1js
 * is slow on a small device, and a file that changed in any way is parsed afresh.
 */
const pinnedRootsMemo = new RecentMemo<readonly ParsedCertificate[]>(8);

/**
 * The pinned root CA(s) of a PEM file: each must be a self-signed CA certificate. Throws with what
 * is wrong with the file.
 */
export function parsePinnedRoots(pem: string, file = 'the pinned root CA file'): ParsedCertificate[] {
  // The same text always gives the same roots or the same refusal (`file` only names it in the
  // refusal, and refusals are not remembered): a copy of the remembered list.
  return [
    ...pinnedRootsMemo.get(pem, (text) => Object.freeze(checkPinnedRoots(text, file).map(frozenCertificate))),
  ];
}

function checkPinnedRoots(pem: string, file: string): ParsedCertificate[] {
  const ders = certificatesFromPem(pem);
  if (ders.length === 0)
    throw new AgentError(
      'CERT_REFUSED',
      `${file} holds no PEM certificate; copy Rampart's root CA from <server-data-dir>/ca.pem`,
    );
  return ders.map((der) => {
    const root = parseCertificate(der);
    if (!root.x509.ca || !issuedBy(root.x509, root.x509))
      throw new AgentError(
        'CERT_REFUSED',
        `${file} holds ${root.info.subject}, which is not a self-signed root CA certificate; ` +
          `pin Rampart's root CA from <server-data-dir>/ca.pem`,
      );
    return root;
  });
}

/**
 * The CA certificates between `cert` and a pinned root (root excluded), each a currently valid CA
 * whose signature over the one below checks out, or null when there is no such path.
 */
export function pathToRoot(
  cert: ParsedCertificate,
  pool: readonly ParsedCertificate[],
  roots: readonly ParsedCertificate[],
  now: number,
  depth = 0,
): ParsedCertificate[] | null {
  if (roots.some((r) => validAt(r, now) && issuedBy(cert.x509, r.x509))) return [];
  if (depth >= MAX_CHAIN_DEPTH) return null;
  for (const ca of pool) {
    if (ca.info.fingerprintSha256 === cert.info.fingerprintSha256) continue;
    if (!ca.x509.ca || !validAt(ca, now) || !issuedBy(cert.x509, ca.x509)) continue;
    const rest = pathToRoot(ca, pool, roots, now, depth + 1);
    if (rest) return [ca, ...rest];
  }
  return null;
}

/** The CA certificates of an EST cacerts reply that chain to a pinned root, roots themselves left out. */
export function caCertificatesChainingTo(
  caCerts: readonly ParsedCertificate[],
  roots: readonly ParsedCertificate[],
  now: number,
): ParsedCertificate[] {
  const rootPrints = new Set(roots.map((r) => r.info.fingerprintSha256));
  return caCerts.filter(
    (c) =>
      c.x509.ca && !rootPrints.has(c.info.fingerprintSha256) && pathToRoot(c, caCerts, roots, now) !== null,
  );
}

export interface IssuedCertificateCheck {
  /** The certificates of the simpleenroll / simplereenroll reply (DER). */
  issued: readonly Uint8Array[];
  /** The certificates of the cacerts reply (DER). */
  caCertificates: readonly Uint8Array[];
  /** The pinned root CA(s), PEM. */
  rootPem: string;
  /** The device's public key: the issued certificate must certify exactly this key. */
  publicKey: KeyObject;
  deviceId: string;
  now?: number;
}

export interface CheckedIdentity {
  leaf: ParsedCertificate;
  /** The leaf's issuing CA first, up to (not including) the root. */
  path: ParsedCertificate[];
  /** Every CA certificate from cacerts (and the reply) that chains to the pinned root, path first. */
  chain: ParsedCertificate[];
  roots: ParsedCertificate[];
}

function refuse(serial: string | null, reason: string): AgentError {
  return new AgentError(
    'CERT_REFUSED',
    `refused the issued certificate${serial ? ` (serial ${serial})` : ''}: ${reason}; the current identity was kept`,
  );
}

/**
 * Check what the EST server issued before it replaces anything: the certificate certifies our key,
 * names our device (CN and SAN URI), is a currently valid end-entity certificate for TLS clients,
 * and chains through a CA from cacerts to the pinned root (every signature verified).
 */
export function checkIssuedCertificate(input: IssuedCertificateCheck): CheckedIdentity {
  const now = input.now ?? Date.now();
  const roots = parsePinnedRoots(input.rootPem);
  const issued = input.issued.map((d) => parseCertificate(d));
  if (issued.length === 0) throw refuse(null, 'the reply holds no certificate');
  const ourKey = input.publicKey.export({ type: 'spki', format: 'der' });
  const keyOf = (c: ParsedCertificate) => c.x509.publicKey.export({ type: 'spki', format: 'der' });
  const leaf = issued.find((c) => !c.x509.ca && keyOf(c).equals(ourKey));
  if (!leaf) {
    const first = issued.find((c) => !c.x509.ca) ?? issued[0]!;
    throw refuse(first.info.serial, "it certifies another public key, not the device's key");
  }
  const serial = leaf.info.serial;
  const id = input.deviceId;
  if (leaf.commonName !== id)
    throw refuse(serial, `its subject CN is ${JSON.stringify(leaf.commonName)}, not the device id "${id}"`);
  if (!leaf.sanUris.includes(deviceUri(id)))
    throw refuse(serial, `it does not carry the SAN URI ${deviceUri(id)}`);
  const other = leaf.sanUris.find((u) => u.startsWith('urn:rampart:device:') && u !== deviceUri(id));
  if (other) throw refuse(serial, `it also names another device (${other})`);
  const eku = leaf.x509.keyUsage;
  if (eku && !eku.includes(OID.kpClientAuth))
    throw refuse(serial, 'its extended key usage does not allow TLS client authentication');
  if (now < leaf.info.notBefore.getTime() - CLOCK_SKEW_MS)
    throw refuse(
      serial,
      `it is not valid before ${leaf.info.notBefore.toISOString()} (check the device clock)`,
    );
  if (now >= leaf.info.notAfter.getTime())
    throw refuse(serial, `it expired at ${leaf.info.notAfter.toISOString()}`);

  const pool = [
    ...input.caCertificates.map((d) => parseCertificate(d)),
    ...issued.filter((c) => c !== leaf && c.x509.ca),
  ];
  const path = pathToRoot(leaf, pool, roots, now);
  if (!path)
    throw refuse(
      serial,
      `it does not chain to the pinned root CA (${roots.map((r) => r.info.subject).join('; ')}) ` +
        `through a valid issuing CA from cacerts (issuer: ${leaf.info.issuer})`,
    );
  const chain = [...path];
  for (const c of caCertificatesChainingTo(pool, roots, now))
    if (!chain.some((p) => p.info.fingerprintSha256 === c.info.fingerprintSha256)) chain.push(c);
  return { leaf, path, chain, roots };
}
