import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialect.js';

/**
 * Encrypted update artifacts: a device model can require them, and each encrypted artifact's
 * content key is kept here wrapped (a JWE to a key in the platform key store), never in clear.
 * Keyed by the SHA-256 of the ciphertext the artifact store holds; the plaintext's SHA-256 lets a
 * device's install receipt (which names what is in its slot) be matched to the release.
 */
export async function up(db: Kysely<unknown>, _dialect: SqlDialect): Promise<void> {
  await db.schema
    .alterTable('device_models')
    .addColumn('encrypt_updates', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema
    .createTable('update_content_keys')
    .addColumn('sha256', 'text', (c) => c.primaryKey())
    .addColumn('plaintext_sha256', 'text', (c) => c.notNull())
    .addColumn('wrapped_key', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('update_content_keys_plaintext')
    .on('update_content_keys')
    .column('plaintext_sha256')
    .execute();
}
