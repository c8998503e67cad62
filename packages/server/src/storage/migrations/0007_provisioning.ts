import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/**
 * Manufacturing and zero-touch provisioning: factory stations and the manufacturing CAs birth
 * certificates chain to, imported batch manifests (the traceability chain device ← batch ← station),
 * stored enrollment policies, remote attestation (reference values, used nonces, results) and the
 * signed provisioning transcripts.
 */
export async function up(db: Kysely<unknown>, dialect: SqlDialect): Promise<void> {
  // Flags are 0/1 integers on both dialects, so that rows read the same way.
  const bool = 'integer';
  await db.schema
    .createTable('stations')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('public_key', 'text', (c) => c.notNull())
    .addColumn('key_id', 'text', (c) => c.notNull().unique())
    .addColumn('ca_serial', 'text')
    .addColumn('description', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('registered_at', 'text', (c) => c.notNull())
    .addColumn('registered_by', 'text', (c) => c.notNull())
    .addColumn('revoked_at', 'text')
    .execute();
  await db.schema
    .createTable('manufacturer_cas')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('fingerprint', 'text', (c) => c.notNull().unique())
    .addColumn('certificate', 'text', (c) => c.notNull())
    .addColumn('not_after', 'text', (c) => c.notNull())
    .addColumn('registered_at', 'text', (c) => c.notNull())
    .addColumn('registered_by', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('batches')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('station', 'text', (c) => c.notNull().references('stations.name'))
    .addColumn('manifest_digest', 'text', (c) => c.notNull())
    .addColumn('device_count', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('closed_at', 'text', (c) => c.notNull())
    .addColumn('imported_at', 'text', (c) => c.notNull())
    .addColumn('imported_by', 'text', (c) => c.notNull())
    .addColumn('manifest', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('manifest_devices')
    .addColumn('device_id', 'text', (c) => c.primaryKey())
    .addColumn('batch_id', 'text', (c) => c.notNull().references('batches.id'))
    .addColumn('serial', 'text', (c) => c.notNull())
    .addColumn('model', 'text', (c) => c.notNull())
    .addColumn('hardware_revision', 'text')
    .addColumn('trust_anchor', 'text', (c) => c.notNull())
    .addColumn('key_fingerprint', 'text', (c) => c.notNull())
    .addColumn('birth_certificate', 'text')
    .addColumn('birth_fingerprint', 'text')
    .addColumn('birth_serial', 'text')
    .addColumn('ek', 'text')
    .addColumn('ak', 'text')
    .addColumn('provisioned_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('manifest_devices_batch').on('manifest_devices').column('batch_id').execute();
  await db.schema
    .createIndex('manifest_devices_birth')
    .on('manifest_devices')
    .column('birth_fingerprint')
    .execute();
  await db.schema
    .createTable('enrollment_policies')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('enabled', bool, (c) => c.notNull())
    .addColumn('config', 'text', (c) => c.notNull())
    .addColumn('placement', 'text', (c) => c.notNull())
    .addColumn('description', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('claim_uses')
    .addColumn('policy', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('certificate_serial', 'text', (c) => c.notNull())
    .addColumn('used_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('claim_uses_pk', ['policy', 'device_id'])
    .execute();
  await db.schema.createIndex('claim_uses_time').on('claim_uses').columns(['policy', 'used_at']).execute();
  await db.schema
    .createTable('model_provisioning')
    .addColumn('model', 'text', (c) => c.primaryKey())
    .addColumn('attestation', 'text', (c) => c.notNull())
    .addColumn('accept_warning', bool, (c) => c.notNull())
    .addColumn('admit_software', bool, (c) => c.notNull())
    .addColumn('certificate_hours', 'integer', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('reference_values')
    .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) =>
      dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn('model', 'text', (c) => c.notNull())
    .addColumn('component', 'text', (c) => c.notNull())
    .addColumn('digest', 'text', (c) => c.notNull())
    .addColumn('description', 'text', (c) => c.notNull())
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('reference_values_unique', ['model', 'component', 'digest'])
    .execute();
  await db.schema
    .createTable('attestation_nonces')
    .addColumn('nonce_hash', 'text', (c) => c.primaryKey())
    .addColumn('expires_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('attestation_nonces_expiry')
    .on('attestation_nonces')
    .column('expires_at')
    .execute();
  await db.schema
    .createTable('attestation_results')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('anchor', 'text', (c) => c.notNull())
    .addColumn('reasons', 'text', (c) => c.notNull())
    .addColumn('measurements', 'text', (c) => c.notNull())
    .addColumn('evidence_digest', 'text', (c) => c.notNull())
    .addColumn('key_fingerprint', 'text', (c) => c.notNull())
    .addColumn('birth_fingerprint', 'text')
    .addColumn('token_hash', 'text')
    .addColumn('token_expires_at', 'text')
    .addColumn('token_used_at', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('attestation_results_device')
    .on('attestation_results')
    .columns(['device_id', 'created_at'])
    .execute();
  await db.schema
    .createIndex('attestation_results_token')
    .on('attestation_results')
    .column('token_hash')
    .execute();
  await db.schema
    .createTable('provisioning_transcripts')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('certificate_serial', 'text')
    .addColumn('decision', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('document', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('provisioning_transcripts_device')
    .on('provisioning_transcripts')
    .columns(['device_id', 'created_at'])
    .execute();
  await db.schema.alterTable('devices').addColumn('decommissioned_at', 'text').execute();
}
