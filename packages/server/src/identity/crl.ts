import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  CRLNumber,
  CRLReason,
  Extension,
  RevokedCertificate,
  TBSCertList,
  Time,
  Version,
} from '@peculiar/asn1-x509';
import { OID, REVOCATION_REASONS, der, derLength, readDer, serialToBytes } from '@rampart/shared/pki';
import type { Logger } from '@rampart/shared/logging';
import type { Storage } from '../storage/index.js';
import type { CaRecord, CertificateAuthorities } from './authorities.js';
import type { CertificateRegistry } from './certificates.js';
import { extensions as ext, signatureAlgorithmOf } from './x509.js';

export interface CrlDocument {
  issuerId: string;
  number: number;
  thisUpdate: Date;
  nextUpdate: Date;
  der: Buffer;
}

/**
 * One CRL per CA that issues end-entity certificates (RFC 5280 §5), signed by the CA itself.
 * Regenerated after every revocation and, on a timer, once half of its validity has passed, so a
 * relying party never holds one past nextUpdate. The current CRL is kept in storage (its number
 * must only grow) and in memory for serving.
 */
export class CrlService {
  private readonly current = new Map<string, CrlDocument>();
  private readonly pending = new Map<string, Promise<CrlDocument>>();
  private readonly queued = new Map<string, Promise<CrlDocument>>();
  private buildCount = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly storage: Storage,
    private readonly authorities: CertificateAuthorities,
    private readonly registry: CertificateRegistry,
    private readonly validityHours: number,
    private readonly logger?: Logger,
  ) {}

  /** CAs that get a CRL: issuing and manufacturing CAs that are still served. */
  private crlIssuers(): CaRecord[] {
    return this.authorities.served().filter((c) => c.kind !== 'root');
  }

  /** The CRL to serve for a CA, regenerating it when missing or past half of its validity. */
  async get(caId: string): Promise<CrlDocument> {
    const ca = this.authorities.get(caId);
    let doc = this.current.get(caId) ?? (await this.loadStored(caId));
    if (!doc || this.stale(doc)) doc = await this.regenerate(ca.id);
    return doc;
  }

  private stale(doc: CrlDocument): boolean {
    const validity = doc.nextUpdate.getTime() - doc.thisUpdate.getTime();
    // A CRL signed under another ca.crlValidityHours is replaced now, not after half of its old validity.
    if (Math.abs(validity - this.validityHours * 3600_000) >= 1000) return true;
    return Date.now() >= doc.thisUpdate.getTime() + validity / 2;
  }

  private async loadStored(caId: string): Promise<CrlDocument | null> {
    const row = await this.storage.db
      .selectFrom('crls')
      .selectAll()
      .where('issuer_id', '=', caId)
      .executeTakeFirst();
    if (!row) return null;
    const doc = {
      issuerId: caId,
      number: Number(row.crl_number),
      thisUpdate: new Date(row.this_update),
      nextUpdate: new Date(row.next_update),
      der: Buffer.from(row.der, 'base64'),
    };
    this.current.set(caId, doc);
    return doc;
  }

  /**
   * Sign a new CRL for a CA, reflecting every revocation committed before the call. While one is
   * being built, callers share a single next build (which starts when it ends and so sees what they
   * committed): a burst of revocations costs two builds, not one per revocation.
   */
  regenerate(caId: string): Promise<CrlDocument> {
    const running = this.pending.get(caId);
    if (!running) return this.startBuild(caId);
    let next = this.queued.get(caId);
    if (!next) {
      next = running
        .catch(() => undefined)
        .then(() => {
          this.queued.delete(caId);
          return this.startBuild(caId);
        });
      this.queued.set(caId, next);
    }
    return next;
  }

  /** Builds started so far (for tests and metrics). */
  get builds(): number {
    return this.buildCount;
  }

  private startBuild(caId: string): Promise<CrlDocument> {
    this.buildCount++;
    const p = this.build(caId).finally(() => this.pending.delete(caId));
    this.pending.set(caId, p);
    return p;
  }

  /** After revocations commit: regenerate the affected CRLs in the background. */
  invalidate(caIds: Iterable<string>): void {
    for (const id of new Set(caIds))
      this.regenerate(id).catch((err: unknown) =>
        this.logger?.error({ err, ca: id }, 'regenerating the CRL failed'),
      );
  }

  private async build(caId: string): Promise<CrlDocument> {
    const ca = this.authorities.get(caId);
    const signer = await this.authorities.signer(ca);
    const revoked = await this.registry.revokedBy(this.storage.db, caId);
    const thisUpdate = new Date(Math.floor(Date.now() / 1000) * 1000);
    const nextUpdate = new Date(thisUpdate.getTime() + this.validityHours * 3600_000);
    return this.storage.db.transaction().execute(async (tx) => {
      const row = await tx
        .updateTable('certificate_authorities')
        .set((eb) => ({ crl_number: eb('crl_number', '+', 1) }))
        .where('id', '=', caId)
        .returning('crl_number')
        .executeTakeFirstOrThrow();
      const number = Number(row.crl_number);
      const signature = signatureAlgorithmOf(signer);
      const tbsHead = AsnConvert.serialize(
        new TBSCertList({
          version: Version.v2,
          signature,
          issuer: ca.name,
          thisUpdate: new Time(thisUpdate),
          nextUpdate: new Time(nextUpdate),
          crlExtensions: [
            ext.authorityKeyIdentifier(ca.spkiDer),
            new Extension({
              extnID: OID.cRLNumber,
              critical: false,
              extnValue: new OctetString(AsnConvert.serialize(new CRLNumber(number))),
            }),
          ],
        }),
      );
      const tbsDer = withRevokedCertificates(
        Buffer.from(tbsHead),
        revoked.map((r) => this.entryDer(r)),
      );
      const sig = await signer.sign(new Uint8Array(tbsDer));
      const crl = crlDer(tbsDer, Buffer.from(AsnConvert.serialize(signature)), Buffer.from(sig));
      const doc: CrlDocument = { issuerId: caId, number, thisUpdate, nextUpdate, der: crl };
      const stored = {
        crl_number: number,
        this_update: thisUpdate.toISOString(),
        next_update: nextUpdate.toISOString(),
        der: crl.toString('base64'),
      };
      await tx
        .insertInto('crls')
        .values({ issuer_id: caId, ...stored })
        .onConflict((oc) => oc.column('issuer_id').doUpdateSet(stored))
        .execute();
      this.current.set(caId, doc);
      return doc;
    });
  }

  /** DER of revoked-certificate entries, kept between builds: an entry never changes but its reason. */
  private readonly entries = new Map<string, Buffer>();

  private entryDer(r: { serial: string; revokedAt: string; reason: RevocationReasonName }): Buffer {
    const key = `${r.serial}|${r.revokedAt}|${r.reason}`;
    let cached = this.entries.get(key);
    if (!cached) {
      cached = Buffer.from(AsnConvert.serialize(revokedEntry(r)));
      this.entries.set(key, cached);
    }
    return cached;
  }

  /** Keep every CRL fresh: check each minute, regenerate any past half of its validity. */
  start(): void {
    const tick = async () => {
      for (const ca of this.crlIssuers()) {
        try {
          await this.get(ca.id);
        } catch (err) {
          this.logger?.error({ err, ca: ca.id }, 'refreshing the CRL failed');
        }
      }
    };
    void tick();
    this.timer = setInterval(() => void tick(), 60_000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

type RevocationReasonName = keyof typeof REVOCATION_REASONS;

/** One `revokedCertificates` entry (RFC 5280 §5.1.2.6), with its reason unless unspecified. */
export function revokedEntry(r: {
  serial: string;
  revokedAt: string;
  reason: RevocationReasonName;
}): RevokedCertificate {
  return new RevokedCertificate({
    userCertificate: new Uint8Array(serialToBytes(r.serial)).buffer,
    revocationDate: new Time(new Date(r.revokedAt)),
    crlEntryExtensions:
      r.reason === 'unspecified'
        ? undefined
        : [
            new Extension({
              extnID: OID.cRLReason,
              critical: false,
              extnValue: new OctetString(AsnConvert.serialize(new CRLReason(REVOCATION_REASONS[r.reason]))),
            }),
          ],
  });
}

/**
 * Insert the `revokedCertificates` list (already-encoded entries) into a TBSCertList encoded
 * without one: after nextUpdate, before the `[0]` crlExtensions. Serializing thousands of entries
 * through the schema library cost about 0.1 ms each on every re-signing; the entries are encoded
 * once and spliced in. The result is byte for byte what the library encodes with the list
 * (tested). No entries: the list is left out, as RFC 5280 requires.
 */
export function withRevokedCertificates(tbsWithout: Buffer, entries: readonly Buffer[]): Buffer {
  if (entries.length === 0) return tbsWithout;
  const outer = readDer(tbsWithout);
  let at = outer.end;
  for (let p = outer.start; p < outer.end;) {
    const child = readDer(tbsWithout, p);
    if (child.tag === 0xa0) {
      at = p;
      break;
    }
    p = child.end;
  }
  const list = der.sequence(...entries);
  const content = Buffer.concat([
    tbsWithout.subarray(outer.start, at),
    list,
    tbsWithout.subarray(at, outer.end),
  ]);
  return Buffer.concat([Buffer.from([0x30]), derLength(content.length), content]);
}

/** CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue BIT STRING }. */
function crlDer(tbs: Buffer, signatureAlgorithm: Buffer, signature: Buffer): Buffer {
  return der.sequence(tbs, signatureAlgorithm, der.bitString(signature));
}
