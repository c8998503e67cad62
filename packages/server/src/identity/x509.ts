import { createHash, createPublicKey, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import type { Name } from '@peculiar/asn1-x509';
import {
  AccessDescription,
  AlgorithmIdentifier,
  AuthorityInfoAccessSyntax,
  AuthorityKeyIdentifier,
  BasicConstraints,
  CRLDistributionPoints,
  Certificate,
  DistributionPoint,
  DistributionPointName,
  ExtendedKeyUsage,
  Extension,
  GeneralName,
  KeyIdentifier,
  KeyUsage,
  KeyUsageFlags,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
} from '@peculiar/asn1-x509';
import {
  OID,
  der,
  deviceIdFromUri,
  readDer,
  serialToBytes,
  subjectPublicKeyBits,
  tlv,
  toPem,
} from '@rampart/shared/pki';
import type { KeyAlgorithm, PlatformKey } from '../keystore/index.js';

/**
 * Building and signing X.509 structures with a `PlatformKey`. The ASN.1 comes from
 * `@peculiar/asn1-x509`; the signature comes from the key store, so a CA key in an HSM signs the
 * same bytes a key in the file store would.
 */

const SIGNATURE_OID: Record<KeyAlgorithm, string | null> = {
  'ec-p256': OID.ecdsaWithSha256,
  'ec-p384': OID.ecdsaWithSha384,
  'rsa-2048': OID.sha256WithRsa,
  'rsa-3072': OID.sha256WithRsa,
  ed25519: null,
};

export function signatureAlgorithmOf(key: PlatformKey): AlgorithmIdentifier {
  const oid = SIGNATURE_OID[key.algorithm];
  if (!oid) throw new Error(`a ${key.algorithm} key cannot sign X.509 objects in Rampart's CA`);
  // RSA algorithm identifiers carry NULL parameters; ECDSA ones carry none (RFC 5758).
  return new AlgorithmIdentifier({
    algorithm: oid,
    parameters: oid === OID.sha256WithRsa ? null : undefined,
  });
}

export function spkiDerOf(key: KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value. */
export function keyIdentifierOf(spkiDer: Uint8Array): Buffer {
  return createHash('sha1').update(subjectPublicKeyBits(spkiDer)).digest();
}

/** SHA-256 of the DER SubjectPublicKeyInfo, hex: the key fingerprint recorded with every certificate. */
/** Whether `issuer` issued `cert`: names chain and its key verifies the signature. */
export function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

export function keyFingerprintOf(spkiDer: Uint8Array): string {
  return createHash('sha256').update(spkiDer).digest('hex');
}

/** A random positive 128-bit serial whose first octet is 0x10–0x7f, so it always prints as 32 hex digits. */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = 0x10 + (b[0]! % 0x70);
  return b.toString('hex');
}

function ext(oid: string, critical: boolean, value: unknown): Extension {
  return new Extension({ extnID: oid, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

export const extensions = {
  basicConstraints(ca: boolean, pathLen?: number): Extension {
    return ext(
      OID.basicConstraints,
      true,
      new BasicConstraints(
        ca ? { cA: true, ...(pathLen !== undefined ? { pathLenConstraint: pathLen } : {}) } : {},
      ),
    );
  },
  keyUsage(flags: KeyUsageFlags): Extension {
    return ext(OID.keyUsage, true, new KeyUsage(flags));
  },
  extKeyUsage(...purposes: string[]): Extension {
    return ext(OID.extKeyUsage, false, new ExtendedKeyUsage(purposes));
  },
  subjectKeyIdentifier(spkiDer: Uint8Array): Extension {
    return ext(OID.subjectKeyIdentifier, false, new SubjectKeyIdentifier(keyIdentifierOf(spkiDer)));
  },
  authorityKeyIdentifier(issuerSpkiDer: Uint8Array): Extension {
    return ext(
      OID.authorityKeyIdentifier,
      false,
      new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(keyIdentifierOf(issuerSpkiDer)) }),
    );
  },
  subjectAltName(names: { uri?: string[]; dns?: string[]; ip?: string[] }): Extension {
    const items = [
      ...(names.uri ?? []).map((u) => new GeneralName({ uniformResourceIdentifier: u })),
      ...(names.dns ?? []).map((d) => new GeneralName({ dNSName: d })),
      ...(names.ip ?? []).map((i) => new GeneralName({ iPAddress: i })),
    ];
    return ext(OID.subjectAltName, false, new SubjectAlternativeName(items));
  },
  crlDistributionPoint(url: string): Extension {
    return ext(
      OID.cRLDistributionPoints,
      false,
      new CRLDistributionPoints([
        new DistributionPoint({
          distributionPoint: new DistributionPointName({
            fullName: [new GeneralName({ uniformResourceIdentifier: url })],
          }),
        }),
      ]),
    );
  },
  authorityInfoAccess(access: { ocsp?: string; caIssuers?: string }): Extension {
    const items: AccessDescription[] = [];
    if (access.ocsp)
      items.push(
        new AccessDescription({
          accessMethod: OID.accessOcsp,
          accessLocation: new GeneralName({ uniformResourceIdentifier: access.ocsp }),
        }),
      );
    if (access.caIssuers)
      items.push(
        new AccessDescription({
          accessMethod: OID.accessCaIssuers,
          accessLocation: new GeneralName({ uniformResourceIdentifier: access.caIssuers }),
        }),
      );
    return ext(OID.authorityInfoAccess, false, new AuthorityInfoAccessSyntax(items));
  },
  /** id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): clients need not check the OCSP signer's own status. */
  ocspNoCheck(): Extension {
    return new Extension({
      extnID: OID.ocspNoCheck,
      critical: false,
      extnValue: new OctetString(Buffer.from([0x05, 0x00])),
    });
  },
};
export { KeyUsageFlags };

/** An extension as a schema object, or already DER-encoded (cached per CA for the hot path). */
export type ExtensionInput = Extension | Buffer;

export interface CertificateTemplate {
  serial: string;
  /** The issuer's subject Name, or its DER. */
  issuer: Name | Buffer;
  subject: Name | Buffer;
  notBefore: Date;
  notAfter: Date;
  subjectPublicKeyDer: Uint8Array;
  extensions: ExtensionInput[];
}

export function encodeExtension(e: ExtensionInput): Buffer {
  return Buffer.isBuffer(e) ? e : Buffer.from(AsnConvert.serialize(e));
}

function nameDer(n: Name | Buffer): Buffer {
  return Buffer.isBuffer(n) ? n : Buffer.from(AsnConvert.serialize(n));
}

const algorithmDer = new Map<string, Buffer>();
export function signatureAlgorithmDer(key: PlatformKey): Buffer {
  let d = algorithmDer.get(key.algorithm);
  if (!d) {
    d = Buffer.from(AsnConvert.serialize(signatureAlgorithmOf(key)));
    algorithmDer.set(key.algorithm, d);
  }
  return d;
}

/** `[0] EXPLICIT INTEGER 2`: X.509 v3. */
const VERSION_3 = Buffer.from('a003020102', 'hex');

/**
 * Sign a v3 certificate; returns its DER. The TBSCertificate is assembled from DER parts (the
 * parts themselves come from the ASN.1 schemas or from the caller's cache), signed through the key
 * store, and wrapped — nothing is encoded twice.
 */
export async function signCertificate(t: CertificateTemplate, signer: PlatformKey): Promise<Buffer> {
  const algorithm = signatureAlgorithmDer(signer);
  const tbs = der.sequence(
    VERSION_3,
    der.unsignedInteger(serialToBytes(t.serial)),
    algorithm,
    nameDer(t.issuer),
    der.sequence(der.time(t.notBefore), der.time(t.notAfter)),
    nameDer(t.subject),
    t.subjectPublicKeyDer,
    der.context(3, der.sequence(...t.extensions.map(encodeExtension))),
  );
  const signature = await signer.sign(tbs);
  return der.sequence(tbs, algorithm, der.bitString(signature));
}

/** `CN=<value>` as a DER Name with a UTF8String, as the device profile writes it. */
export function commonNameDer(value: string): Buffer {
  return der.sequence(der.set(der.sequence(Buffer.from('0603550403', 'hex'), der.utf8String(value))));
}

/** A non-critical SubjectAltName extension with one URI, DER-encoded. */
export function sanUriExtensionDer(uri: string): Buffer {
  return der.sequence(
    Buffer.from('0603551d11', 'hex'),
    der.octetString(der.sequence(tlv(0x86, Buffer.from(uri, 'ascii')))),
  );
}

/** A non-critical SubjectKeyIdentifier extension for a key, DER-encoded. */
export function skiExtensionDer(spkiDer: Uint8Array): Buffer {
  return der.sequence(
    Buffer.from('0603551d0e', 'hex'),
    der.octetString(der.octetString(keyIdentifierOf(spkiDer))),
  );
}

/** The subject Name of a DER certificate, for use as the issuer of what it signs. */
export function subjectNameOf(certDer: Uint8Array): Name {
  return AsnConvert.parse(certDer, Certificate).tbsCertificate.subject;
}

export function publicKeyOfCertificate(certDer: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.from(spkiOfCertificate(certDer)), format: 'der', type: 'spki' });
}

