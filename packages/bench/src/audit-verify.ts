import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { createWriteStream, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { GENESIS_HASH, canonicalJson, checkpointMessage, hashOfEntry, keyIdOf } from '@rampart/shared/audit';
import { openStorage } from '@rampart/server';
import { freshDatabase, type Dialect } from './lib/databases.js';
import { CLI, BENCH_ENV } from './lib/processes.js';
import { record } from './lib/report.js';
import { median, timed } from './lib/stats.js';

type Row = [number, string, string, string, string, string, string, string, string];

/** Build a valid chain of `count` entries in batches, handing each batch to `sink`. */
async function seedChain(
  count: number,
  sink: (rows: Row[]) => Promise<void>,
  jsonl: NodeJS.WritableStream,
): Promise<string> {
  let prev = GENESIS_HASH;
  const base = Date.parse('2026-01-01T00:00:00Z');
  let batch: Row[] = [];
  for (let seq = 1; seq <= count; seq++) {
    const entry = {
      seq,
      time: new Date(base + seq * 10).toISOString(),
      actor: `token:bench${String(seq % 7).padStart(7, '0')}`,
      action: seq % 5 === 0 ? 'device.update' : 'device.create',
      target: `device:dw-${seq}`,
      outcome: 'success' as const,
      details: { model: 'DW100', region: seq % 2 ? 'eu' : 'us' },
      prevHash: prev,
    };
    const hash = hashOfEntry({ ...entry, hash: '' });
    const { time, actor, action, target, outcome, details } = entry;
    batch.push([seq, time, actor, action, target, outcome, canonicalJson(details), prev, hash]);
    jsonl.write(JSON.stringify({ ...entry, hash }) + '\n');
    prev = hash;
    if (batch.length === 10_000) {
      await sink(batch);
      batch = [];
    }
  }
  if (batch.length) await sink(batch);
  await new Promise<void>((r) => jsonl.end(() => r()));
  return prev;
}

export async function benchAuditVerify(dialect: Dialect, entries: number): Promise<void> {
  const db = await freshDatabase(dialect);
  try {
    (await openStorage(db.url)).close();
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(
      join(db.dir, 'audit-checkpoint.pub.pem'),
      publicKey.export({ type: 'spki', format: 'pem' }),
    );
    const exportFile = join(db.dir, 'audit.jsonl');
    const jsonl = createWriteStream(exportFile);
    process.stdout.write(`  seeding ${entries.toLocaleString('en-US')} audit entries on ${dialect}…\n`);

    let head: string;
    if (dialect === 'sqlite') {
      const raw = new Database(db.url.slice('sqlite:'.length));
      raw.pragma('journal_mode = WAL');
      const insert = raw.prepare(
        'insert into audit_entries (seq,time,actor,action,target,outcome,details,prev_hash,hash) values (?,?,?,?,?,?,?,?,?)',
      );
      const many = raw.transaction((rows: Row[]) => rows.forEach((r) => insert.run(...r)));
      head = await seedChain(entries, async (rows) => many(rows), jsonl);
      raw.close();
    } else {
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      head = await seedChain(
        entries,
        async (rows) => {
          const cols = Array.from({ length: 9 }, (_, i) => rows.map((r) => r[i]));
          await client.query(
            `insert into audit_entries (seq,time,actor,action,target,outcome,details,prev_hash,hash)
             select * from unnest($1::bigint[],$2::text[],$3::text[],$4::text[],$5::text[],$6::text[],$7::text[],$8::text[],$9::text[])`,
            cols,
          );
        },
        jsonl,
      );
      await client.end();
    }
    // One signed checkpoint over the whole chain, written the same way on both databases.
    const time = new Date().toISOString();
    const signature = sign(
      'sha256',
      checkpointMessage({ entryCount: entries, headHash: head, time }),
      privateKey,
    );
    const storage = await openStorage(db.url, { migrate: false });
    await storage.db
      .insertInto('audit_checkpoints')
      .values({
        entry_count: entries,
        head_hash: head,
        time,
        key_id: keyIdOf(publicKey),
        algorithm: 'ecdsa-p256-sha256',
        signature: signature.toString('base64'),
      })
      .execute();
    await storage.close();

    const runs: number[] = [];
    for (let i = 0; i < 2; i++) {
      const { ms, result } = await timed(async () =>
        spawnSync(process.execPath, [CLI, 'audit', 'verify', '--data-dir', db.dir, '--json'], {
          env: { ...process.env, ...BENCH_ENV, RAMPART_DATABASE_URL: db.url },
          encoding: 'utf8',
          maxBuffer: 64 * 1024 * 1024,
        }),
      );
      const report = JSON.parse(result.stdout || '{}') as { ok?: boolean; entries?: number };
      if (result.status !== 0 || !report.ok || report.entries !== entries) {
        throw new Error(
          `audit verify failed (${result.status}): ${result.stdout.slice(0, 500)} ${result.stderr.slice(0, 500)}`,
        );
      }
      runs.push(ms / 1000);
    }
    const peerRuns: number[] = [];
    for (let i = 0; i < 3; i++) {
      peerRuns.push(
        (await timed(async () => execFileSync('openssl', ['dgst', '-sha256', exportFile]))).ms / 1000,
      );
    }
    record({
      bench: 'audit verify',
      dialect,
      metric: `${entries.toLocaleString('en-US')} entries, whole CLI run (median of 2)`,
      value: median(runs),
      unit: 's',
      target: { op: '<=', value: 10 },
      peer: { name: 'openssl dgst -sha256 over the same entries as JSON lines', value: median(peerRuns) },
    });
  } finally {
    await db.drop();
  }
}
