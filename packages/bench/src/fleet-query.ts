import Database from 'better-sqlite3';
import pg from 'pg';
import { request } from 'undici';
import { openStorage } from '@rampart/server';
import { freshDatabase, type Dialect } from './lib/databases.js';
import { rawInsert, rawModels } from './lib/devices.js';
import { startRampart } from './lib/processes.js';
import { record } from './lib/report.js';
import { median, percentile, timed } from './lib/stats.js';

const QUERY = 'model = "DW100" and attributes.region = "eu" and status = "active"';
const RUNS = 40;

/** A fleet query over a large fleet on an indexed attribute: through the API vs hand-written SQL on the raw driver. */
export async function benchFleetQuery(dialect: Dialect, devices: number): Promise<void> {
  const db = await freshDatabase(dialect);
  try {
    (await openStorage(db.url)).close();
    await rawModels(dialect, db.url);
    process.stdout.write(`  seeding ${devices.toLocaleString('en-US')} devices on ${dialect}…\n`);
    const chunk = 100_000;
    for (let from = 0; from < devices; from += chunk)
      await rawInsert(dialect, db.url, from, Math.min(chunk, devices - from), 'dev');
    if (dialect === 'postgres') {
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      await c.query('vacuum analyze devices');
      await c.end();
    }

    const rampart = await startRampart(db.dir, db.url);
    try {
      const headers = { authorization: `Bearer ${rampart.token}`, 'content-type': 'application/json' };
      const { ms: indexMs, result: idx } = await timed(async () => {
        const res = await request(`${rampart.url}/api/v1/device-attribute-indexes`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ name: 'region' }),
          dispatcher: rampart.dispatcher,
        });
        return { status: res.statusCode, text: await res.body.text() };
      });
      if (idx.status !== 201)
        throw new Error(`creating the attribute index failed: ${idx.status} ${idx.text}`);
      process.stdout.write(
        `  indexed attributes.region over ${devices.toLocaleString('en-US')} devices in ${(indexMs / 1000).toFixed(1)} s\n`,
      );

      const api = async (count: boolean) => {
        const times: number[] = [];
        let returned = 0;
        for (let i = 0; i < RUNS; i++) {
          const url = `${rampart.url}/api/v1/devices?limit=100&count=${count}&query=${encodeURIComponent(QUERY)}`;
          const { ms, result } = await timed(async () => {
            const res = await request(url, { headers, dispatcher: rampart.dispatcher });
            return {
              status: res.statusCode,
              body: (await res.body.json()) as { items: unknown[]; total?: number },
            };
          });
          if (result.status !== 200)
            throw new Error(`query failed: ${result.status} ${JSON.stringify(result.body).slice(0, 300)}`);
          returned = result.body.items.length;
          if (i >= 3) times.push(ms); // the first calls warm caches
        }
        return { times, returned };
      };
      const page = await api(false);
      const counted = await api(true);
      const peer = await rawQuery(dialect, db.url);

      record({
        bench: 'fleet query',
        dialect,
        metric: `first page (100) of \`${QUERY}\` over ${devices.toLocaleString('en-US')} devices via the API, p50 (p95 ${percentile(page.times, 95).toFixed(1)} ms)`,
        value: median(page.times),
        unit: 'ms',
        target: { op: '<=', value: 50 },
        peer: { name: 'hand-written SQL on the raw driver', value: median(peer.page) },
      });
      record({
        bench: 'fleet query',
        dialect,
        metric: `same query with total count, p50 (p95 ${percentile(counted.times, 95).toFixed(1)} ms)`,
        value: median(counted.times),
        unit: 'ms',
        peer: { name: 'hand-written count + page SQL on the raw driver', value: median(peer.counted) },
      });
    } finally {
      await rampart.stop();
    }
  } finally {
    await db.drop();
  }
}

async function rawQuery(dialect: Dialect, url: string): Promise<{ page: number[]; counted: number[] }> {
  const page: number[] = [];
  const counted: number[] = [];
  if (dialect === 'sqlite') {
    const db = new Database(url.slice('sqlite:'.length), { readonly: true });
    const sel = db.prepare(
      `select * from devices where model_id = ? and json_extract(attributes, '$.region') = ? and status = ? order by id limit 100`,
    );
    const cnt = db.prepare(
      `select count(*) as n from devices where model_id = ? and json_extract(attributes, '$.region') = ? and status = ?`,
    );
    for (let i = 0; i < RUNS; i++) {
      page.push((await timed(async () => sel.all('DW100', 'eu', 'active'))).ms);
      counted.push(
        (await timed(async () => [cnt.get('DW100', 'eu', 'active'), sel.all('DW100', 'eu', 'active')])).ms,
      );
    }
    db.close();
  } else {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const sel = `select * from devices where model_id = $1 and attributes->>'region' = $2 and status = $3 order by id limit 100`;
    const cnt = `select count(*) from devices where model_id = $1 and attributes->>'region' = $2 and status = $3`;
    for (let i = 0; i < RUNS; i++) {
      page.push((await timed(() => c.query(sel, ['DW100', 'eu', 'active']))).ms);
      counted.push(
        (
          await timed(async () => [
            await c.query(cnt, ['DW100', 'eu', 'active']),
            await c.query(sel, ['DW100', 'eu', 'active']),
          ])
        ).ms,
      );
    }
    await c.end();
  }
  return { page: page.slice(3), counted: counted.slice(3) };
}
