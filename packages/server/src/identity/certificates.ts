import { sql } from 'kysely';
import { REVOCATION_REASONS, normalizeSerial, type RevocationReason } from '@rampart/shared/pki';
import type { CERTIFICATE_PROFILES } from '@rampart/shared/api';
import { RampartError, notFound } from '../errors.js';
import type { Executor } from '../storage/index.js';
import type { CertificatesTable } from '../storage/schema.js';
import { isoNow } from '../time.js';
import { certificateStatusChanged } from './certificate-status.js';

/** Every certificate Rampart issued, with its lineage (`renewedFrom`) and revocation state. */
/**
 * `station-ca`: a factory station's birth-certificate CA; `birth`: a birth certificate issued at
 * batch import for a station's request; `claim` the shared certificate of a claim enrollment policy.
 */
export type CertificateProfile = (typeof CERTIFICATE_PROFILES)[number];

export interface CertificateRecord {
  serial: string;
  issuerId: string;
  profile: CertificateProfile;
  deviceId: string | null;
  subject: string;
  notBefore: string;
  notAfter: string;
  keyFingerprint: string;
  keyAlgorithm: string;
  renewedFrom: string | null;
  enrollmentPolicy: string | null;
  status: 'good' | 'revoked';
  /** `good`, `revoked` or `expired`, as of now. */
  state: 'valid' | 'revoked' | 'expired';
  revokedAt: string | null;
  revocationReason: RevocationReason | null;
  certificatePem: string;
  createdAt: string;
}

export function toCertificateRecord(row: CertificatesTable, now = isoNow()): CertificateRecord {
  return {
    serial: row.serial,
    issuerId: row.issuer_id,
    profile: row.profile as CertificateProfile,
    deviceId: row.device_id,
    subject: row.subject,
    notBefore: row.not_before,
    notAfter: row.not_after,
    keyFingerprint: row.key_fingerprint,
    keyAlgorithm: row.key_algorithm,
    renewedFrom: row.renewed_from,
    enrollmentPolicy: row.enrollment_policy,
    status: row.status as 'good' | 'revoked',
    state: row.status === 'revoked' ? 'revoked' : row.not_after <= now ? 'expired' : 'valid',
    revokedAt: row.revoked_at,
    revocationReason: row.revocation_reason as RevocationReason | null,
    certificatePem: row.certificate,
    createdAt: row.created_at,
  };
}

export interface CertificateFilter {
  deviceId?: string;
  issuerId?: string;
  profile?: CertificateProfile;
  state?: 'valid' | 'revoked' | 'expired';
  /** Valid certificates whose notAfter falls within this many days. */
  expiringWithinDays?: number;
  /** Serials greater than this (pagination by serial). */
  after?: string;
  limit: number;
}

export interface RevocationResult {
  /** Certificates this call revoked, the requested one first, then its lineage. */
  revoked: { serial: string; deviceId: string | null; issuerId: string; reason: RevocationReason }[];
  /** Certificates of the lineage revoked before whose reason this call upgraded to keyCompromise. */
  upgraded: { serial: string; deviceId: string | null; issuerId: string; reason: RevocationReason }[];
  /** The requested certificate was revoked before; its still-valid descendants were revoked now. */
  alreadyRevoked: boolean;
}

export class CertificateRegistry {
  async insert(db: Executor, row: CertificatesTable): Promise<void> {
    await db.insertInto('certificates').values(row).execute();
  }

  async find(db: Executor, serial: string): Promise<CertificateRecord | null> {
    const row = await db
      .selectFrom('certificates')
      .selectAll()
      .where('serial', '=', normalizeSerial(serial))
      .executeTakeFirst();
    return row ? toCertificateRecord(row) : null;
  }

  async get(db: Executor, serial: string): Promise<CertificateRecord> {
    const found = await this.find(db, serial);
    if (!found) throw notFound(`certificate ${normalizeSerial(serial)}`);
    return found;
  }

  async list(db: Executor, f: CertificateFilter): Promise<CertificateRecord[]> {
    const now = isoNow();
    let q = db.selectFrom('certificates').selectAll();
    if (f.deviceId) q = q.where('device_id', '=', f.deviceId);
    if (f.issuerId) q = q.where('issuer_id', '=', f.issuerId);
    if (f.profile) q = q.where('profile', '=', f.profile);
    if (f.state === 'revoked') q = q.where('status', '=', 'revoked');
    if (f.state === 'valid') q = q.where('status', '=', 'good').where('not_after', '>', now);
    if (f.state === 'expired') q = q.where('status', '=', 'good').where('not_after', '<=', now);
    if (f.expiringWithinDays !== undefined) {
      const until = new Date(Date.now() + f.expiringWithinDays * 86400_000).toISOString();
      q = q.where('status', '=', 'good').where('not_after', '>', now).where('not_after', '<=', until);
    }
    if (f.after) q = q.where('serial', '>', normalizeSerial(f.after));
    const rows = await q.orderBy('serial').limit(f.limit).execute();
    return rows.map((r) => toCertificateRecord(r, now));
  }

  /** Valid (unrevoked, unexpired) certificates of a device. */
  async activeForDevice(db: Executor, deviceId: string): Promise<CertificateRecord[]> {
    const now = isoNow();
    const rows = await db
      .selectFrom('certificates')
      .selectAll()
      .where('device_id', '=', deviceId)
      .where('status', '=', 'good')
      .where('not_after', '>', now)
      .execute();
    return rows.map((r) => toCertificateRecord(r, now));
  }

