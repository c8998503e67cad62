import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { ROLE_PERMISSIONS, isRole, type Permission, type Role } from '@rampart/shared/access';
import { RampartError, notFound } from '../errors.js';
import type { Executor } from '../storage/index.js';
import type { ApiTokensTable } from '../storage/schema.js';
import { isoNow } from '../time.js';

/**
 * API tokens: `rpt_<id>_<secret>`. The id is public (it names the token in lists and audit entries);
 * the 256-bit secret is shown once and stored only as its SHA-256 hash. A slow hash would add nothing
 * for a secret of this entropy, and lookups stay fast.
 */
const TOKEN_FORMAT = /^rpt_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

export interface Principal {
  tokenId: string;
  name: string;
  role: Role;
  permissions: readonly Permission[];
}

export interface TokenRecord {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  createdBy: string;
  expiresAt: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
  state: 'active' | 'expired' | 'revoked';
}

export type AuthFailure = 'missing' | 'malformed' | 'unknown' | 'wrong-secret' | 'expired' | 'revoked';

/** Random lowercase alphanumeric id for public token ids. */
export function randomId(length: number): string {
  const bytes = randomBytes(length);
  let out = '';
  for (const b of bytes) out += ID_ALPHABET[b % ID_ALPHABET.length];
  return out;
}

/** SHA-256 hex of a high-entropy secret, as stored. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function toTokenRecord(row: ApiTokensTable, now = isoNow()): TokenRecord {
  const state = row.revoked_at ? 'revoked' : row.expires_at && row.expires_at <= now ? 'expired' : 'active';
  return {
    id: row.id,
    name: row.name,
    role: row.role as Role,
    createdAt: row.created_at,
    createdBy: row.created_by,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
    state,
  };
}

/** The public id of a presented token, if it has the token format (used to key rate limits before authentication). */
export function tokenIdOf(presented: string): string | null {
  return TOKEN_FORMAT.exec(presented)?.[1] ?? null;
}

export class TokenService {
  /** last_used_at is written at most once a minute per token, so authentication stays a read. */
  private readonly lastTouched = new Map<string, number>();

  async create(
    db: Executor,
    input: { name: string; role: string; expiresAt: string | null; createdBy: string },
  ): Promise<{ token: string; record: TokenRecord }> {
    if (!isRole(input.role)) {
      throw new RampartError(
        'VALIDATION',
        `role must be one of admin, operator, release-manager, auditor, viewer`,
        [{ field: 'role', message: 'is not a known role' }],
      );
    }
    const id = randomId(12);
    const secret = randomBytes(32).toString('base64url');
    const row: ApiTokensTable = {
      id,
      name: input.name,
      role: input.role,
      secret_hash: hashSecret(secret),
      created_at: isoNow(),
      created_by: input.createdBy,
      expires_at: input.expiresAt,
      revoked_at: null,
      last_used_at: null,
    };
    await db.insertInto('api_tokens').values(row).execute();
    return { token: `rpt_${id}_${secret}`, record: toTokenRecord(row) };
  }

  async list(db: Executor): Promise<TokenRecord[]> {
    const rows = await db.selectFrom('api_tokens').selectAll().orderBy('created_at').orderBy('id').execute();
    const now = isoNow();
    return rows.map((r) => toTokenRecord(r, now));
  }

  async get(db: Executor, id: string): Promise<TokenRecord> {
    const row = await db.selectFrom('api_tokens').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`token ${id}`);
    return toTokenRecord(row);
  }

  /** Revoke a token. The last active admin token cannot be revoked: that would lock everyone out. */
  async revoke(db: Executor, id: string): Promise<TokenRecord> {
    const token = await this.get(db, id);
    if (token.state === 'revoked') return token;
    if (token.role === 'admin' && token.state === 'active') {
      const now = isoNow();
      const admins = await db
        .selectFrom('api_tokens')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('role', '=', 'admin')
        .where('revoked_at', 'is', null)
        .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
        .executeTakeFirstOrThrow();
      if (Number(admins.n) <= 1) {
        throw new RampartError(
          'CONFLICT',
          `token ${id} is the last active admin token; create another admin token before revoking it`,
        );
      }
    }
    await db.updateTable('api_tokens').set({ revoked_at: isoNow() }).where('id', '=', id).execute();
    return this.get(db, id);
  }

  async countActive(db: Executor): Promise<number> {
    const r = await db
      .selectFrom('api_tokens')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('revoked_at', 'is', null)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  /** Check a presented bearer token. Constant-time on the secret; the reason is for the audit log only. */
  async authenticate(db: Executor, presented: string | undefined): Promise<Principal | AuthFailure> {
    if (!presented) return 'missing';
    const m = TOKEN_FORMAT.exec(presented);
    if (!m) return 'malformed';
    const [, id, secret] = m as unknown as [string, string, string];
    const row = await db.selectFrom('api_tokens').selectAll().where('id', '=', id).executeTakeFirst();
    const expected = Buffer.from(row?.secret_hash ?? '0'.repeat(64), 'hex');
    const matches = timingSafeEqual(expected, Buffer.from(hashSecret(secret), 'hex'));
    if (!row) return 'unknown';
    if (!matches) return 'wrong-secret';
    if (row.revoked_at) return 'revoked';
    const now = isoNow();
    if (row.expires_at && row.expires_at <= now) return 'expired';
    const last = this.lastTouched.get(id) ?? 0;
    if (Date.now() - last > 60_000) {
      this.lastTouched.set(id, Date.now());
      await db.updateTable('api_tokens').set({ last_used_at: now }).where('id', '=', id).execute();
    }
    const role = row.role as Role;
    return { tokenId: id, name: row.name, role, permissions: ROLE_PERMISSIONS[role] };
  }
}
