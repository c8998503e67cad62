import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/**
 * Binary deltas offered with releases: one row per patch (the release it builds, the earlier
 * release it applies to, the patch artifact in the store), so that the updates listener serves a
 * patch exactly while its release is published. A release whose signing failed after its deltas
 * were prepared keeps the reason in `failure`.
 */
export async function up(db: Kysely<unknown>, dialect: SqlDialect): Promise<void> {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  const real = dialect === 'postgres' ? 'double precision' : 'real';
  await db.schema
    .createTable('update_deltas')
    .addColumn('release_path', 'text', (c) =>
      c.notNull().references('update_releases.path').onDelete('cascade'),
    )
    .addColumn('from_path', 'text', (c) => c.notNull())
    .addColumn('from_version', 'text', (c) => c.notNull())
    .addColumn('from_sha256', 'text', (c) => c.notNull())
    .addColumn('target_path', 'text', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull().references('update_artifacts.sha256'))
    .addColumn('length', bigint, (c) => c.notNull())
    .addColumn('ratio', real, (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('update_deltas_pk', ['release_path', 'from_path'])
    .execute();
  await db.schema.createIndex('update_deltas_sha256').on('update_deltas').column('sha256').execute();
  await db.schema.alterTable('update_releases').addColumn('failure', 'text').execute();
}
