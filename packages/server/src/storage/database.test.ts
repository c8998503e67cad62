import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { RampartError } from '../errors.js';
import { DIALECTS, createTestDatabase } from '../test-support/databases.js';
import { dialectOf, openStorage, redactUrl } from './database.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'rampart-storage-test-'));
  dirs.push(d);
  return d;
}

describe('database URLs', () => {
  it('tells the dialect from the URL and refuses anything else without showing a password', () => {
    expect(dialectOf('sqlite:./rampart.db')).toBe('sqlite');
    expect(dialectOf('postgres://h/db')).toBe('postgres');
    expect(dialectOf('postgresql://h/db')).toBe('postgres');
    expect(() => dialectOf('mysql://root:hunter2@h/db')).toThrow(RampartError);
    expect(() => dialectOf('mysql://root:hunter2@h/db')).toThrow(/must start with sqlite: or postgres:\/\//);
    expect(() => dialectOf('mysql://root:hunter2@h/db')).not.toThrow(/hunter2/);
  });

  it('redacts passwords in the user part and in the query', () => {
    expect(redactUrl('postgres://rampart:s3cret@db.example:5432/rampart')).toBe(
      'postgres://rampart:***@db.example:5432/rampart',
    );
    expect(redactUrl('postgres://rampart@db.example/rampart?sslmode=require&password=s3cret')).toBe(
      'postgres://rampart@db.example/rampart?sslmode=require&password=***',
    );
    expect(redactUrl('postgres://rampart@db.example/rampart')).toBe('postgres://rampart@db.example/rampart');
    expect(redactUrl('sqlite:/var/lib/rampart/rampart.db')).toBe('sqlite:/var/lib/rampart/rampart.db');
  });
});

describe('SQLite storage', () => {
  it('creates the file with WAL and full synchronous commits by default', async () => {
    const path = join(tempDir(), 'sub', 'rampart.db');
    const storage = await openStorage(`sqlite:${path}`);
    try {
      expect(existsSync(path)).toBe(true);
      const journal = await sql<{ journal_mode: string }>`pragma journal_mode`.execute(storage.db);
      expect(journal.rows[0]?.journal_mode).toBe('wal');
      const sync = await sql<{ synchronous: number }>`pragma synchronous`.execute(storage.db);
      expect(sync.rows[0]?.synchronous).toBe(2); // FULL
    } finally {
      await storage.close();
    }
    const normal = await openStorage(`sqlite:${path}`, { sqliteSynchronous: 'normal' });
    try {
      const sync = await sql<{ synchronous: number }>`pragma synchronous`.execute(normal.db);
      expect(sync.rows[0]?.synchronous).toBe(1); // NORMAL
    } finally {
      await normal.close();
    }
  });

  it('opens read-only for offline checks: never creates the file and refuses writes', async () => {
    const dir = tempDir();
    const missing = join(dir, 'missing.db');
    await expect(openStorage(`sqlite:${missing}`, { readonly: true, migrate: false })).rejects.toThrow(
      `cannot open SQLite database ${missing}`,
    );
    expect(existsSync(missing)).toBe(false);

    const path = join(dir, 'rampart.db');
    await (await openStorage(`sqlite:${path}`)).close();
    const ro = await openStorage(`sqlite:${path}`, { readonly: true, migrate: false });
    try {
      await expect(
        ro.db.insertInto('platform_settings').values({ key: 'k', value: 'v' }).execute(),
      ).rejects.toThrow(/readonly/);
    } finally {
      await ro.close();
    }
  });
});

describe.each(DIALECTS)('storage on %s', (dialect) => {
  it('migrates a fresh database, and again without harm', async () => {
    const db = await createTestDatabase(dialect);
    try {
      const first = await openStorage(db.url);
      expect(first.dialect).toBe(dialect);
      await first.db.insertInto('platform_settings').values({ key: 'k', value: 'v' }).execute();
      await first.close();
      const second = await openStorage(db.url);
      try {
        const row = await second.db.selectFrom('platform_settings').selectAll().executeTakeFirst();
        expect(row).toEqual({ key: 'k', value: 'v' });
        // Audit sequence numbers (bigint on PostgreSQL) come back as numbers.
        await second.db
          .insertInto('audit_entries')
          .values({
            seq: 2 ** 40,
            time: 't',
            actor: 'a',
            action: 'b',
            target: '',
            outcome: 'success',
            details: '{}',
            prev_hash: 'p',
            hash: 'h',
          })
          .execute();
        const seq = await second.db.selectFrom('audit_entries').select('seq').executeTakeFirstOrThrow();
        expect(seq.seq).toBe(2 ** 40);
      } finally {
        await second.close();
      }
    } finally {
      await db.drop();
    }
  });
});

describe('PostgreSQL connection errors', () => {
  it('name the server without its password', async () => {
    const err = await openStorage('postgres://rampart:hunter2@127.0.0.1:1/rampart', { migrate: false }).catch(
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(RampartError);
    expect((err as Error).message).toContain(
      'cannot connect to PostgreSQL at postgres://rampart:***@127.0.0.1:1/rampart',
    );
    expect((err as Error).message).not.toContain('hunter2');
  });
});
