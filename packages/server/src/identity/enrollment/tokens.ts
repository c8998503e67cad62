import { randomBytes, timingSafeEqual } from 'node:crypto';
import { hashSecret, randomId } from '../../access/tokens.js';
import { RampartError, notFound } from '../../errors.js';
import type { Executor } from '../../storage/index.js';
import type { EnrollmentTokensTable } from '../../storage/schema.js';
import { isoNow } from '../../time.js';

/**
 * One-time enrollment tokens: `rpe_<id>_<secret>`, bound to one device id, with an expiry (default
 * one hour). Shown once, stored as a SHA-256 hash, consumed by the enrollment that uses them.
 */
const FORMAT = /^rpe_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;

export interface EnrollmentTokenRecord {
  id: string;
  deviceId: string;
  createdAt: string;
  createdBy: string;
  expiresAt: string;
  usedAt: string | null;
  usedFor: string | null;
  revokedAt: string | null;
  state: 'unused' | 'used' | 'expired' | 'revoked';
}

export function toEnrollmentTokenRecord(row: EnrollmentTokensTable, now = isoNow()): EnrollmentTokenRecord {
  const state = row.revoked_at
    ? 'revoked'
    : row.used_at
      ? 'used'
      : row.expires_at <= now
        ? 'expired'
        : 'unused';
  return {
    id: row.id,
    deviceId: row.device_id,
    createdAt: row.created_at,
    createdBy: row.created_by,
    expiresAt: row.expires_at,
    usedAt: row.used_at,
    usedFor: row.used_for,
    revokedAt: row.revoked_at,
    state,
  };
}

export type TokenCheck =
  | { ok: true; record: EnrollmentTokenRecord }
  | {
      ok: false;
      reason: 'malformed' | 'unknown' | 'wrong-secret' | 'used' | 'expired' | 'revoked';
      record?: EnrollmentTokenRecord;
    };

export class EnrollmentTokens {
  async create(
    db: Executor,
    input: { deviceId: string; expiresAt: string; createdBy: string },
  ): Promise<{ token: string; record: EnrollmentTokenRecord }> {
    const id = randomId(12);
    const secret = randomBytes(32).toString('base64url');
    const row: EnrollmentTokensTable = {
      id,
      device_id: input.deviceId,
      secret_hash: hashSecret(secret),
      created_at: isoNow(),
      created_by: input.createdBy,
      expires_at: input.expiresAt,
      used_at: null,
      used_for: null,
      revoked_at: null,
    };
    await db.insertInto('enrollment_tokens').values(row).execute();
    return { token: `rpe_${id}_${secret}`, record: toEnrollmentTokenRecord(row) };
  }

  async list(db: Executor, filter: { deviceId?: string; limit: number }): Promise<EnrollmentTokenRecord[]> {
    let q = db.selectFrom('enrollment_tokens').selectAll();
    if (filter.deviceId) q = q.where('device_id', '=', filter.deviceId);
    const rows = await q.orderBy('created_at', 'desc').orderBy('id').limit(filter.limit).execute();
    const now = isoNow();
    return rows.map((r) => toEnrollmentTokenRecord(r, now));
  }

  async revoke(db: Executor, id: string): Promise<EnrollmentTokenRecord> {
    const row = await db.selectFrom('enrollment_tokens').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`enrollment token ${id}`);
    if (row.used_at)
      throw new RampartError(
        'CONFLICT',
        `enrollment token ${id} was already used; revoke the certificate instead`,
      );
    if (!row.revoked_at)
      await db.updateTable('enrollment_tokens').set({ revoked_at: isoNow() }).where('id', '=', id).execute();
    return toEnrollmentTokenRecord({ ...row, revoked_at: row.revoked_at ?? isoNow() });
  }

  /** Check a presented token without consuming it. Constant-time on the secret. */
  async check(db: Executor, presented: string): Promise<TokenCheck> {
    const m = FORMAT.exec(presented);
    if (!m) return { ok: false, reason: 'malformed' };
    const [, id, secret] = m as unknown as [string, string, string];
    const row = await db.selectFrom('enrollment_tokens').selectAll().where('id', '=', id).executeTakeFirst();
    const expected = Buffer.from(row?.secret_hash ?? '0'.repeat(64), 'hex');
    const matches = timingSafeEqual(expected, Buffer.from(hashSecret(secret), 'hex'));
    if (!row) return { ok: false, reason: 'unknown' };
    if (!matches) return { ok: false, reason: 'wrong-secret' };
    const record = toEnrollmentTokenRecord(row);
    if (record.state !== 'unused') return { ok: false, reason: record.state, record };
    return { ok: true, record };
  }

  /** Mark a token used; false when another request used it first. */
  async consume(db: Executor, id: string, serial: string): Promise<boolean> {
    const r = await db
      .updateTable('enrollment_tokens')
      .set({ used_at: isoNow(), used_for: serial })
      .where('id', '=', id)
      .where('used_at', 'is', null)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }
}
