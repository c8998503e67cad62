import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, inject } from 'vitest';
import { RampartError } from '../errors.js';
import { openStorage, type OpenStorageOptions, type Storage } from '../storage/index.js';
import type { SqlDialect } from '../storage/index.js';

/** Both storage backends; storage tests run once per entry. */
export const DIALECTS: SqlDialect[] = ['sqlite', 'postgres'];

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/** A fresh, empty database of the given dialect, removed by `drop`. */
export async function createTestDatabase(dialect: SqlDialect): Promise<TestDatabase> {
  if (dialect === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'rampart-sqlite-'));
    return {
      url: `sqlite:${join(dir, 'rampart.db')}`,
      drop: async () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  const admin = inject('postgresUrl');
  const name = `rampart_test_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  await client.query(`create database ${name}`);
  await client.end();
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}

/**
 * A migrated database of `dialect` for the tests of one `describe` block: created before them,
 * closed and dropped after them. Read `storage` inside tests and hooks.
 */
export function useTestStorage(
  dialect: SqlDialect,
  options: OpenStorageOptions = {},
): { readonly storage: Storage } {
  let database: TestDatabase | undefined;
  let storage: Storage | undefined;
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    storage = await openStorage(database.url, options);
  });
  afterAll(async () => {
    await storage?.close();
    await database?.drop();
  });
  return {
    get storage() {
      if (!storage) throw new Error('the test database is not open yet: use it inside tests and hooks');
      return storage;
    },
  };
}

/** The RampartError `promise` rejects with; fails the test when it resolves or throws anything else. */
export async function rejectionOf(promise: Promise<unknown>): Promise<RampartError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof RampartError) return err;
    throw err;
  }
  throw new Error('expected a rejection with a RampartError');
}