export function spkiOfCertificate(certDer: Uint8Array): Buffer {
  return Buffer.from(spkiBytesOfCertificate(certDer));
}

/**
 * The SubjectPublicKeyInfo of a certificate exactly as it is encoded there (a walk over the DER,
 * no copy, no key object): `sha256` of it is the key's id without exporting the key, which costs
 * OpenSSL far more. Throws a RangeError when the DER is not a certificate.
 */
export function spkiBytesOfCertificate(certDer: Uint8Array): Uint8Array {
  const cert = readDer(certDer);
  if (cert.tag !== 0x30) throw new RangeError('not a certificate');
  const tbs = readDer(certDer, cert.start);
  if (tbs.tag !== 0x30) throw new RangeError('not a certificate');
  const within = certDer.subarray(0, tbs.end);
  // Elements are read at `at`, where their header starts: [0] version (optional), serialNumber,
  // signature, issuer, validity, subject — then subjectPublicKeyInfo.
  let at = tbs.start;
  let e = readDer(within, at);
  const next = () => {
    at = e.end;
    e = readDer(within, at);
  };
  if (e.tag === 0xa0) next();
  for (let i = 0; i < 5; i++) next();
  if (e.tag !== 0x30) throw new RangeError('not a certificate');
  return certDer.subarray(at, e.end);
}

export function pemOf(certificateDer: Uint8Array): string {
  return toPem('CERTIFICATE', certificateDer);
}

export function derOf(pem: string): Buffer {
  return Buffer.from(new X509Certificate(pem).raw);
}

/** The device id in a certificate's `urn:rampart:device:` SAN URI, or null when it has none. */
export function deviceIdFromSan(cert: X509Certificate): string | null {
  for (const name of (cert.subjectAltName ?? '').split(', '))
    if (name.startsWith('URI:')) {
      const id = deviceIdFromUri(name.slice(4));
      if (id) return id;
    }
  return null;
}
