import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/**
 * The TUF release repository: every published version of every role's metadata, the keys the
 * repository knows (and, for online ones, their key store label), signing requests collecting
 * detached signatures until a threshold is met, releases (targets) and the artifacts they point to.
 */
export async function up(db: Kysely<unknown>, dialect: SqlDialect): Promise<void> {
  const autoId = dialect === 'postgres' ? 'serial' : 'integer';
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  await db.schema
    .createTable('tuf_metadata')
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('document', 'text', (c) => c.notNull())
    .addColumn('expires', 'text', (c) => c.notNull())
    .addColumn('published_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('tuf_metadata_pk', ['role', 'version'])
    .execute();
  await db.schema
    .createTable('tuf_keys')
    .addColumn('key_id', 'text', (c) => c.primaryKey())
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('origin', 'text', (c) => c.notNull())
    .addColumn('keystore_label', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('tuf_signing_requests')
    .addColumn('id', autoId, (c) =>
      dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('document', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('published_at', 'text')
    .execute();
  await db.schema
    .createIndex('tuf_signing_requests_role')
    .on('tuf_signing_requests')
    .columns(['role', 'state'])
    .execute();
  await db.schema
    .createTable('update_artifacts')
    .addColumn('sha256', 'text', (c) => c.primaryKey())
    .addColumn('length', bigint, (c) => c.notNull())
    .addColumn('location', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('update_releases')
    .addColumn('path', 'text', (c) => c.primaryKey())
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('version', 'text', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull().references('update_artifacts.sha256'))
    .addColumn('length', bigint, (c) => c.notNull())
    .addColumn('first_model', 'text', (c) => c.notNull())
    .addColumn('release_counter', 'integer', (c) => c.notNull())
    .addColumn('custom', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('signing_request', 'integer')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('update_releases_model')
    .on('update_releases')
    .columns(['first_model', 'release_counter'])
    .execute();
}
