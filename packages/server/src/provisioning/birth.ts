import { X509Certificate, type KeyObject } from 'node:crypto';
import { deviceIdFromSan, issuedBy } from '../identity/x509.js';
import type { IdentityService } from '../identity/service.js';
import type { Executor } from '../storage/index.js';
import { certificateFingerprint, type Stations } from './stations.js';

/**
 * Checks a birth certificate (IDevID): it must be valid now, not a CA, and issued by a registered
 * manufacturing CA — a station's CA (the station still active), one of Rampart's manufacturing CAs,
 * or an external manufacturer CA an operator registered. The issuer is looked up among the ones
 * Rampart knows, never taken from what the device sent, so a chain the device makes up does not help.
 */
export interface BirthIssuer {
  kind: 'station' | 'rampart' | 'manufacturer';
  name: string;
  certificate: X509Certificate;
  /** Why certificates of this issuer are no longer accepted, if they are not. */
  revoked: string | null;
}

export interface CheckedBirthCertificate {
  certificate: X509Certificate;
  fingerprint: string;
  serial: string;
  publicKey: KeyObject;
  /** The same key as SubjectPublicKeyInfo (DER). */
  publicKeyDer: Buffer;
  /** The device id the certificate names (SAN URI or CN), if any. */
  deviceId: string | null;
  issuer: { kind: BirthIssuer['kind']; name: string };
}

export class BirthRefusal extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BirthRefusal';
  }
}

/** A birth certificate as parsed and matched to its issuer, kept for the next check of the same PEM. */
interface ParsedBirth {
  certificate: X509Certificate;
  issuer: BirthIssuer | null;
  fingerprint: string;
  serial: string;
  publicKey: KeyObject;
  publicKeyDer: Buffer;
  deviceId: string | null;
}

/** Parsed birth certificates kept at most (each device presents its own twice while provisioning). */
const PARSED_LIMIT = 10_000;

export class BirthCertificates {
  private issuers: BirthIssuer[] | null = null;
  /** By the exact PEM text; valid for the `parsedFor` set of issuers only. */
  private readonly parsed = new Map<string, ParsedBirth>();
  private parsedFor: BirthIssuer[] | null = null;
  /** The station and hierarchy generations the issuers were loaded at. */
  private loadedAt = { stations: -1, hierarchy: -1 };
  private hierarchy = 0;

  constructor(
    private readonly identity: IdentityService,
    private readonly stations: Stations,
  ) {
    identity.onHierarchyChange(() => this.hierarchy++);
  }

  private async load(db: Executor): Promise<BirthIssuer[]> {
    const stamp = { stations: this.stations.generation, hierarchy: this.hierarchy };
    if (
      this.issuers &&
      this.loadedAt.stations === stamp.stations &&
      this.loadedAt.hierarchy === stamp.hierarchy
    )
      return this.issuers;
    const out: BirthIssuer[] = [];
    const stations = await db
      .selectFrom('stations')
      .innerJoin('certificates', 'certificates.serial', 'stations.ca_serial')
      .select([
        'stations.name',
        'stations.status as stationStatus',
        'certificates.certificate',
        'certificates.status',
      ])
      .execute();
    for (const s of stations)
      out.push({
        kind: 'station',
        name: s.name,
        certificate: new X509Certificate(s.certificate),
        revoked:
          s.stationStatus !== 'active'
            ? `station ${s.name} was revoked`
            : s.status !== 'good'
              ? `the CA certificate of station ${s.name} was revoked`
              : null,
      });
    for (const ca of this.identity.authorities.served('manufacturing'))
      out.push({
        kind: 'rampart',
        name: ca.id,
        certificate: new X509Certificate(ca.certificatePem),
        revoked: null,
      });
    for (const m of await db.selectFrom('manufacturer_cas').selectAll().execute())
      out.push({
        kind: 'manufacturer',
        name: m.name,
        certificate: new X509Certificate(m.certificate),
        revoked: null,
      });
    this.issuers = out;
    this.loadedAt = stamp;
    return out;
  }

  /**
   * Check `leaf` (PEM or parsed) at `now`, reading through `db` (the caller's transaction, if it is
   * in one); throws BirthRefusal saying what is wrong.
   */
  async check(
    db: Executor,
    leaf: X509Certificate | string,
    now = Date.now(),
  ): Promise<CheckedBirthCertificate> {
    const p = await this.parse(db, leaf);
    const { certificate: cert, issuer } = p;
    if (!issuer)
      throw new BirthRefusal(
        `the birth certificate's issuer (${cert.issuer.replace(/\n/g, ', ')}) is not a registered manufacturing CA or station`,
      );
    if (issuer.revoked)
      throw new BirthRefusal(`the birth certificate's issuer is not trusted: ${issuer.revoked}`);
    const notBefore = Date.parse(cert.validFrom);
    const notAfter = Date.parse(cert.validTo);
    if (now < notBefore)
      throw new BirthRefusal(
        `the birth certificate is not valid before ${new Date(notBefore).toISOString()}`,
      );
    if (now > notAfter)
      throw new BirthRefusal(`the birth certificate expired on ${new Date(notAfter).toISOString()}`);
    const issuerNotAfter = Date.parse(issuer.certificate.validTo);
    if (now > issuerNotAfter)
      throw new BirthRefusal(`the issuer of the birth certificate (${issuer.name}) expired`);
    return {
      certificate: cert,
      fingerprint: p.fingerprint,
      serial: p.serial,
      publicKey: p.publicKey,
      publicKeyDer: p.publicKeyDer,
      deviceId: p.deviceId,
      issuer: { kind: issuer.kind, name: issuer.name },
    };
  }

  /**
   * The certificate parsed, with the issuer among the known ones whose signature it bears (null if
   * none). What does not depend on the time is kept by PEM text until the issuers change, so that
   * the certificate a device presents with its evidence and again at enrollment is parsed and its
   * signature verified once.
   */
  private async parse(db: Executor, leaf: X509Certificate | string): Promise<ParsedBirth> {
    const cached = typeof leaf === 'string' ? this.parsed.get(leaf) : undefined;
    let cert: X509Certificate;
    if (cached) cert = cached.certificate;
    else
      try {
        cert = typeof leaf === 'string' ? new X509Certificate(leaf) : leaf;
      } catch {
        throw new BirthRefusal('the birth certificate is not an X.509 certificate');
      }
    if (cert.ca) throw new BirthRefusal('the birth certificate is a CA certificate');
    const issuers = await this.load(db);
    if (this.parsedFor !== issuers) {
      this.parsed.clear();
      this.parsedFor = issuers;
    } else if (cached) return cached;
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1] ?? null;
    const publicKey = cert.publicKey;
    const p: ParsedBirth = {
      certificate: cert,
      issuer: issuers.find((i) => issuedBy(cert, i.certificate)) ?? null,
      fingerprint: certificateFingerprint(cert),
      serial: cert.serialNumber.toLowerCase(),
      publicKey,
      publicKeyDer: publicKey.export({ type: 'spki', format: 'der' }),
      deviceId: deviceIdFromSan(cert) ?? cn,
    };
    if (typeof leaf === 'string') {
      if (this.parsed.size >= PARSED_LIMIT) this.parsed.clear();
      this.parsed.set(leaf, p);
    }
    return p;
  }
}
