import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/**
 * The director: its root metadata, what each device must install (its assignment), the per-device targets metadata
 * signed for it (one row per device, replaced with a higher version on every change), and the
 * signed install receipts devices report.
 */
export async function up(db: Kysely<unknown>, dialect: SqlDialect): Promise<void> {
  const autoId = dialect === 'postgres' ? 'serial' : 'integer';
  await db.schema
    .createTable('update_assignments')
    .addColumn('device_id', 'text', (c) => c.primaryKey())
    .addColumn('target_path', 'text', (c) => c.notNull())
    .addColumn('deployment_id', 'text')
    .addColumn('assigned_at', 'text', (c) => c.notNull())
    .addColumn('assigned_by', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('director_roots')
    .addColumn('version', 'integer', (c) => c.primaryKey())
    .addColumn('document', 'text', (c) => c.notNull())
    .addColumn('expires', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('director_metadata')
    .addColumn('device_id', 'text', (c) => c.primaryKey())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('content', 'text', (c) => c.notNull())
    .addColumn('document', 'text', (c) => c.notNull())
    .addColumn('expires', 'text', (c) => c.notNull())
    .addColumn('signed_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('update_receipts')
    .addColumn('seq', autoId, (c) =>
      dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn('id', 'text', (c) => c.notNull().unique())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('outcome', 'text', (c) => c.notNull())
    .addColumn('target_path', 'text')
    .addColumn('deployment_id', 'text')
    .addColumn('version', 'text', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('document', 'text', (c) => c.notNull())
    .addColumn('certificate_serial', 'text', (c) => c.notNull())
    .addColumn('received_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('update_receipts_device')
    .on('update_receipts')
    .columns(['device_id', 'received_at'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('update_receipts').execute();
  await db.schema.dropTable('director_metadata').execute();
  await db.schema.dropTable('director_roots').execute();
  await db.schema.dropTable('update_assignments').execute();
}
