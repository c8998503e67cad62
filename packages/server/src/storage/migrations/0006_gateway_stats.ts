import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/** Per-device connection statistics and the gateway's security events, for the fleet defender. */
export async function up(db: Kysely<unknown>, dialect: SqlDialect): Promise<void> {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  await db.schema
    .createTable('device_connection_stats')
    .addColumn('device_id', 'text', (c) => c.primaryKey())
    .addColumn('connect_attempts', bigint, (c) => c.notNull())
    .addColumn('connects', bigint, (c) => c.notNull())
    .addColumn('disconnects', bigint, (c) => c.notNull())
    .addColumn('messages_in', bigint, (c) => c.notNull())
    .addColumn('messages_out', bigint, (c) => c.notNull())
    .addColumn('bytes_in', bigint, (c) => c.notNull())
    .addColumn('bytes_out', bigint, (c) => c.notNull())
    .addColumn('authorization_failures', bigint, (c) => c.notNull())
    .addColumn('last_source_address', 'text')
    .addColumn('last_connected_at', 'text')
    .addColumn('last_disconnected_at', 'text')
    .addColumn('last_disconnect_reason', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('security_events')
    .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) =>
      dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn('time', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text')
    .addColumn('source_address', 'text')
    .addColumn('reason', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('security_events_device')
    .on('security_events')
    .columns(['device_id', 'id'])
    .execute();
  await db.schema.createIndex('security_events_kind').on('security_events').columns(['kind', 'id']).execute();
}
