import Database from 'better-sqlite3';
import pg from 'pg';
import type { Dialect } from './databases.js';

export const REGIONS = ['eu', 'us', 'uk', 'apac', 'latam'] as const;
export const STATUSES = ['active', 'active', 'active', 'pending', 'disabled', 'quarantined'] as const;

export interface SeedDevice {
  id: string;
  model: string;
  revision: string;
  serial: string;
  status: string;
  region: string;
  floor: number;
}

/** Deterministic pseudo-random fleet: device i always looks the same. */
export function deviceAt(i: number, prefix = 'dev'): SeedDevice {
  const h = Math.imul(i ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  return {
    id: `${prefix}-${String(i).padStart(8, '0')}`,
    model: h % 4 === 0 ? 'DW200' : 'DW100',
    revision: h % 3 === 0 ? 'A' : 'B',
    serial: `SN${prefix}${i}`,
    status: STATUSES[(h >>> 3) % STATUSES.length]!,
    region: REGIONS[(h >>> 7) % REGIONS.length]!,
    floor: (h >>> 11) % 40,
  };
}

export function csvOf(from: number, count: number, prefix: string): string {
  const lines = ['id,model,hardwareRevision,serial,status,attributes.region,attributes.floor:number'];
  for (let i = from; i < from + count; i++) {
    const d = deviceAt(i, prefix);
    lines.push(`${d.id},${d.model},${d.revision},${d.serial},${d.status},${d.region},${d.floor}`);
  }
  return lines.join('\n') + '\n';
}

/** Insert devices straight through the driver: the floor any import path can be compared with. */
export async function rawInsert(
  dialect: Dialect,
  url: string,
  from: number,
  count: number,
  prefix: string,
): Promise<void> {
  const now = new Date().toISOString();
  if (dialect === 'sqlite') {
    const db = new Database(url.slice('sqlite:'.length));
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    const ins = db.prepare(
      'insert into devices (id, model_id, hardware_revision, serial, attributes, status, created_at, updated_at, status_changed_at) values (?,?,?,?,?,?,?,?,?)',
    );
    db.transaction(() => {
      for (let i = from; i < from + count; i++) {
        const d = deviceAt(i, prefix);
        ins.run(
          d.id,
          d.model,
          d.revision,
          d.serial,
          JSON.stringify({ region: d.region, floor: d.floor }),
          d.status,
          now,
          now,
          now,
        );
      }
    })();
    db.close();
    return;
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('begin');
  for (let start = from; start < from + count; start += 10_000) {
    const rows = Array.from({ length: Math.min(10_000, from + count - start) }, (_, k) =>
      deviceAt(start + k, prefix),
    );
    await client.query(
      `insert into devices (id, model_id, hardware_revision, serial, attributes, status, created_at, updated_at, status_changed_at)
       select id, m, r, s, a::jsonb, st, $7, $7, $7 from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) as t(id, m, r, s, a, st)`,
      [
        rows.map((d) => d.id),
        rows.map((d) => d.model),
        rows.map((d) => d.revision),
        rows.map((d) => d.serial),
        rows.map((d) => JSON.stringify({ region: d.region, floor: d.floor })),
        rows.map((d) => d.status),
        now,
      ],
    );
  }
  await client.query('commit');
  await client.end();
}

/** Device models the seeded devices refer to. */
export async function rawModels(dialect: Dialect, url: string): Promise<void> {
  const now = new Date().toISOString();
  const models = ['DW100', 'DW200'];
  if (dialect === 'sqlite') {
    const db = new Database(url.slice('sqlite:'.length));
    for (const m of models) {
      db.prepare(
        'insert into device_models (id, name, description, created_at, updated_at) values (?,?,?,?,?)',
      ).run(m, m, '', now, now);
      for (const r of ['A', 'B'])
        db.prepare(
          'insert into hardware_revisions (model_id, revision, description, created_at) values (?,?,?,?)',
        ).run(m, r, '', now);
    }
    db.close();
    return;
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  for (const m of models) {
    await client.query(
      'insert into device_models (id, name, description, created_at, updated_at) values ($1,$1,$2,$3,$3)',
      [m, '', now],
    );
    for (const r of ['A', 'B'])
      await client.query(
        'insert into hardware_revisions (model_id, revision, description, created_at) values ($1,$2,$3,$4)',
        [m, r, '', now],
      );
  }
  await client.end();
}
