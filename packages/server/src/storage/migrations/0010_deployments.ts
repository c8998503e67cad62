import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/**
 * Deployments: a release rolled out to a target set in phases (canary, then a rate), inside
 * maintenance windows, stopped by an abort rule; one row per device in a deployment with its state,
 * and an event history per device.
 */
export async function up(db: Kysely<unknown>, dialect: SqlDialect): Promise<void> {
  const autoId = dialect === 'postgres' ? 'serial' : 'integer';
  const real = dialect === 'postgres' ? 'double precision' : 'real';
  await db.schema
    .createTable('deployments')
    .addColumn('id', autoId, (c) =>
      dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn('release_path', 'text', (c) => c.notNull())
    .addColumn('target_kind', 'text', (c) => c.notNull())
    .addColumn('target_value', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('canary', 'text', (c) => c.notNull())
    .addColumn('canary_size', 'integer', (c) => c.notNull())
    .addColumn('rate_per_minute', real, (c) => c.notNull())
    .addColumn('rate_growth', real, (c) => c.notNull())
    .addColumn('phase_minutes', 'integer', (c) => c.notNull())
    .addColumn('window', 'text')
    .addColumn('abort_at_percent', real)
    .addColumn('min_sample', 'integer', (c) => c.notNull())
    .addColumn('receipt_timeout_ms', 'integer', (c) => c.notNull())
    .addColumn('continuous', 'integer', (c) => c.notNull())
    .addColumn('priority', 'integer', (c) => c.notNull())
    .addColumn('rollout_started_at', 'text')
    .addColumn('credit', real, (c) => c.notNull())
    .addColumn('last_tick_at', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('finished_at', 'text')
    .execute();
  await db.schema.createIndex('deployments_state').on('deployments').column('state').execute();
  await db.schema
    .createTable('deployment_devices')
    .addColumn('deployment_id', 'integer', (c) =>
      c.notNull().references('deployments.id').onDelete('cascade'),
    )
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('seq', 'integer', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('phase', 'integer')
    .addColumn('assigned_at', 'text')
    .addColumn('finished_at', 'text')
    .addColumn('receipt_id', 'text')
    .addPrimaryKeyConstraint('deployment_devices_pk', ['deployment_id', 'device_id'])
    .execute();
  await db.schema
    .createIndex('deployment_devices_device')
    .on('deployment_devices')
    .columns(['device_id', 'state'])
    .execute();
  await db.schema
    .createIndex('deployment_devices_state')
    .on('deployment_devices')
    .columns(['deployment_id', 'state', 'seq'])
    .execute();
  await db.schema
    .createTable('deployment_events')
    .addColumn('id', autoId, (c) =>
      dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn('deployment_id', 'integer', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('event', 'text', (c) => c.notNull())
    .addColumn('at', 'text', (c) => c.notNull())
    .addColumn('detail', 'text')
    .execute();
  await db.schema
    .createIndex('deployment_events_device')
    .on('deployment_events')
    .columns(['device_id', 'id'])
    .execute();
}
