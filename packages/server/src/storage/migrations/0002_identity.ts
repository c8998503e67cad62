import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/**
 * Certificate authority and device identity: the CA hierarchy, every issued certificate with its
 * lineage, one-time enrollment tokens and the current CRL of each CA.
 */
export async function up(db: Kysely<unknown>, dialect: SqlDialect): Promise<void> {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';

  await db.schema
    .createTable('certificate_authorities')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('generation', 'integer', (c) => c.notNull())
    .addColumn('parent_id', 'text', (c) => c.references('certificate_authorities.id'))
    .addColumn('key_label', 'text', (c) => c.notNull())
    .addColumn('key_algorithm', 'text', (c) => c.notNull())
    .addColumn('key_state', 'text', (c) => c.notNull())
    .addColumn('key_exported_at', 'text')
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('serial', 'text', (c) => c.notNull())
    .addColumn('certificate', 'text', (c) => c.notNull())
    .addColumn('not_before', 'text', (c) => c.notNull())
    .addColumn('not_after', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('crl_number', bigint, (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('certificates')
    .addColumn('serial', 'text', (c) => c.primaryKey())
    .addColumn('issuer_id', 'text', (c) => c.notNull().references('certificate_authorities.id'))
    .addColumn('profile', 'text', (c) => c.notNull())
    // No foreign key: a certificate's record outlives the device's registry entry.
    .addColumn('device_id', 'text')
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('not_before', 'text', (c) => c.notNull())
    .addColumn('not_after', 'text', (c) => c.notNull())
    .addColumn('key_fingerprint', 'text', (c) => c.notNull())
    .addColumn('key_algorithm', 'text', (c) => c.notNull())
    .addColumn('renewed_from', 'text')
    .addColumn('enrollment_policy', 'text')
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('revoked_at', 'text')
    .addColumn('revocation_reason', 'text')
    .addColumn('certificate', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('certificates_device')
    .on('certificates')
    .columns(['device_id', 'not_after'])
    .execute();
  await db.schema.createIndex('certificates_not_after').on('certificates').columns(['not_after']).execute();
  await db.schema
    .createIndex('certificates_renewed_from')
    .on('certificates')
    .columns(['renewed_from'])
    .execute();
  await db.schema
    .createIndex('certificates_issuer_status')
    .on('certificates')
    .columns(['issuer_id', 'status'])
    .execute();
  await db.schema.createIndex('certificates_key').on('certificates').columns(['key_fingerprint']).execute();

  await db.schema
    .createTable('enrollment_tokens')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('secret_hash', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'text', (c) => c.notNull())
    .addColumn('used_at', 'text')
    .addColumn('used_for', 'text')
    .addColumn('revoked_at', 'text')
    .execute();
  await db.schema
    .createIndex('enrollment_tokens_device')
    .on('enrollment_tokens')
    .columns(['device_id'])
    .execute();

  await db.schema
    .createTable('crls')
    .addColumn('issuer_id', 'text', (c) => c.primaryKey().references('certificate_authorities.id'))
    .addColumn('crl_number', bigint, (c) => c.notNull())
    .addColumn('this_update', 'text', (c) => c.notNull())
    .addColumn('next_update', 'text', (c) => c.notNull())
    .addColumn('der', 'text', (c) => c.notNull())
    .execute();
}
