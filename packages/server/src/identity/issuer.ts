import { createPublicKey, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import type { Name } from '@peculiar/asn1-x509';
import { buildName, claimUri, deviceUri, nameToString, type ParsedCsr } from '@rampart/shared/pki';
import type { Executor } from '../storage/index.js';
import { isoNow } from '../time.js';
import type { CaRecord, CertificateAuthorities } from './authorities.js';
import type { CertificateRegistry } from './certificates.js';
import { toCertificateRecord, type CertificateProfile, type CertificateRecord } from './certificates.js';
import {
  KeyUsageFlags,
  commonNameDer,
  encodeExtension,
  extensions,
  keyFingerprintOf,
  pemOf,
  randomSerial,
  sanUriExtensionDer,
  signCertificate,
  skiExtensionDer,
  spkiDerOf,
  type ExtensionInput,
} from './x509.js';

/** Where a certificate's CRL distribution point, OCSP and CA-issuer URLs point: Rampart's own PKI listener. */
export interface PkiUrls {
  crl(caId: string): string;
  ocsp(): string;
  caIssuer(caId: string): string;
}

export interface IssuedCertificate {
  record: CertificateRecord;
  der: Buffer;
}

/** From five minutes ago (clock skew) for `days`, never past the issuing CA's own expiry. */
function validityOf(ca: CaRecord, days: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return {
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(Math.min(now + days * 86400_000, Date.parse(ca.notAfter))),
  };
}

function keyAlgorithmOf(key: KeyObject): string {
  if (key.asymmetricKeyType === 'ec') return `ec-${key.asymmetricKeyDetails?.namedCurve ?? 'unknown'}`;
  if (key.asymmetricKeyType === 'rsa') return `rsa-${key.asymmetricKeyDetails?.modulusLength ?? 0}`;
  return key.asymmetricKeyType ?? 'unknown';
}

/** basicConstraints CA:FALSE, keyUsage digitalSignature, EKU clientAuth: encoded once. */
let deviceExtensions: Buffer[] | null = null;
const DEVICE_EXTENSIONS = (): Buffer[] =>
  (deviceExtensions ??= [
    extensions.basicConstraints(false),
    extensions.keyUsage(KeyUsageFlags.digitalSignature),
    extensions.extKeyUsage('1.3.6.1.5.5.7.3.2'),
  ].map(encodeExtension));

function named(parts: Parameters<typeof buildName>[0]): { subject: Name; subjectText: string } {
  const subject = buildName(parts);
  return { subject, subjectText: nameToString(subject) };
}

/**
 * Certificate profiles and signing. The device profile: CN = device id, SAN URI
 * `urn:rampart:device:<id>`, digitalSignature, clientAuth, SKI/AKI, CRL distribution point and OCSP
 * URL on Rampart's PKI listener, a random 128-bit serial.
 */
export class CertificateIssuer {
  private urls: PkiUrls | null = null;

  constructor(
    private readonly authorities: CertificateAuthorities,
    private readonly registry: CertificateRegistry,
    private readonly organization: string,
  ) {}

  setUrls(urls: PkiUrls): void {
    this.urls = urls;
  }

  private pkiUrls(): PkiUrls {
    if (!this.urls)
      throw new Error('the PKI listener is not up yet; certificates cannot name their CRL and OCSP URLs');
    return this.urls;
  }

  /** Issue a device certificate for a CSR that policy has already approved. Records it in `db`. */
  async issueDevice(
    db: Executor,
    request: {
      csr: ParsedCsr;
      deviceId: string;
      validityHours: number;
      renews: string | null;
      policy: string;
    },
  ): Promise<IssuedCertificate> {
    const ca = this.authorities.active('issuing');
    const spki = request.csr.publicKeyDer;
    const now = Date.now();
    const notAfter = Math.min(now + request.validityHours * 3600_000, Date.parse(ca.notAfter));
    return this.sign(db, ca, {
      profile: 'device',
      deviceId: request.deviceId,
      subject: commonNameDer(request.deviceId),
      subjectText: `CN=${request.deviceId}`,
      spki,
      keyAlgorithm: request.csr.publicKey ? keyAlgorithmOf(request.csr.publicKey) : 'unknown',
      notBefore: new Date(now - 5 * 60_000),
      notAfter: new Date(notAfter),
      renews: request.renews,
      policy: request.policy,
      extensions: [...DEVICE_EXTENSIONS(), sanUriExtensionDer(deviceUri(request.deviceId))],
    });
  }

  /** Rampart's own TLS server certificate for its listeners. */
  async issueServer(
    db: Executor,
    publicKey: KeyObject,
    names: string[],
    validityDays: number,
  ): Promise<IssuedCertificate> {
    const ca = this.authorities.active('issuing');
    return this.sign(db, ca, {
      profile: 'server',
      deviceId: null,
      ...named([
        ['O', this.organization],
        ['CN', names.find((n) => !isIP(n)) ?? names[0] ?? 'rampart'],
      ]),
      spki: spkiDerOf(publicKey),
      keyAlgorithm: keyAlgorithmOf(publicKey),
      ...validityOf(ca, validityDays),
      renews: null,
      policy: null,
      extensions: [
        extensions.basicConstraints(false),
        extensions.keyUsage(KeyUsageFlags.digitalSignature),
        extensions.extKeyUsage('1.3.6.1.5.5.7.3.1'),
        extensions.subjectAltName({ dns: names.filter((n) => !isIP(n)), ip: names.filter((n) => isIP(n)) }),
      ],
    });
  }

  /** The delegated OCSP-signing certificate of a CA (RFC 6960 §4.2.2.2): id-kp-OCSPSigning and ocsp-nocheck. */
  async issueOcspSigner(
    db: Executor,
    ca: CaRecord,
    publicKey: KeyObject,
    validityDays: number,
  ): Promise<IssuedCertificate> {
    return this.sign(db, ca, {
      profile: 'ocsp',
      deviceId: null,
      ...named([
        ['O', this.organization],
        ['CN', `OCSP responder for ${ca.id}`],
      ]),
      spki: spkiDerOf(publicKey),
      keyAlgorithm: keyAlgorithmOf(publicKey),
      ...validityOf(ca, validityDays),
      renews: null,
      policy: null,
      extensions: [
        extensions.basicConstraints(false),
        extensions.keyUsage(KeyUsageFlags.digitalSignature),
        extensions.extKeyUsage('1.3.6.1.5.5.7.3.9'),
        extensions.ocspNoCheck(),
      ],
    });
  }

  /**
   * A factory station's CA (pathLen 0) under the active manufacturing CA: the station signs birth
   * certificates with it offline, and its manifests with the same key.
   */
  async issueStationCa(
    db: Executor,
    publicKey: KeyObject,
    station: string,
    validityDays: number,
  ): Promise<IssuedCertificate> {
    const ca = this.authorities.active('manufacturing');
    return this.sign(db, ca, {
      profile: 'station-ca',
      deviceId: null,
      ...named([
        ['O', this.organization],
        ['CN', `Factory station ${station}`],
      ]),
      spki: spkiDerOf(publicKey),
      keyAlgorithm: keyAlgorithmOf(publicKey),
      ...validityOf(ca, validityDays),
      renews: null,
      policy: null,
      extensions: [
        extensions.basicConstraints(true, 0),
        extensions.keyUsage(KeyUsageFlags.keyCertSign | KeyUsageFlags.digitalSignature),
      ],
    });
  }

  /**
   * A birth certificate (IDevID) from the active manufacturing CA, for a factory station's request
   * that it signs at import: CN = device id, serialNumber = the device's serial, SAN URI.
   */
  async issueBirth(
    db: Executor,
    input: { spki: Buffer; deviceId: string; serial: string; validityDays: number },
  ): Promise<IssuedCertificate> {
    const ca = this.authorities.active('manufacturing');
    return this.sign(db, ca, {
      profile: 'birth',
      deviceId: input.deviceId,
      ...named([
        ['O', this.organization],
        ['serialNumber', input.serial],
        ['CN', input.deviceId],
      ]),
      spki: input.spki,
      keyAlgorithm: keyAlgorithmOf(createPublicKey({ key: input.spki, format: 'der', type: 'spki' })),
      ...validityOf(ca, input.validityDays),
      renews: null,
      policy: null,
      extensions: [
        extensions.basicConstraints(false),
        extensions.keyUsage(KeyUsageFlags.digitalSignature),
        extensions.extKeyUsage('1.3.6.1.5.5.7.3.2'),
        sanUriExtensionDer(deviceUri(input.deviceId)),
      ],
    });
  }

  /**
   * A claim certificate for a `claim` enrollment policy, from the active manufacturing CA: shared by
   * the devices of one batch, it authenticates their first enrollment (TLS client certificate) and
   * nothing else. SAN URI `urn:rampart:claim:<policy>`, clientAuth; recorded with the policy's name.
   */
  async issueClaim(
    db: Executor,
    input: { spki: Buffer; policy: string; batch: string; validityDays: number },
  ): Promise<IssuedCertificate> {
    const ca = this.authorities.active('manufacturing');
    return this.sign(db, ca, {
      profile: 'claim',
      deviceId: null,
      ...named([
        ['O', this.organization],
        ['CN', `Claim ${input.policy} (batch ${input.batch})`],
      ]),
      spki: input.spki,
      keyAlgorithm: keyAlgorithmOf(createPublicKey({ key: input.spki, format: 'der', type: 'spki' })),
      ...validityOf(ca, input.validityDays),
      renews: null,
      policy: input.policy,
      extensions: [
        extensions.basicConstraints(false),
        extensions.keyUsage(KeyUsageFlags.digitalSignature),
        extensions.extKeyUsage('1.3.6.1.5.5.7.3.2'),
        sanUriExtensionDer(claimUri(input.policy)),
      ],
    });
  }

  private readonly caExtensionCache = new Map<string, Buffer[]>();

  /** AKI, CRL distribution point and AIA: the same for every certificate a CA issues in a profile. */
  private caExtensions(ca: CaRecord, profile: CertificateProfile): Buffer[] {
    const urls = this.pkiUrls();
    const key = `${ca.id}|${profile}|${urls.crl(ca.id)}|${urls.ocsp()}`;
    let cached = this.caExtensionCache.get(key);
    if (!cached) {
      cached = [
        extensions.authorityKeyIdentifier(ca.spkiDer),
        ...(profile === 'ocsp' ? [] : [extensions.crlDistributionPoint(urls.crl(ca.id))]),
        extensions.authorityInfoAccess({
          ...(profile === 'ocsp' ? {} : { ocsp: urls.ocsp() }),
          caIssuers: urls.caIssuer(ca.id),
        }),
      ].map(encodeExtension);
      this.caExtensionCache.set(key, cached);
    }
    return cached;
  }

  private async sign(
    db: Executor,
    ca: CaRecord,
    t: {
      profile: CertificateProfile;
      deviceId: string | null;
      subject: Name | Buffer;
      subjectText: string;
      spki: Buffer;
      keyAlgorithm: string;
      notBefore: Date;
      notAfter: Date;
      renews: string | null;
      policy: string | null;
      extensions: ExtensionInput[];
    },
  ): Promise<IssuedCertificate> {
    const signer = await this.authorities.signer(ca);
    const serial = randomSerial();
    const der = await signCertificate(
      {
        serial,
        issuer: ca.nameDer,
        subject: t.subject,
        notBefore: t.notBefore,
        notAfter: t.notAfter,
        subjectPublicKeyDer: t.spki,
        extensions: [...t.extensions, skiExtensionDer(t.spki), ...this.caExtensions(ca, t.profile)],
      },
      signer,
    );
    const pem = pemOf(der);
    const row = {
      serial,
      issuer_id: ca.id,
      profile: t.profile,
      device_id: t.deviceId,
      subject: t.subjectText,
      not_before: t.notBefore.toISOString(),
      not_after: t.notAfter.toISOString(),
      key_fingerprint: keyFingerprintOf(t.spki),
      key_algorithm: t.keyAlgorithm,
      renewed_from: t.renews,
      enrollment_policy: t.policy,
      status: 'good',
      revoked_at: null,
      revocation_reason: null,
      certificate: pem,
      created_at: isoNow(),
    };
    await this.registry.insert(db, row);
    return { record: toCertificateRecord(row), der };
  }
}
