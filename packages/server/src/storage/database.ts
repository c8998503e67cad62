import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type Transaction } from 'kysely';
import pg from 'pg';
import { RampartError } from '../errors.js';
import type { SqlDialect } from './dialect.js';
import { RampartMigrations } from './migrations/index.js';
import type { Database } from './schema.js';

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;
/** Anything queries can run on: the database or a transaction. */
export type Executor = Kysely<Database>;

export interface Storage {
  db: Db;
  dialect: SqlDialect;
  /** The URL with any password removed, safe to print. */
  displayUrl: string;
  close(): Promise<void>;
}

export interface OpenStorageOptions {
  poolSize?: number;
  sqliteSynchronous?: 'normal' | 'full';
  /** Run pending migrations (default true). */
  migrate?: boolean;
  /** Open SQLite read-only (offline verification must not change the file). */
  readonly?: boolean;
}

export function dialectOf(url: string): SqlDialect {
  if (url.startsWith('sqlite:')) return 'sqlite';
  if (/^postgres(ql)?:\/\//.test(url)) return 'postgres';
  throw new RampartError(
    'STORAGE',
    `database.url must start with sqlite: or postgres:// (got ${redactUrl(url)})`,
  );
}

export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    // libpq-style URLs may carry the password as a query parameter instead.
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, ':***@').replace(/([?&]password=)[^&]*/gi, '$1***');
  }
}

function sqlitePath(url: string): string {
  const path = url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
  return path === ':memory:' ? path : resolve(path);
}

const INT8_OID = 20;

export async function openStorage(url: string, options: OpenStorageOptions = {}): Promise<Storage> {
  const dialect = dialectOf(url);
  let db: Db;
  if (dialect === 'sqlite') {
    const path = sqlitePath(url);
    if (path !== ':memory:' && !options.readonly) mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    let raw: SqliteDatabase.Database;
    try {
      raw = new SqliteDatabase(path, {
        readonly: options.readonly ?? false,
        fileMustExist: options.readonly ?? false,
      });
    } catch (err) {
      throw new RampartError(
        'STORAGE',
        `cannot open SQLite database ${path}: ${(err as Error).message}`,
        [],
        { cause: err },
      );
    }
    if (!options.readonly) {
      raw.pragma('journal_mode = WAL');
      raw.pragma(`synchronous = ${(options.sqliteSynchronous ?? 'full').toUpperCase()}`);
    }
    raw.pragma('foreign_keys = ON');
    raw.pragma('busy_timeout = 10000');
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(raw) }) });
  } else {
    const pool = new pg.Pool({
      connectionString: url,
      max: options.poolSize ?? 10,
      // bigint columns (audit sequence numbers) fit well within 2^53; read them as numbers.
      types: {
        getTypeParser: ((oid: number, format?: string) =>
          oid === INT8_OID
            ? (v: string) => Number(v)
            : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
      },
    });
    pool.on('error', () => {
      /* idle client errors surface on the next query; keep the process alive */
    });
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    try {
      await sql`select 1`.execute(db);
    } catch (err) {
      await db.destroy();
      throw new RampartError(
        'STORAGE',
        `cannot connect to PostgreSQL at ${redactUrl(url)}: ${(err as Error).message}`,
        [],
        {
          cause: err,
        },
      );
    }
  }

  if (options.migrate ?? true) await migrate(db, dialect);
  return {
    db,
    dialect,
    displayUrl: redactUrl(url),
    close: () => db.destroy(),
  };
}

export async function migrate(db: Db, dialect: SqlDialect): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: new RampartMigrations(dialect),
    migrationTableName: 'rampart_migrations',
    migrationLockTableName: 'rampart_migrations_lock',
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new RampartError(
      'STORAGE',
      `database migration ${failed} failed: ${(error as Error).message}`,
      [],
      { cause: error },
    );
  }
}

/**
 * Kysely's SQLite driver prepares every statement anew; preparing costs more than running most of
 * ours. Prepared statements are kept by SQL text (bounded) and reused unless one is still busy
 * (an iterator over it is open), in which case a fresh one is prepared.
 */
function withStatementCache(raw: SqliteDatabase.Database, limit = 500): SqliteDatabase.Database {
  const cache = new Map<string, SqliteDatabase.Statement>();
  const prepare = raw.prepare.bind(raw);
  return new Proxy(raw, {
    get(target, prop, receiver) {
      if (prop !== 'prepare') {
        const value = Reflect.get(target, prop, receiver) as unknown;
        // Native methods must run on the real database object, not on the proxy.
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      }
      return (source: string) => {
        const hit = cache.get(source);
        if (hit && !hit.busy) return hit;
        const stmt = prepare(source);
        if (!hit) {
          if (cache.size >= limit) cache.delete(cache.keys().next().value!);
          cache.set(source, stmt);
        }
        return stmt;
      };
    },
  });
}
