import { request } from 'undici';
import { openStorage } from '@rampart/server';
import { freshDatabase, type Dialect } from './lib/databases.js';
import { csvOf, rawInsert, rawModels } from './lib/devices.js';
import { startRampart } from './lib/processes.js';
import { record } from './lib/report.js';
import { median, timed } from './lib/stats.js';

const BATCH = 50_000;
const RUNS = 3;

/** Bulk import through the API (CSV, validated, one transaction, audited) against raw driver inserts. */
export async function benchImport(dialect: Dialect): Promise<void> {
  const db = await freshDatabase(dialect);
  const peerDb = await freshDatabase(dialect);
  const rampart = await startRampart(db.dir, db.url);
  try {
    await rawModels(dialect, db.url);
    const ours: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const csv = csvOf(run * BATCH, BATCH, 'imp');
      const { ms, result } = await timed(async () => {
        const res = await request(`${rampart.url}/api/v1/devices/import`, {
          method: 'POST',
          headers: { authorization: `Bearer ${rampart.token}`, 'content-type': 'text/csv' },
          body: csv,
          dispatcher: rampart.dispatcher,
        });
        return { status: res.statusCode, body: (await res.body.json()) as { imported?: number } };
      });
      if (result.status !== 200 || result.body.imported !== BATCH)
        throw new Error(`import failed: ${result.status} ${JSON.stringify(result.body).slice(0, 500)}`);
      ours.push(BATCH / (ms / 1000));
    }

    (await openStorage(peerDb.url)).close();
    await rawModels(dialect, peerDb.url);
    const theirs: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const { ms } = await timed(() => rawInsert(dialect, peerDb.url, run * BATCH, BATCH, 'imp'));
      theirs.push(BATCH / (ms / 1000));
    }
    record({
      bench: 'bulk import',
      dialect,
      metric: `${BATCH.toLocaleString('en-US')}-device CSV through POST /api/v1/devices/import (median of ${RUNS})`,
      value: median(ours),
      unit: 'devices/s',
      target: { op: '>=', value: 5000 },
      peer: { name: 'raw driver inserts in one transaction', value: median(theirs) },
    });
  } finally {
    await rampart.stop();
    await db.drop();
    await peerDb.drop();
  }
}
