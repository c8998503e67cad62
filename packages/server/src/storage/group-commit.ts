import { sql } from 'kysely';
import type { Db, Tx } from './database.js';

interface Queued {
  work: (tx: Tx) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit for small writes that many devices make at once (director metadata, update
 * receipts). Work that arrives while a transaction is being written waits and goes into the next
 * transaction together: one commit — one fsync on SQLite — for up to `limit` writes. Each piece runs
 * under its own savepoint, so a failure rolls back only its own writes and rejects only its own
 * promise; none resolves before the transaction has committed. A failed commit rejects the whole
 * group.
 *
 * The work gets the group's transaction and must use only it: on SQLite the transaction holds the
 * one connection, so a query through the database handle inside it would wait for itself.
 */
export class GroupCommit {
  private readonly queue: Queued[] = [];
  private writing = false;

  constructor(
    private readonly db: Db,
    private readonly options: { limit?: number; afterCommit?: () => void } = {},
  ) {}

  /** Run `work` in the next group's transaction; resolves with its result once that has committed. */
  run<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ work, resolve: resolve as (v: unknown) => void, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.writing) return;
    this.writing = true;
    setImmediate(() => void this.write());
  }

  private async write(): Promise<void> {
    const group = this.queue.splice(0, this.options.limit ?? 64);
    const done: { item: Queued; value: unknown }[] = [];
    const failed: { item: Queued; err: unknown }[] = [];
    try {
      await this.db.transaction().execute(async (tx) => {
        for (const item of group) {
          await sql`savepoint group_item`.execute(tx);
          try {
            const value = await item.work(tx);
            await sql`release savepoint group_item`.execute(tx);
            done.push({ item, value });
          } catch (err) {
            await sql`rollback to savepoint group_item`.execute(tx);
            await sql`release savepoint group_item`.execute(tx);
            failed.push({ item, err });
          }
        }
      });
      if (done.length) this.options.afterCommit?.();
      for (const d of done) d.item.resolve(d.value);
    } catch (err) {
      // Nothing of this group was committed.
      for (const d of done) d.item.reject(err);
    } finally {
      for (const f of failed) f.item.reject(f.err);
      this.writing = false;
      if (this.queue.length) this.schedule();
    }
  }
}
