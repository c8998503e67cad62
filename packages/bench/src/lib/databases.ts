import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startThrowawayPostgres, type ThrowawayPostgres } from '@rampart/server/dev';

export type Dialect = 'sqlite' | 'postgres';

let server: ThrowawayPostgres | null = null;

/**
 * Benchmarks use PostgreSQL with its durable defaults (fsync and synchronous commit on), unlike the
 * test suite, so that the figures mean something for production.
 */
async function postgresAdminUrl(): Promise<string> {
  if (process.env.RAMPART_BENCH_DATABASE_URL) return process.env.RAMPART_BENCH_DATABASE_URL;
  server ??= await startThrowawayPostgres({ durable: true });
  return server.url;
}

export interface BenchDatabase {
  url: string;
  dir: string;
  drop(): Promise<void>;
}

/** A fresh database plus a fresh data directory for one benchmark. */
export async function freshDatabase(dialect: Dialect): Promise<BenchDatabase> {
  const dir = mkdtempSync(join(tmpdir(), 'rampart-bench-'));
  if (dialect === 'sqlite') {
    return {
      url: `sqlite:${join(dir, 'rampart.db')}`,
      dir,
      drop: async () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  const admin = await postgresAdminUrl();
  const name = `rampart_bench_${randomBytes(5).toString('hex')}`;
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`create database ${name}`);
  await c.end();
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    dir,
    drop: async () => {
      const d = new pg.Client({ connectionString: admin });
      await d.connect();
      await d.query(`drop database if exists ${name} with (force)`);
      await d.end();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function stopPostgres(): void {
  server?.stop();
  server = null;
}
