import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/**
 * Deployments: how long a canary waits for free devices when some of its devices are held by (or
 * were taken over by) another deployment and no other device of the target can replace them, and
 * since when it has been waiting.
 */
export async function up(db: Kysely<unknown>, _dialect: SqlDialect): Promise<void> {
  await db.schema
    .alterTable('deployments')
    .addColumn('canary_wait_ms', 'integer', (c) => c.notNull().defaultTo(3_600_000))
    .execute();
  await db.schema.alterTable('deployments').addColumn('canary_waiting_since', 'text').execute();
}
