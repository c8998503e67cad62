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
import { chunks, type Db, type Executor, type Storage } from '../storage/index.js';
import type { AuditCheckpointsTable, AuditEntriesTable, AuditQueueTable } from '../storage/schema.js';
import { isoNow } from '../time.js';

/** Advisory lock id that serializes sealing across all connections and processes (PostgreSQL). */
const APPEND_LOCK = 0x72616d70; // "ramp"
/** Most entries chained in one sealing transaction. */
const SEAL_BATCH = 2000;

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
 * checkpoints signed by the platform's audit key.
 *
 * Appending is two steps. `append` writes the entry into `audit_queue` inside the caller's
 * transaction, so a change and its entry commit together or not at all, without making concurrent
 * writers wait for each other. The sealer then moves queued entries into the chain in batches: one
 * short transaction, serialized across processes, assigns sequence numbers and hashes. Reads
 * (`list`, `head`, `verify`, `checkpoint`) seal first, so they always see every committed entry;
 * entries left in the queue by a crash are sealed on the next start.
 */
export class AuditLog {
  private sealing: Promise<void> = Promise.resolve();
  private sealScheduled = false;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly storage: Storage,
    private readonly key: PlatformKey | null,
    private readonly options: {
      /** Offline use: never seal (the database may be read-only). */
      readonly?: boolean;
      onSealError?: (err: unknown) => void;
      /** Told of every queued entry (metrics). */
      onAppend?: (outcome: AuditOutcome) => void;
    } = {},
  ) {}

  get db(): Db {
    return this.storage.db;
  }

  /**
   * Queue an entry within `tx`. It joins the chain after `tx` commits: whoever owns the transaction
   * calls `sealSoon` then (the background sealer and every read catch any it did not).
   */
  async append(tx: Executor, event: AuditEvent): Promise<void> {
    await tx
      .insertInto('audit_queue')
      .values({
        time: isoNow(),
        actor: event.actor,
        action: event.action,
        target: event.target,
        outcome: event.outcome,
        details: canonicalJson(event.details ?? {}),
      })
      .execute();
    this.options.onAppend?.(event.outcome);
  }

  /** Append in a transaction of its own (refusals, and actions with no other state change). */
  async record(event: AuditEvent): Promise<void> {
    await this.db.transaction().execute((tx) => this.append(tx, event));
    this.sealSoon();
  }

  /** Seal soon, coalescing the requests of many concurrent writers into one batch. Call after a commit. */
  sealSoon(): void {
    if (this.sealScheduled || this.stopped || this.options.readonly) return;
    this.sealScheduled = true;
    setTimeout(() => {
      this.sealScheduled = false;
      this.flush().catch((err: unknown) => this.options.onSealError?.(err));
    }, 1).unref();
  }

  /** Keep sealing in the background (entries queued by other processes, or committed after a seal ran). */
  startSealer(intervalMs = 1000): void {
    this.timer ??= setInterval(() => this.sealSoon(), intervalMs);
    this.timer.unref();
  }

  /** Stop background sealing (shutdown); explicit `flush` and `checkpoint` still work. */
  stopSealer(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Chain every committed entry still in the queue. Calls run one after another, never side by side. */
  flush(): Promise<void> {
    if (this.options.readonly) return Promise.resolve();
    const run = this.sealing.then(async () => {
      while ((await this.sealBatch()) === SEAL_BATCH) {
        /* a full batch: more may be waiting */
      }
    });
    this.sealing = run.catch(() => {
      /* reported to the caller of this flush; the next flush starts afresh */
    });
    return run;
  }

  private async lock(tx: Executor): Promise<void> {
    if (this.storage.dialect === 'postgres')
      await sql`select pg_advisory_xact_lock(${APPEND_LOCK})`.execute(tx);
  }

  private async sealBatch(): Promise<number> {
    return this.db.transaction().execute(async (tx) => {
      await this.lock(tx);
      const queued = await tx.selectFrom('audit_queue').selectAll().orderBy('id').limit(SEAL_BATCH).execute();
      if (queued.length === 0) return 0;
      await this.chain(tx, queued);
      for (const ids of chunks(
        queued.map((q) => Number(q.id)),
        1000,
      )) {
        await tx.deleteFrom('audit_queue').where('id', 'in', ids).execute();
      }
      return queued.length;
    });
  }

  /** Place entries at the head of the chain. The caller holds the append lock. */
  private async chain(
    tx: Executor,
    entries: readonly Omit<AuditQueueTable, 'id'>[],
  ): Promise<AuditEntriesTable[]> {
    const head = await tx
      .selectFrom('audit_entries')
      .select(['seq', 'hash'])
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    let seq = head ? Number(head.seq) : 0;
    let prevHash = head?.hash ?? GENESIS_HASH;
    const rows = entries.map(({ time, actor, action, target, outcome, details }): AuditEntriesTable => {
      seq++;
      const hash = auditEntryHash({
        seq,
        time,
        actor,
        action,
        target,
        outcome,
        detailsJson: details,
        prevHash,
      });
      const row = { seq, time, actor, action, target, outcome, details, prev_hash: prevHash, hash };
      prevHash = hash;
      return row;
    });
    for (const batch of chunks(rows, 500)) await tx.insertInto('audit_entries').values(batch).execute();
    return rows;
  }

  /** Entries committed but not yet chained (after a crash, until the next start seals them). */
  async queued(): Promise<number> {
    const r = await this.db
      .selectFrom('audit_queue')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  async head(): Promise<{ seq: number; hash: string }> {
    await this.flush();
    const row = await this.db
      .selectFrom('audit_entries')
      .select(['seq', 'hash'])
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? { seq: Number(row.seq), hash: row.hash } : { seq: 0, hash: GENESIS_HASH };
  }

  async list(q: AuditQuery = {}): Promise<AuditEntry[]> {
    await this.flush();
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
    await this.flush();
    return this.db.transaction().execute(async (tx) => {
      await this.lock(tx);
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
      await this.chain(tx, [
        {
          time,
          actor: 'system',
          action: CHECKPOINT_ACTION,
          target: `audit:${headSeq}`,
          outcome: 'success',
          details: canonicalJson(checkpoint),
        },
      ]);
      return checkpoint;
    });
  }

  async verify(publicKey: KeyObject | null): Promise<AuditVerification> {
    await this.flush();
    return verifyAuditChain(this.stored(), { checkpoints: await this.checkpoints(), publicKey });
  }
}
