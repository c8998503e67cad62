import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/** Gateway policies: named, versioned documents attached to device models, groups and devices. */
export async function up(db: Kysely<unknown>, _dialect: SqlDialect): Promise<void> {
  await db.schema
    .createTable('policies')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('description', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('policy_versions')
    .addColumn('name', 'text', (c) => c.notNull().references('policies.name').onDelete('cascade'))
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('document', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('policy_versions_pk', ['name', 'version'])
    .execute();
  await db.schema
    .createTable('policy_attachments')
    .addColumn('name', 'text', (c) => c.notNull().references('policies.name').onDelete('cascade'))
    .addColumn('target_kind', 'text', (c) => c.notNull())
    .addColumn('target_id', 'text', (c) => c.notNull())
    .addColumn('attached_at', 'text', (c) => c.notNull())
    .addColumn('attached_by', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('policy_attachments_pk', ['name', 'target_kind', 'target_id'])
    .execute();
  await db.schema
    .createIndex('policy_attachments_target')
    .on('policy_attachments')
    .columns(['target_kind', 'target_id'])
    .execute();
}
