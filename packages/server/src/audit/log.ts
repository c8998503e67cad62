import { sql } from 'kysely';
import {
  CHECKPOINT_ACTION,
  GENESIS_HASH,
  auditEntryHash,
  canonicalJson,
  checkpointMessage,
  verifyAuditChain,
  type AuditCheckpoint,
  type AuditEntry,
  type AuditEvent,
  type AuditOutcome,
  type AuditVerification,
  type StoredAuditEntry,
} from '@rampart/shared/audit';
import type { KeyObject } from 'node:crypto';
import type { PlatformKey } from '../keystore/index.js';
import type { Db, Executor, Storage } from '../storage/index.js';
import type { AuditEntriesTable, AuditCheckpointsTable } from '../storage/schema.js';
import { isoNow } from '../time.js';

/** Advisory lock id that serializes appends to the chain across all connections (PostgreSQL). */
const APPEND_LOCK = 0x72616d70; // "ramp"

export interface AuditQuery {
  afterSeq?: number;
  beforeSeq?: number;
  limit?: number;
  action?: string;
  actor?: string;
  target?: string;
  outcome?: AuditOutcome;
  /** Return the newest entries first (for `tail`). */
  newestFirst?: boolean;
}

export function toEntry(row: AuditEntriesTable): AuditEntry {
  return {
    seq: Number(row.seq),
    time: row.time,
    actor: row.actor,
    action: row.action,
    target: row.target,
    outcome: row.outcome as AuditOutcome,
    details: JSON.parse(row.details) as Record<string, unknown>,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

function toStored(row: AuditEntriesTable): StoredAuditEntry {
  return {
    seq: Number(row.seq),
    time: row.time,
    actor: row.actor,
    action: row.action,
    target: row.target,
    outcome: row.outcome,
    detailsJson: row.details,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

export function toCheckpoint(row: Omit<AuditCheckpointsTable, 'id'> & { id: number }): AuditCheckpoint {
  return {
    id: Number(row.id),
    entryCount: Number(row.entry_count),
    headHash: row.head_hash,
    time: row.time,
    keyId: row.key_id,
    algorithm: row.algorithm,
    signature: row.signature,
  };
}

/**
 * The tamper-evident audit log: an append-only hash chain in the platform database, with
 * checkpoints signed by the platform's audit key. Appends run inside the caller's transaction,
 * so a state change and its audit entry are committed together or not at all.
 */
export class AuditLog {
  constructor(
    private readonly storage: Storage,
    private readonly key: PlatformKey | null,
  ) {}

  get db(): Db {
    return this.storage.db;
  }

  /** Append within `tx` (which must be a transaction). Serialized so that the chain never forks. */
  async append(tx: Executor, event: AuditEvent): Promise<AuditEntry> {
    if (this.storage.dialect === 'postgres') {
      await sql`select pg_advisory_xact_lock(${APPEND_LOCK})`.execute(tx);
    }
    const head = await tx
      .selectFrom('audit_entries')
      .select(['seq', 'hash'])
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    const seq = head ? Number(head.seq) + 1 : 1;
    const prevHash = head?.hash ?? GENESIS_HASH;
    const time = isoNow();
    const detailsJson = canonicalJson(event.details ?? {});
    const hash = auditEntryHash({ seq, time, ...event, detailsJson, prevHash });
    const row: AuditEntriesTable = {
      seq,
      time,
      actor: event.actor,
      action: event.action,
      target: event.target,
      outcome: event.outcome,
      details: detailsJson,
      prev_hash: prevHash,
      hash,
    };
    await tx.insertInto('audit_entries').values(row).execute();
    return toEntry(row);
  }

  /** Append in a transaction of its own (refusals, and actions with no other state change). */
  async record(event: AuditEvent): Promise<AuditEntry> {
    return this.db.transaction().execute((tx) => this.append(tx, event));
  }

  async head(): Promise<{ seq: number; hash: string }> {
    const row = await this.db
      .selectFrom('audit_entries')
      .select(['seq', 'hash'])
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? { seq: Number(row.seq), hash: row.hash } : { seq: 0, hash: GENESIS_HASH };
  }

  async list(q: AuditQuery = {}): Promise<AuditEntry[]> {
    let query = this.db.selectFrom('audit_entries').selectAll();
    if (q.afterSeq !== undefined) query = query.where('seq', '>', q.afterSeq);
    if (q.beforeSeq !== undefined) query = query.where('seq', '<', q.beforeSeq);
    if (q.action) {
      query = q.action.endsWith('.*')
        ? query.where('action', 'like', `${q.action.slice(0, -1).replace(/[%_\\]/g, '\\$&')}%`)
        : query.where('action', '=', q.action);
    }
    if (q.actor) query = query.where('actor', '=', q.actor);
    if (q.target) query = query.where('target', '=', q.target);
    if (q.outcome) query = query.where('outcome', '=', q.outcome);
    const rows = await query
      .orderBy('seq', q.newestFirst ? 'desc' : 'asc')
      .limit(Math.min(q.limit ?? 100, 10_000))
      .execute();
    return rows.map(toEntry);
  }

  async checkpoints(): Promise<AuditCheckpoint[]> {
    const rows = await this.db.selectFrom('audit_checkpoints').selectAll().orderBy('id').execute();
    return rows.map(toCheckpoint);
  }

  /** Stream the chain as stored, in batches, for verification. */
  async *stored(batchSize = 20_000): AsyncGenerator<StoredAuditEntry> {
    let after = 0;
    for (;;) {
      const rows = await this.db
        .selectFrom('audit_entries')
        .selectAll()
        .where('seq', '>', after)
        .orderBy('seq')
        .limit(batchSize)
        .execute();
      for (const row of rows) yield toStored(row);
      if (rows.length < batchSize) return;
      after = Number(rows[rows.length - 1]!.seq);
    }
  }

  /**
   * Sign the current head when entries were added since the last checkpoint. The checkpoint is stored
   * in its table and also appended to the chain, so removing checkpoint rows cannot hide anything.
   */
  async checkpoint(): Promise<AuditCheckpoint | null> {
    const key = this.key;
    if (!key) return null;
    return this.db.transaction().execute(async (tx) => {
      if (this.storage.dialect === 'postgres')
        await sql`select pg_advisory_xact_lock(${APPEND_LOCK})`.execute(tx);
      const head = await tx
        .selectFrom('audit_entries')
        .select(['seq', 'hash', 'action'])
        .orderBy('seq', 'desc')
        .limit(1)
        .executeTakeFirst();
      if (!head) return null;
      const last = await tx
        .selectFrom('audit_checkpoints')
        .select(['entry_count'])
        .orderBy('id', 'desc')
        .limit(1)
        .executeTakeFirst();
      const lastCount = last ? Number(last.entry_count) : 0;
      const headSeq = Number(head.seq);
      if (headSeq <= lastCount || (headSeq === lastCount + 1 && head.action === CHECKPOINT_ACTION))
        return null;
      const time = isoNow();
      const signature = (
        await key.sign(checkpointMessage({ entryCount: headSeq, headHash: head.hash, time }))
      ).toString('base64');
      const inserted = await tx
        .insertInto('audit_checkpoints')
        .values({
          entry_count: headSeq,
          head_hash: head.hash,
          time,
          key_id: key.keyId,
          algorithm: key.signatureAlgorithm,
          signature,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      const checkpoint: AuditCheckpoint = {
        id: Number(inserted.id),
        entryCount: headSeq,
        headHash: head.hash,
        time,
        keyId: key.keyId,
        algorithm: key.signatureAlgorithm,
        signature,
      };
      await this.append(tx, {
        actor: 'system',
        action: CHECKPOINT_ACTION,
        target: `audit:${headSeq}`,
        outcome: 'success',
        details: checkpoint,
      });
      return checkpoint;
    });
  }

  async verify(publicKey: KeyObject | null): Promise<AuditVerification> {
    return verifyAuditChain(this.stored(), { checkpoints: await this.checkpoints(), publicKey });
  }
}