  /**
   * Revoke a certificate and every certificate renewed from it, transitively (its lineage): a
   * compromised key must not live on in the renewals it authenticated. Revoking an already revoked
   * certificate keeps its record and still revokes descendants that are valid.
   */
  async revoke(
    db: Executor,
    serial: string,
    reason: RevocationReason,
    at = isoNow(),
  ): Promise<RevocationResult> {
    const root = await this.get(db, serial);
    const lineage = await db
      .withRecursive('lineage(serial)', (qb) =>
        qb
          .selectFrom('certificates')
          .select('serial')
          .where('serial', '=', root.serial)
          .unionAll(
            qb
              .selectFrom('certificates as c')
              .innerJoin('lineage as l', 'c.renewed_from', 'l.serial')
              .select('c.serial'),
          ),
      )
      .selectFrom('certificates')
      .select(['serial', 'device_id', 'issuer_id', 'status', 'revocation_reason'])
      .where('serial', 'in', (qb) => qb.selectFrom('lineage').select('serial'))
      .execute();
    const toRevoke = lineage.filter((c) => c.status === 'good');
    // A keyCompromise on already revoked (e.g. superseded) certificates of the lineage upgrades their
    // recorded reason, keeping the revocation time (RFC 5280 §5.3.1), even when nothing is left to revoke.
    const toUpgrade =
      reason === 'keyCompromise'
        ? lineage.filter((c) => c.status === 'revoked' && c.revocation_reason !== 'keyCompromise')
        : [];
    const upgraded = toUpgrade.map((c) => ({
      serial: c.serial,
      deviceId: c.device_id,
      issuerId: c.issuer_id,
      reason,
    }));
    if (toRevoke.length === 0 && toUpgrade.length === 0 && root.status === 'revoked')
      return { revoked: [], upgraded: [], alreadyRevoked: true };
    if (toUpgrade.length)
      await db
        .updateTable('certificates')
        .set({ revocation_reason: reason })
        .where(
          'serial',
          'in',
          upgraded.map((c) => c.serial),
        )
        .where('status', '=', 'revoked')
        .execute();
    const serials = toRevoke.map((c) => c.serial);
    for (let i = 0; i < serials.length; i += 500) {
      await db
        .updateTable('certificates')
        .set({ status: 'revoked', revoked_at: at, revocation_reason: reason })
        .where('serial', 'in', serials.slice(i, i + 500))
        .where('status', '=', 'good')
        .execute();
    }
    // Cached "good" answers (the director's per-connection authentication) are stale from now on.
    certificateStatusChanged();
    const order = (s: string) => (s === root.serial ? 0 : 1);
    return {
      revoked: toRevoke
        .sort((a, b) => order(a.serial) - order(b.serial))
        .map((c) => ({ serial: c.serial, deviceId: c.device_id, issuerId: c.issuer_id, reason })),
      upgraded,
      alreadyRevoked: root.status === 'revoked',
    };
  }

  /** Revoke every valid certificate of a device (it was disabled or decommissioned). */
  async revokeForDevice(
    db: Executor,
    deviceId: string,
    reason: RevocationReason,
  ): Promise<RevocationResult['revoked']> {
    const active = await this.activeForDevice(db, deviceId);
    const out: RevocationResult['revoked'] = [];
    for (const c of active) out.push(...(await this.revoke(db, c.serial, reason)).revoked);
    return out;
  }

  /** Revoked certificates of a CA that have not yet expired, for its CRL. */
  async revokedBy(
    db: Executor,
    issuerId: string,
  ): Promise<{ serial: string; revokedAt: string; reason: RevocationReason }[]> {
    const rows = await db
      .selectFrom('certificates')
      .select(['serial', 'revoked_at', 'revocation_reason'])
      .where('issuer_id', '=', issuerId)
      .where('status', '=', 'revoked')
      // RFC 5280 §3.3: an expired certificate may leave the CRL; keep a day of margin for clock skew.
      .where('not_after', '>', new Date(Date.now() - 86400_000).toISOString())
      .orderBy('serial')
      .execute();
    return rows.map((r) => ({
      serial: r.serial,
      revokedAt: r.revoked_at!,
      reason: (r.revocation_reason ?? 'unspecified') as RevocationReason,
    }));
  }

  async countsByState(db: Executor): Promise<{ issuerId: string; state: string; n: number }[]> {
    const now = isoNow();
    const rows = await db
      .selectFrom('certificates')
      .select([
        'issuer_id',
        sql<string>`case when status = 'revoked' then 'revoked' when not_after <= ${now} then 'expired' else 'valid' end`.as(
          'state',
        ),
        (eb) => eb.fn.countAll<number>().as('n'),
      ])
      .groupBy(['issuer_id', sql`2`])
      .execute();
    return rows.map((r) => ({ issuerId: r.issuer_id, state: r.state, n: Number(r.n) }));
  }
}

export function reasonCode(reason: RevocationReason): number {
  return REVOCATION_REASONS[reason];
}

export function invalidSerial(input: string): RampartError {
  return new RampartError('VALIDATION', `"${input}" is not a certificate serial`, [
    { field: 'serial', message: 'must be hex as openssl prints it' },
  ]);
}
