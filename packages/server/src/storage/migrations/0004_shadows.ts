import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/** Device shadows: desired and reported state with one version counter per device. */
export async function up(db: Kysely<unknown>, _dialect: SqlDialect): Promise<void> {
  await db.schema
    .createTable('device_shadows')
    .addColumn('device_id', 'text', (c) => c.primaryKey().references('devices.id').onDelete('cascade'))
    .addColumn('desired', 'text', (c) => c.notNull())
    .addColumn('reported', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('desired_updated_at', 'text')
    .addColumn('reported_updated_at', 'text')
    .execute();
}
