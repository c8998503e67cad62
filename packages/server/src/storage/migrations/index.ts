import type { Kysely, Migration, MigrationProvider } from 'kysely';
import type { SqlDialect } from '../dialect.js';
import * as m0001 from './0001_foundation.js';
import * as m0002 from './0002_identity.js';
import * as m0003 from './0003_policies.js';
import * as m0004 from './0004_shadows.js';
import * as m0005 from './0005_commands.js';
import * as m0006 from './0006_gateway_stats.js';
import * as m0007 from './0007_provisioning.js';
import * as m0008 from './0008_updates.js';
import * as m0009 from './0009_director.js';
import * as m0010 from './0010_deployments.js';
import * as m0011 from './0011_update_deltas.js';
import * as m0012 from './0012_update_encryption.js';
import * as m0013 from './0013_deployment_canary_wait.js';

interface DialectMigration {
  up(db: Kysely<unknown>, dialect: SqlDialect): Promise<void>;
  down?(db: Kysely<unknown>, dialect: SqlDialect): Promise<void>;
}

/** Migrations in order. One list for both dialects; a migration branches on the dialect only where SQL differs. */
const MIGRATIONS: Record<string, DialectMigration> = {
  '0001_foundation': m0001,
  '0002_identity': m0002,
  '0003_policies': m0003,
  '0004_shadows': m0004,
  '0005_commands': m0005,
  '0006_gateway_stats': m0006,
  '0007_provisioning': m0007,
  '0008_updates': m0008,
  '0009_director': m0009,
  '0010_deployments': m0010,
  '0011_update_deltas': m0011,
  '0012_update_encryption': m0012,
  '0013_deployment_canary_wait': m0013,
};

export class RampartMigrations implements MigrationProvider {
  constructor(private readonly dialect: SqlDialect) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    const out: Record<string, Migration> = {};
    for (const [name, m] of Object.entries(MIGRATIONS)) {
      out[name] = {
        up: (db) => m.up(db, this.dialect),
        ...(m.down ? { down: (db: Kysely<unknown>) => m.down!(db, this.dialect) } : {}),
      };
    }
    return out;
  }
}
