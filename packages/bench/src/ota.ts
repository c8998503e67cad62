import { fork, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { releaseImages } from './delta.js';
import { BENCH_MODEL, api, registerAndEnroll } from './lib/gateway-fleet.js';
import type { DeviceRun, OtaWorkerConfig, OtaWorkerResult } from './lib/ota-devices.js';
import { startRampart, stopChild, waitForLine, type RunningRampart } from './lib/processes.js';
import { cpuMeter } from './lib/procfs.js';
import { record } from './lib/report.js';
import { fmt, median, percentile } from './lib/stats.js';

/**
 * A rollout of a 1 MiB release to 10,000 simulated devices, every one of them verifying fully as
 * the agent does: the director's per-device targets metadata over mutual TLS (its own certificate),
 * the release repository through the unmodified tuf-js client (timestamp, snapshot, targets, with
 * signatures, versions, expiry and hashes checked), the agreement of the two, the chunk-verified
 * download, the A/B install with self-test and commit, and the signed receipt that the deployment
 * counts. The platform is `rampart up` on its embedded defaults (SQLite, development repository)
 * in its own process; the devices run in two processes of their own.
 *
 * The clock starts when the deployment is created (target: every device of the model, no canary,
 * no rate limit to speak of) and stops when the deployment has every device succeeded: it includes
 * the scheduler handing the devices to the director. Devices check in once the director has their
 * assignment, as fast as the platform lets them (in the field they would poll, or be told by the
 * gateway). Bytes are what the updates listener and the director served (their Prometheus counters),
 * and the loopback traffic as a cross-check.
 *
 * The peer: a bare static HTTP server and the same devices only downloading the image and hashing
 * it — the floor any update system stands on. The ratio is the cost of the whole secure flow.
 */

const DEVICES = 10_000;
const QUICK_DEVICES = 1_000;
const IMAGE_BYTES = 1024 * 1024;
const WORKERS = 2;
/** Devices at work at once in each device process. */
const CONCURRENCY = 24;
const WALL_TARGET_S = 60;
/** Devices updated one after the other after the rollout, for the refresh time of a device alone. */
const SOLO_DEVICES = 20;
/** Devices that take the delta round. */
const DELTA_DEVICES = 5;
const DELTA_TARGET_PERCENT = 15;
const METADATA_TARGET_PERCENT = 5;

const say = (line: string) => process.stdout.write(`  ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mib = (bytes: number) => bytes / 1024 / 1024;

/** Bytes sent over loopback so far (every process, both directions, with TCP/IP and TLS overhead). */
function loopbackBytes(): number {
  const line = readFileSync('/proc/net/dev', 'utf8')
    .split('\n')
    .find((l) => l.trim().startsWith('lo:'));
  if (!line) return NaN;
  const fields = line.split(':')[1]!.trim().split(/\s+/);
  return Number(fields[8]); // transmit bytes
}

/** `rampart_updates_served_bytes_total` by kind, from the platform's /metrics. */
async function servedBytes(r: RunningRampart): Promise<Record<string, number>> {
  const res = await request(`${r.url}/metrics`, {
    dispatcher: r.dispatcher,
    headers: { authorization: `Bearer ${r.token}` },
  });
  const text = await res.body.text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^rampart_updates_served_bytes_total\{kind="([^"]+)"\} (\S+)$/gm))
    out[m[1]!] = Number(m[2]);
  return out;
}

function diff(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]));
}

/** A deployment's progress (from the list, which leaves the per-device rows out). */
async function deploymentCounts(r: RunningRampart, id: number) {
  const res = await api(r, 'GET', '/api/v1/deployments');
  if (res.status !== 200) throw new Error(`GET /api/v1/deployments: ${res.status} ${res.text}`);
  const d = (
    JSON.parse(res.text) as {
      items: {
        id: number;
        state: string;
        counts: { total: number; pending: number; assigned: number; succeeded: number; failed: number };
      }[];
    }
  ).items.find((x) => x.id === id);
  if (!d) throw new Error(`deployment ${id} is not listed`);
  return { state: d.state, ...d.counts };
}

/** Upload a release and wait until it is published (deltas may be prepared first). */
async function publish(r: RunningRampart, name: string, version: string, image: Buffer) {
  const res = await request(
    `${r.url}/api/v1/updates/releases?name=${name}&version=${version}&model=${BENCH_MODEL}&fileName=${name}.bin`,
    {
      method: 'POST',
      headers: { authorization: `Bearer ${r.token}`, 'content-type': 'application/octet-stream' },
      body: image,
      dispatcher: r.dispatcher,
    },
  );
  const text = await res.body.text();
  if (res.statusCode !== 201 && res.statusCode !== 202)
    throw new Error(`creating release ${version} failed: ${res.statusCode} ${text}`);
  const release = JSON.parse(text) as { path: string; state: string };
  for (let i = 0; release.state !== 'published'; i++) {
    if (i > 1200) throw new Error(`release ${release.path} was not published within 2 minutes`);
    await sleep(100);
    const list = await api(r, 'GET', `/api/v1/updates/releases?model=${BENCH_MODEL}`);
    const found = (JSON.parse(list.text) as { items: { path: string; state: string }[] }).items.find(
      (x) => x.path === release.path,
    );
    release.state = found?.state ?? release.state;
  }
  return release;
}

interface Workers {
  children: ChildProcess[];
  go(): Promise<OtaWorkerResult[]>;
  progress(): number;
}

/** Fork the device processes and wait until each has loaded its share. */
async function startWorkers(
  base: Omit<OtaWorkerConfig, 'from' | 'to'>,
  count: number,
  profDir?: string,
  processes = WORKERS,
): Promise<Workers> {
  const module = fileURLToPath(new URL('./lib/ota-devices.js', import.meta.url));
  const per = Math.ceil(count / processes);
  const done = new Array<number>(processes).fill(0);
  const children: ChildProcess[] = [];
  const results: Promise<OtaWorkerResult>[] = [];
  const ready: Promise<void>[] = [];
  for (let w = 0; w < processes; w++) {
    const config: OtaWorkerConfig = { ...base, from: w * per, to: Math.min(count, (w + 1) * per) };
    const child = fork(module, [], {
      execArgv: profDir ? ['--cpu-prof', '--cpu-prof-dir', join(profDir, 'devices')] : [],
      env: { ...process.env, RAMPART_OTA_WORKER: JSON.stringify(config) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.push(child);
    ready.push(
      new Promise((resolve, reject) => {
        child.once('message', () => resolve());
        child.once('exit', (code) =>
          reject(new Error(`device process exited (${code}) before it was ready`)),
        );
      }),
    );
    results.push(
      new Promise((resolve, reject) => {
        child.on('message', (m: { progress?: number; result?: OtaWorkerResult }) => {
          if (m.progress !== undefined) done[w] = m.progress;
          if (m.result) resolve(m.result);
        });
        child.once('exit', (code) => {
          if (code !== 0) reject(new Error(`device process exited with ${code}`));
        });
      }),
    );
  }
  await Promise.all(ready);
  return {
    children,
    progress: () => done.reduce((a, b) => a + b, 0),
    go: () => {
      for (const c of children) c.send({ go: true });
      return Promise.all(results);
    },
  };
}

/** Print a progress line every couple of seconds while `work` runs. */
async function withProgress<T>(
  label: string,
  total: number,
  done: () => number,
  work: Promise<T>,
): Promise<T> {
  const t0 = performance.now();
  const timer = setInterval(() => {
    const n = done();
    say(`${label}: ${fmt(n)} / ${fmt(total)} (${fmt((performance.now() - t0) / 1000, 1)} s)`);
  }, 5000);
  try {
    return await work;
  } finally {
    clearInterval(timer);
  }
}

function summarize(runs: DeviceRun[]) {
  const failed = runs.filter((r) => !r.ok);
  return {
    ok: runs.length - failed.length,
    failed,
    p50: median(runs.map((r) => r.ms)),
    p95: percentile(
      runs.map((r) => r.ms),
      95,
    ),
    metadata: runs.map((r) => r.metadataMs).filter((m): m is number => m !== null),
  };
}

async function peerRound(
  imageFile: string,
  sha256: string,
  devicesFile: string,
  workDir: string,
  count: number,
): Promise<{ wall: number; serverCpu: number; ok: number }> {
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL('./lib/static-peer.js', import.meta.url)), imageFile],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  try {
    const url = await waitForLine(child, /^listening peer (\S+)$/m);
    const workers = await startWorkers(
      {
        devicesFile,
        concurrency: CONCURRENCY,
        estUrl: '',
        rootPemFile: '',
        model: BENCH_MODEL,
        workDir,
        peerUrl: url,
        peerSha256: sha256,
      },
      count,
    );
    const cpu = cpuMeter([child.pid!]);
    const t0 = performance.now();
    const results = await withProgress('peer downloads', count, workers.progress, workers.go());
    await workersExit(workers);
    const wall = (performance.now() - t0) / 1000;
    const runs = results.flatMap((r) => r.runs);
    return { wall, serverCpu: cpu().seconds, ok: runs.filter((r) => r.ok).length };
  } finally {
    await stopChild(child);
  }
}

export async function benchOta(options: {
  quick: boolean;
  cpuProfDir?: string | undefined;
  devices?: number;
}): Promise<void> {
  const count = options.devices ?? (options.quick ? QUICK_DEVICES : DEVICES);
  const shm = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const work = mkdtempSync(join(shm, 'rampart-bench-ota-'));
  // The platform's data (artifact store, keys) and database on disk; only device directories in tmpfs.
  const dataDir = mkdtempSync(join(tmpdir(), 'rampart-bench-ota-'));
  process.stdout.write(
    `\n# ota: a ${mib(IMAGE_BYTES)} MiB release to ${fmt(count)} simulated devices, full verification on each\n`,
  );
  let r: RunningRampart | null = null;
  try {
    r = await startRampart(
      dataDir,
      `sqlite:${join(dataDir, 'rampart.db')}`,
      { 'ca.deviceCertificateHours': '24' },
      options.cpuProfDir
        ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', join(options.cpuProfDir, 'server')] }
        : {},
    );
    const setup0 = performance.now();
    say(`registering and enrolling ${fmt(count)} devices (not timed)…`);
    const ids = Array.from({ length: count }, (_, i) => `OTA-${String(i).padStart(5, '0')}`);
    const devices = await registerAndEnroll(r, ids);
    const devicesFile = join(work, 'devices.ndjson');
    writeFileSync(devicesFile, devices.map((d) => JSON.stringify(d)).join('\n') + '\n');
    say(`devices ready in ${fmt((performance.now() - setup0) / 1000, 1)} s`);

    const image = randomBytes(IMAGE_BYTES);
    const imageFile = join(work, 'fw.bin');
    writeFileSync(imageFile, image);
    const sha256 = createHash('sha256').update(image).digest('hex');
    const release = await publish(r, 'fw', '2.0.0', image);

    const workerDir = join(work, 'devices');
    mkdirSync(workerDir);
    const rootPemFile = join(dataDir, 'ca.pem');
    const workers = await startWorkers(
      {
        devicesFile,
        concurrency: CONCURRENCY,
        estUrl: new URL(r.listeners.est!).origin,
        rootPemFile,
        model: BENCH_MODEL,
        workDir: workerDir,
      },
      count,
      options.cpuProfDir,
    );

    const cpu = cpuMeter([r.pid]);
    const bytes0 = await servedBytes(r);
    const lo0 = loopbackBytes();
    say(
      `load average before the rollout: ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' / ')}`,
    );
    const t0 = performance.now();
    const d = await api(
      r,
      'POST',
      '/api/v1/deployments',
      JSON.stringify({
        release: release.path,
        target: { query: `model = "${BENCH_MODEL}"` },
        ratePerMinute: 1_000_000,
        receiptTimeout: '30m',
      }),
    );
    if (d.status !== 201) throw new Error(`creating the deployment failed: ${d.status} ${d.text}`);
    const id = (JSON.parse(d.text) as { id: number }).id;
    for (;;) {
      const c = await deploymentCounts(r, id);
      if (c.pending === 0) break;
      await sleep(500);
    }
    const assigned = (performance.now() - t0) / 1000;
    say(`every device assigned after ${fmt(assigned, 1)} s; the devices check in`);
    const results = await withProgress('devices updated', count, workers.progress, workers.go());
    let final = await deploymentCounts(r, id);
    while (final.succeeded + final.failed < count) {
      await sleep(250);
      final = await deploymentCounts(r, id);
    }
    const wall = (performance.now() - t0) / 1000;
    const serverCpu = cpu().seconds;
    const served = diff(await servedBytes(r), bytes0);
    const lo = loopbackBytes() - lo0;

    const runs = results.flatMap((x) => x.runs);
    const s = summarize(runs);
    if (s.failed.length) {
      const reasons = new Map<string, number>();
      for (const f of s.failed) reasons.set(f.error ?? '?', (reasons.get(f.error ?? '?') ?? 0) + 1);
      for (const [reason, n] of [...reasons].slice(0, 5)) say(`failed ×${n}: ${reason}`);
    }
    say(
      `deployment: ${final.state}, ${fmt(final.succeeded)} succeeded, ${fmt(final.failed)} failed; devices: ${fmt(s.ok)} committed with receipt`,
    );
    const metadataBytes = (served.metadata ?? 0) + (served.director ?? 0);
    const sent = Object.values(served).reduce((a, b) => a + b, 0);
    const deviceCpu = results.reduce((a, x) => a + x.cpuSeconds, 0);
    say(
      `bytes served: ${fmt(mib(sent), 1)} MiB (targets ${fmt(mib(served.target ?? 0), 1)} MiB, deltas ${fmt(mib(served.delta ?? 0), 1)} MiB, repository metadata ${fmt((served.metadata ?? 0) / 1024)} KiB, director ${fmt((served.director ?? 0) / 1024)} KiB); loopback ${fmt(mib(lo), 1)} MiB`,
    );
    say(
      `per device: update check p50 ${fmt(s.p50)} ms, p95 ${fmt(s.p95)} ms; CPU: platform ${fmt(serverCpu, 1)} s (${fmt((serverCpu / count) * 1000, 2)} ms per device), devices ${fmt(deviceCpu, 1)} s`,
    );

    record({
      bench: 'ota',
      dialect: 'sqlite',
      metric: `rollout of ${mib(IMAGE_BYTES)} MiB to ${fmt(count)} devices, wall`,
      value: wall,
      unit: 's',
      ...(options.quick ? {} : { target: { op: '<=', value: WALL_TARGET_S } }),
      notes: `${fmt(s.ok)} committed with signed receipt; director assignment took ${fmt(assigned, 1)} s of it`,
    });
    record({
      bench: 'ota',
      dialect: 'sqlite',
      metric: 'platform CPU',
      value: serverCpu,
      unit: 's',
      notes: `${fmt((serverCpu / count) * 1000, 2)} ms per device`,
    });
    record({ bench: 'ota', dialect: 'sqlite', metric: 'bytes sent', value: mib(sent), unit: 'MiB' });
    record({
      bench: 'ota',
      dialect: 'sqlite',
      metric: 'metadata share of bytes sent',
      value: (metadataBytes / sent) * 100,
      unit: '%',
      target: { op: '<=', value: METADATA_TARGET_PERCENT },
      notes: `${fmt(metadataBytes / count)} B per device: TUF metadata and the director's`,
    });
    if (s.metadata.length)
      record({
        bench: 'ota',
        dialect: 'sqlite',
        metric: 'metadata refresh per device (director + TUF) during the rollout, p50',
        value: median(s.metadata),
        unit: 'ms',
        notes: `p95 ${fmt(percentile(s.metadata, 95), 1)} ms`,
      });

    await workersExit(workers);

    // The refresh time of one device on a quiet platform: a few devices, one after the other.
    const solo = await startWorkers(
      {
        devicesFile,
        concurrency: 1,
        estUrl: new URL(r.listeners.est!).origin,
        rootPemFile,
        model: BENCH_MODEL,
        workDir: workerDir,
      },
      SOLO_DEVICES,
      undefined,
      1,
    );
    const soloRuns = (await solo.go()).flatMap((x) => x.runs).filter((x) => x.ok);
    await workersExit(solo);
    const soloMetadata = soloRuns.map((x) => x.metadataMs).filter((m): m is number => m !== null);
    if (soloMetadata.length)
      record({
        bench: 'ota',
        dialect: 'sqlite',
        metric: 'metadata refresh per device (director + TUF), one device at a time, p50',
        value: median(soloMetadata),
        unit: 'ms',
        notes: `whole update check p50 ${fmt(median(soloRuns.map((x) => x.ms)), 1)} ms, ${soloRuns.length} devices`,
      });

    await deltaRound(r, {
      devicesFile,
      concurrency: 1,
      estUrl: new URL(r.listeners.est!).origin,
      rootPemFile,
      model: BENCH_MODEL,
      workDir: join(work, 'delta-devices'),
      keep: true,
    });

    say('the peer: a bare static HTTP server, the same devices downloading and hashing the image only');
    const peer = await peerRound(imageFile, sha256, devicesFile, workerDir, count);
    say(`peer: ${fmt(peer.ok)} downloads in ${fmt(peer.wall, 1)} s, server CPU ${fmt(peer.serverCpu, 1)} s`);
    record({
      bench: 'ota',
      dialect: 'sqlite',
      metric: 'rollout wall against a bare download of the image',
      value: wall,
      unit: 's',
      peer: { name: 'static HTTP server, download + hash only', value: peer.wall },
    });
  } finally {
    await r?.stop();
    rmSync(work, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Deploy a release to the first `count` devices and wait until the director has them all. */
async function deployTo(r: RunningRampart, release: string, ids: string[]): Promise<number> {
  const d = await api(
    r,
    'POST',
    '/api/v1/deployments',
    JSON.stringify({ release, target: { devices: ids }, ratePerMinute: 1_000_000 }),
  );
  if (d.status !== 201)
    throw new Error(`creating the deployment of ${release} failed: ${d.status} ${d.text}`);
  const id = (JSON.parse(d.text) as { id: number }).id;
  while ((await deploymentCounts(r, id)).pending > 0) await sleep(500);
  return id;
}

/**
 * Deltas through the real flow: a few devices install a 4 MiB image, then a release with 5% of its
 * bytes changed; the platform prepares the patch in the background and the devices, running the
 * base, download the patch instead of the image. Reported: what they downloaded over the image size.
 */
async function deltaRound(r: RunningRampart, base: Omit<OtaWorkerConfig, 'from' | 'to'>): Promise<void> {
  const images = releaseImages();
  const ids = readFileSync(base.devicesFile, 'utf8')
    .split('\n')
    .slice(0, DELTA_DEVICES)
    .map((l) => (JSON.parse(l) as { id: string }).id);
  mkdirSync(base.workDir, { recursive: true });
  const run = async () => {
    const w = await startWorkers(base, DELTA_DEVICES, undefined, 1);
    const runs = (await w.go()).flatMap((x) => x.runs);
    await workersExit(w);
    const bad = runs.filter((x) => !x.ok);
    if (bad.length) throw new Error(`delta round: ${bad.length} device(s) failed: ${bad[0]!.error}`);
    return runs;
  };
  const a = await publish(r, 'os', '1.0.0', images.base);
  await deployTo(r, a.path, ids);
  await run();
  const b = await publish(r, 'os', '1.1.0', images.next);
  await deployTo(r, b.path, ids);
  const runs = await run();
  const viaDelta = runs.filter((x) => x.transfer === 'delta');
  const shares = runs.map((x) => ((x.downloadedBytes ?? images.next.length) / images.next.length) * 100);
  say(
    `delta: ${viaDelta.length} of ${runs.length} devices updated ${mib(images.base.length)} MiB → 5% changed by patch; downloaded ${fmt(median(runs.map((x) => x.downloadedBytes ?? 0)) / 1024)} KiB each`,
  );
  record({
    bench: 'ota',
    dialect: 'sqlite',
    metric: `delta transfer, ${mib(images.next.length)} MiB image with 5% changed, share of the full image`,
    value: median(shares),
    unit: '%',
    target: { op: '<=', value: DELTA_TARGET_PERCENT },
    notes: `${viaDelta.length} of ${runs.length} devices by delta, each checked against the signed image`,
  });
}

async function workersExit(w: Workers): Promise<void> {
  await Promise.all(
    w.children.map((c) => (c.exitCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', r)))),
  );
}
