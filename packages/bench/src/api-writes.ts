import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { freshDatabase, type Dialect } from './lib/databases.js';
import { closedLoop } from './lib/load.js';
import { BENCH_ENV, spawnModule, startRampart, stopChild } from './lib/processes.js';
import { record } from './lib/report.js';
import { median, percentile } from './lib/stats.js';

const CONCURRENCY = 16;
const DURATION_MS = 10_000;

/** Device writes per second through the management API, each with its audit entry, against a bare Fastify peer. */
export async function benchApiWrites(dialect: Dialect): Promise<void> {
  const db = await freshDatabase(dialect);
  const peerDb = await freshDatabase(dialect);
  const rampart = await startRampart(db.dir, db.url);
  try {
    const headers = { authorization: `Bearer ${rampart.token}`, 'content-type': 'application/json' };
    const model = await request(`${rampart.url}/api/v1/device-models`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ id: 'DW100', name: 'Door sensor' }),
      dispatcher: rampart.dispatcher,
    });
    await model.body.text();
    if (model.statusCode !== 201) throw new Error(`creating the model failed: ${model.statusCode}`);

    const ours = await closedLoop({
      concurrency: CONCURRENCY,
      durationMs: DURATION_MS,
      request: async (n) => {
        const res = await request(`${rampart.url}/api/v1/devices`, {
          method: 'POST',
          headers,
          body: JSON.stringify({
            model: 'DW100',
            attributes: { region: n % 2 ? 'eu' : 'us', floor: n % 10 },
          }),
          dispatcher: rampart.dispatcher,
        });
        await res.body.text();
        return res.statusCode === 201;
      },
    });
    if (ours.failed > 0) throw new Error(`${ours.failed} device writes failed`);

    const theirs = await runPeer(peerDb.dir, peerDb.url);

    record({
      bench: 'api writes',
      dialect,
      metric: `POST /api/v1/devices with audit entry, ${CONCURRENCY} concurrent, ${DURATION_MS / 1000} s (p50 latency ${median(ours.latenciesMs).toFixed(1)} ms, p95 ${percentile(ours.latenciesMs, 95).toFixed(1)} ms)`,
      value: ours.completed / ours.seconds,
      unit: 'writes/s',
      target: { op: '>=', value: 1000 },
      peer: { name: 'bare Fastify + one INSERT, no auth/validation/audit', value: theirs },
    });
  } finally {
    await rampart.stop();
    await db.drop();
    await peerDb.drop();
  }
}

/** Same load against the peer, which serves TLS with a throwaway self-signed P-256 certificate made by openssl. */
async function runPeer(dir: string, databaseUrl: string): Promise<number> {
  const keyFile = join(dir, 'peer-key.pem');
  const certFile = join(dir, 'peer-cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { stdio: 'ignore' },
  );
  const peer = spawnModule(
    'peer-server.js',
    [databaseUrl, keyFile, certFile],
    /^listening peer (\S+)$/m,
    BENCH_ENV,
  );
  const url = await peer.ready;
  const dispatcher = new Agent({ connect: { ca: readFileSync(certFile, 'utf8') }, connections: 64 });
  try {
    const r = await closedLoop({
      concurrency: CONCURRENCY,
      durationMs: DURATION_MS,
      request: async (n) => {
        const res = await request(`${url}/devices`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ attributes: { region: n % 2 ? 'eu' : 'us', floor: n % 10 } }),
          dispatcher,
        });
        await res.body.text();
        return res.statusCode === 201;
      },
    });
    return r.completed / r.seconds;
  } finally {
    await dispatcher.close();
    await stopChild(peer.child);
  }
}
