import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { loadServerConfig, openKeyStore } from '@rampart/server';
import { decodeBase64Body, decodeCertsOnly, toPem } from '@rampart/shared/pki';
import {
  LatencyHistogram,
  LoadEngine,
  LoadGenerator,
  loopbackAddresses,
  localPortRange,
  portsIn,
  type BrokerTarget,
  type DeviceIdentity,
  type OpenReport,
  type PublishReport,
} from '@rampart/sim';
import { BENCH_MODEL, FleetCache, api, registerAndEnroll, serialOf } from './lib/gateway-fleet.js';
import { startMosquitto, type RunningMosquitto } from './lib/mosquitto.js';
import { freePort } from './lib/pki.js';
import { BENCH_ENV, startRampart, type RunningRampart } from './lib/processes.js';
import { cpuMeter, hardOpenFileLimit, openFileLimit, rssBytes } from './lib/procfs.js';
import { record } from './lib/report.js';
import { fmt, median } from './lib/stats.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const ROUNDS = 3;
/** Load-generator processes: the broker gets one core, the generator the other. */
const WORKERS = 2;
/** Connections being set up at once, over both workers (a connect storm's width). */
const STORM_WIDTH = 64;
/** MQTT keep-alive of every device; the generator pings at half of it. */
const KEEPALIVE_S = 60;
const PUBLISHERS = 1000;
const PAYLOAD_BYTES = 64;
/** Unacknowledged QoS 1 publishes per device. */
const INFLIGHT = 2;
/** Source addresses 127.1.0.1… the connections rotate over (each has its own ephemeral ports). */
const SOURCE_ADDRESSES = 64;
/** Open-file limit asked for every process; the hard limit may be lower. */
const WANT_FILES = 200_000;
/** Descriptors a broker needs besides its connections (listeners, database, logs). */
const FD_RESERVE = 200;
const TARGET_DEVICES = 50_000;
const REVOCATION_TARGET_MS = 1000;
/** Revoked certificates left by earlier runs beyond which the cached platform is replaced. */
const MAX_REVOKED = 1000;
/** Settings that keep Rampart's per-device limits out of the way (there is no connection limit). */
const RAMPART_SETTINGS = {
  'gateway.limits.publishesPerSecond': '1000000',
  'gateway.limits.bytesPerSecond': '1073741824',
  // Cached device certificates stay valid for 90 days.
  'ca.deviceCertificateHours': '2160',
};

type BrokerName = 'rampart' | 'mosquitto';

interface Broker {
  name: BrokerName;
  label: string;
  pid: number;
  target: BrokerTarget;
}

interface Cpu {
  /** Cores the broker kept busy (CPU seconds ÷ wall seconds). */
  broker: number;
  generator: number;
}

interface StormRound {
  full: OpenReport;
  fullCpu: Cpu;
  resumed: OpenReport;
  resumedCpu: Cpu;
}

interface PublishRound {
  report: PublishReport;
  cpu: Cpu;
}

interface IdlePoint {
  devices: number;
  rssDeltaBytes: number;
  perDeviceBytes: number;
  connectRate: number;
}

interface RevocationRound {
  /** Certificates of the issuing CA revoked before the round: the CRL re-signed on each revocation lists them all. */
  revokedBefore: number;
  latenciesMs: number[];
  apiMs: number[];
  p50: number;
  p99: number;
  max: number;
  background: number;
}

const say = (line: string) => process.stdout.write(`  ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const loadNow = () =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(' / ');
const kib = (bytes: number) => bytes / 1024;
const mib = (bytes: number) => bytes / 1024 / 1024;

/** Certificates revoked so far by the issuing CAs (GET /api/v1/ca). */
async function revokedCount(r: RunningRampart): Promise<number> {
  const res = await api(r, 'GET', '/api/v1/ca');
  if (res.status !== 200) throw new Error(`GET /api/v1/ca: ${res.status} ${res.text}`);
  const status = JSON.parse(res.text) as {
    authorities: { kind: string; certificates: { revoked: number } }[];
  };
  return status.authorities
    .filter((a) => a.kind === 'issuing')
    .reduce((n, a) => n + a.certificates.revoked, 0);
}

async function cacerts(r: RunningRampart): Promise<string> {
  const res = await request(`${r.listeners.est}/cacerts`, { dispatcher: r.dispatcher });
  const body = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`EST cacerts: ${res.statusCode} ${body}`);
  return decodeCertsOnly(decodeBase64Body(body, 'PKCS#7'))
    .map((der) => toPem('CERTIFICATE', der))
    .join('');
}

/** Mosquitto presents Rampart's own server certificate and key (exported from the key store). */
async function mosquittoTls(r: RunningRampart, dir: string) {
  const { config } = loadServerConfig({ env: {}, flags: { dataDir: r.dataDir }, cwd: ROOT });
  const keys = await openKeyStore(config, BENCH_ENV);
  const key = await keys.exportPrivateKey('tls-server');
  await keys.close?.();
  const keyfile = join(dir, 'server.key');
  const certfile = join(dir, 'server.crt');
  const cafile = join(dir, 'ca-chain.pem');
  writeFileSync(keyfile, key.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  writeFileSync(certfile, readFileSync(join(r.dataDir, 'tls', 'server.crt')));
  writeFileSync(cafile, await cacerts(r));
  return { keyfile, certfile, cafile };
}

function cpuOf(brokerPid: number, generator: LoadGenerator) {
  const b = cpuMeter([brokerPid]);
  const g = cpuMeter(generator.pids);
  const t0 = performance.now();
  return (): Cpu => {
    const s = (performance.now() - t0) / 1000;
    return { broker: b().seconds / s, generator: g().seconds / s };
  };
}

/** Whether this user may raise its open-file limit to `n` (above the hard limit it needs privileges). */
function canRaiseOpenFiles(n: number): boolean {
  try {
    execFileSync('bash', ['-c', `ulimit -n ${n}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Which side bound a throughput measurement, from the CPU each process used. */
function saturation(ours: number, peer: number, generator: number): string {
  const busy = (c: number) => `${fmt(c * 100)} % of a core`;
  const rampart =
    ours >= 0.9
      ? `Rampart's gateway, one Node.js event loop, was saturated (${busy(ours)}).`
      : `Rampart's gateway used ${busy(ours)}; the load generator (${busy(generator)}) and the other processes on the ` +
        'two cores held it back.';
  const mosquitto =
    peer >= 0.9
      ? ` Mosquitto, also single-threaded, was saturated too (${busy(peer)}).`
      : ` Mosquitto used only ${busy(peer)}: the load generator sharing the machine bounds its figure, so its ` +
        'capacity is higher than measured, and the figures per broker CPU-second compare the two better.';
  return rampart + mosquitto;
}

const cpuText = (c: Cpu) =>
  `broker ${fmt(c.broker * 100)} % of a core, load generator ${fmt(c.generator * 100)} %`;

function checkOpen(what: string, r: OpenReport): void {
  if (r.failed)
    throw new Error(`${what}: ${r.failed} of ${r.attempted} devices did not connect: ${r.errors}`);
}

/**
 * Connect storm: `n` devices connect (full mTLS handshake, CONNECT, CONNACK) `STORM_WIDTH` at a
 * time; all disconnect; they connect again resuming their TLS sessions.
 */
async function storm(b: Broker, gen: LoadGenerator, n: number): Promise<StormRound> {
  let cpu = cpuOf(b.pid, gen);
  const full = await gen.open({ target: b.target, from: 0, count: n, concurrency: STORM_WIDTH, retries: 2 });
  const fullCpu = cpu();
  checkOpen(`${b.label} connect storm`, full);
  await gen.closeAll();
  await sleep(500);
  cpu = cpuOf(b.pid, gen);
  const resumed = await gen.open({
    target: b.target,
    from: 0,
    count: n,
    concurrency: STORM_WIDTH,
    resume: true,
    retries: 2,
  });
  const resumedCpu = cpu();
  checkOpen(`${b.label} connect storm with resumption`, resumed);
  await gen.closeAll();
  await sleep(500);
  const line = (r: OpenReport, c: Cpu) =>
    `${fmt(r.rate)} connections/s (CONNACK p50 ${fmt(r.connack.p50, 1)} ms, p99 ${fmt(r.connack.p99, 1)} ms` +
    `${r.failed + r.retried ? `, ${r.retried} retried: ${r.errors}` : ''}; ${cpuText(c)})`;
  say(`${b.label}: full handshakes ${line(full, fullCpu)}`);
  say(
    `${b.label}: resumed ${fmt((100 * resumed.resumed) / resumed.opened)} % of sessions, ${line(resumed, resumedCpu)}`,
  );
  return { full, fullCpu, resumed, resumedCpu };
}

async function publishRound(
  b: Broker,
  gen: LoadGenerator,
  o: { warmupMs: number; durationMs: number },
): Promise<PublishRound> {
  const opened = await gen.open({
    target: b.target,
    from: 0,
    count: PUBLISHERS,
    concurrency: STORM_WIDTH,
    retries: 2,
    keepSessions: false,
  });
  checkOpen(`${b.label} publishers`, opened);
  await sleep(500);
  const started = gen.publish({
    topic: 'devices/{id}/telemetry',
    payloadBytes: PAYLOAD_BYTES,
    qos: 1,
    inflight: INFLIGHT,
    warmupMs: o.warmupMs,
    durationMs: o.durationMs,
  });
  await sleep(o.warmupMs);
  const cpu = cpuOf(b.pid, gen);
  await sleep(o.durationMs);
  const c = cpu();
  const report = await started;
  await gen.closeAll();
  await sleep(500);
  say(
    `${b.label}: ${fmt(report.rate)} QoS 1 messages/s acknowledged from ${fmt(report.devices)} devices ` +
      `(PUBACK p50 ${fmt(report.latency.p50, 1)} ms, p99 ${fmt(report.latency.p99, 1)} ms` +
      `${report.failed ? `, ${report.failed} failed: ${report.errors}` : ''}; ${cpuText(c)})`,
  );
  if (report.failed) throw new Error(`${b.label}: ${report.failed} publishes failed: ${report.errors}`);
  return { report, cpu: c };
}

/**
 * Memory per idle device: the broker's RSS before and with `sizes` devices connected (idle, with
 * keep-alive pings), divided by the devices. `during` runs with the first size connected.
 */
async function idleFleet(
  b: Broker,
  gen: LoadGenerator,
  sizes: readonly number[],
  during?: (connected: number) => Promise<void>,
): Promise<IdlePoint[]> {
  await sleep(2000);
  const baseline = rssBytes(b.pid);
  const points: IdlePoint[] = [];
  let held = 0;
  for (const size of sizes) {
    const r = await gen.open({
      target: b.target,
      from: held,
      count: size - held,
      concurrency: STORM_WIDTH,
      retries: 3,
      keepSessions: false,
    });
    checkOpen(`${b.label} idle fleet of ${fmt(size)}`, r);
    held = size;
    // The lowest of five samples a second apart: garbage from the connection burst may still be around.
    let rss = Infinity;
    for (let k = 0; k < 5; k++) {
      await sleep(1000);
      rss = Math.min(rss, rssBytes(b.pid));
    }
    const status = await gen.status();
    const open = status.reduce((a, s) => a + s.open, 0);
    if (open !== size) throw new Error(`${b.label}: ${open} of ${size} idle devices still connected`);
    const point = {
      devices: size,
      rssDeltaBytes: rss - baseline,
      perDeviceBytes: (rss - baseline) / size,
      connectRate: r.rate,
    };
    points.push(point);
    say(
      `${b.label}: ${fmt(size)} idle devices connected (${fmt(r.rate)} connections/s): RSS ${fmt(mib(baseline))} → ${fmt(
        mib(rss),
      )} MiB, ${fmt(kib(point.perDeviceBytes), 1)} KiB per device`,
    );
    if (points.length === 1 && during) await during(size);
  }
  await gen.closeAll();
  await sleep(1000);
  return points;
}

/**
 * Revocation to disconnect: `devices` connected from this process; each certificate revoked in
 * turn through the API; the time from sending the request to the socket closing at the device.
 */
async function revocationRound(
  rampart: RunningRampart,
  target: BrokerTarget,
  ca: string,
  devices: readonly DeviceIdentity[],
  background: number,
): Promise<RevocationRound> {
  const engine = new LoadEngine(devices, {
    ca,
    keepaliveSeconds: KEEPALIVE_S,
    sourceAddresses: loopbackAddresses(4, '127.2.0.1'),
  });
  const closed = new Map<number, () => void>();
  engine.onDrop = (i) => closed.get(i)?.();
  const revokedBefore = await revokedCount(rampart);
  const opened = await engine.open({ target, from: 0, count: devices.length, concurrency: 16 });
  if (opened.failed) throw new Error(`revocation devices did not connect: ${JSON.stringify(opened.errors)}`);
  const latenciesMs: number[] = [];
  const apiMs: number[] = [];
  try {
    for (let i = 0; i < devices.length; i++) {
      const device = engine.device(i)!;
      const gone = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 10_000);
        closed.set(i, () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      const t0 = performance.now();
      const res = await api(
        rampart,
        'POST',
        `/api/v1/certificates/${serialOf(devices[i]!)}/revoke`,
        JSON.stringify({ reason: 'keyCompromise' }),
      );
      apiMs.push(performance.now() - t0);
      if (res.status !== 200) throw new Error(`revoking ${devices[i]!.id}: ${res.status} ${res.text}`);
      if (!(await gone)) throw new Error(`${devices[i]!.id} was still connected 10 s after its revocation`);
      latenciesMs.push(device.closedAt - t0);
    }
  } finally {
    await engine.closeAll();
  }
  const h = new LatencyHistogram();
  for (const l of latenciesMs) h.record(l);
  const s = h.summary();
  say(
    `rampart: revocation to disconnect over ${devices.length} devices with ${fmt(background)} others connected, ` +
      `${fmt(revokedBefore)} revoked before: ` +
      `p50 ${fmt(s.p50, 1)} ms, p99 ${fmt(s.p99, 1)} ms, max ${fmt(s.max, 1)} ms (API answer p50 ${fmt(median(apiMs), 1)} ms)`,
  );
  return { revokedBefore, latenciesMs, apiMs, p50: s.p50, p99: s.p99, max: s.max, background };
}

interface PolicyRound {
  /** From sending the attachment to the probe's socket closing: one pass over every live session. */
  ms: number;
  sessions: number;
}

/**
 * Narrowing a policy reaches live sessions: with `background` devices connected, a probe device
 * connects last (so it is re-authorized last), and a policy that denies its client id is attached
 * to the model every bench device has. Every session's policies change, so each is recompiled;
 * the figure is the time from sending the attachment to the probe's socket closing. The policy is
 * detached again after each round.
 */
async function policyRounds(
  rampart: RunningRampart,
  target: BrokerTarget,
  ca: string,
  probe: DeviceIdentity,
  background: number,
  rounds: number,
  tag: string,
): Promise<PolicyRound[]> {
  const name = `bench-lockout-${tag}`;
  const document = { statements: [{ effect: 'deny', actions: ['connect'], resources: [probe.id] }] };
  const created = await api(rampart, 'POST', '/api/v1/policies', JSON.stringify({ name, document }));
  if (created.status !== 201) throw new Error(`creating policy ${name}: ${created.status} ${created.text}`);
  const out: PolicyRound[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      const engine = new LoadEngine([probe], {
        ca,
        keepaliveSeconds: KEEPALIVE_S,
        sourceAddresses: loopbackAddresses(1, '127.3.0.1'),
      });
      const gone = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 30_000);
        engine.onDrop = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
      const opened = await engine.open({ target, from: 0, count: 1, concurrency: 1 });
      if (opened.failed)
        throw new Error(`the policy probe did not connect: ${JSON.stringify(opened.errors)}`);
      try {
        const t0 = performance.now();
        const res = await api(
          rampart,
          'POST',
          `/api/v1/policies/${name}/attachments`,
          JSON.stringify({ targetKind: 'model', targetId: BENCH_MODEL }),
        );
        if (res.status !== 200) throw new Error(`attaching ${name}: ${res.status} ${res.text}`);
        if (!(await gone)) throw new Error(`the policy probe was still connected 30 s after the attachment`);
        out.push({ ms: engine.device(0)!.closedAt - t0, sessions: background + 1 });
      } finally {
        await engine.closeAll();
        await api(rampart, 'DELETE', `/api/v1/policies/${name}/attachments/model/${BENCH_MODEL}`);
      }
    }
  } finally {
    await api(rampart, 'DELETE', `/api/v1/policies/${name}`);
  }
  say(
    `rampart: policy attached to the model of ${fmt(background + 1)} live sessions, every one recompiled: ` +
      `the last one re-authorized after ${out.map((x) => `${fmt(x.ms, 0)} ms`).join(', ')}`,
  );
  return out;
}

export async function benchGateway(options: { quick: boolean; cpuProfDir?: string }): Promise<void> {
  execFileSync('bash', [join(ROOT, 'scripts', 'ensure-system-deps.sh')], { stdio: 'inherit' });
  const quick = options.quick;
  const stormN = quick ? 1000 : 5000;
  const publishMs = quick ? 5000 : 10_000;
  const warmupMs = 2000;
  const revokePerRound = quick ? 30 : 100;

  const hardFiles = hardOpenFileLimit();
  const canRaise = canRaiseOpenFiles(WANT_FILES);
  const ports = localPortRange();
  const cache = new FleetCache(join(ROOT, '.bench', 'gateway'));
  // Mosquitto's configuration, ACL and TLS files (it reads them as its own user when started as root).
  const scratch = mkdtempSync(join(tmpdir(), 'rampart-bench-mosquitto-'));
  say(
    `machine: ${cpus().length} × ${cpus()[0]?.model.trim()}, ${fmt(totalmem() / 2 ** 30)} GiB; load average ${loadNow()}`,
  );
  say(
    `open-file limit: hard ${fmt(hardFiles)} (asked for ${fmt(WANT_FILES)} per process); ephemeral ports ${ports.low}–${ports.high} ` +
      `(${fmt(portsIn(ports))} per source address), ${SOURCE_ADDRESSES} source addresses from 127.1.0.1`,
  );

  let cached = cache.load(7 * 86400_000);
  let rampart: RunningRampart | null = null;
  let mosquitto: RunningMosquitto | null = null;
  let gen: LoadGenerator | null = null;
  const stormRounds: Record<BrokerName, StormRound[]> = { rampart: [], mosquitto: [] };
  const publishRounds: Record<BrokerName, PublishRound[]> = { rampart: [], mosquitto: [] };
  const idle: Record<BrokerName, IdlePoint[]> = { rampart: [], mosquitto: [] };
  const revocations: RevocationRound[] = [];
  let policyChanges: PolicyRound[] = [];
  let sizes: number[];
  let fdLimit: number;
  try {
    const start = () =>
      startRampart(cache.dataDir, `sqlite:${join(cache.dataDir, 'rampart.db')}`, RAMPART_SETTINGS, {
        maxOpenFiles: WANT_FILES,
        nodeArgs: options.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir] : [],
      });
    rampart = await start();
    // Every run revokes 300 certificates and each revocation re-signs the CRL with all of them, so
    // the revocation figure would drift upwards run after run: past MAX_REVOKED, start afresh.
    const revoked = await revokedCount(rampart);
    if (revoked > MAX_REVOKED) {
      say(`${fmt(revoked)} certificates revoked by earlier runs: starting with a new platform and fleet`);
      await rampart.stop();
      rampart = null;
      cache.clear();
      cached = [];
      rampart = await start();
    }
    const rampartUrl = new URL(rampart.listeners.mqtt!);
    const ca = readFileSync(join(rampart.dataDir, 'ca.pem'), 'utf8');
    const tls = await mosquittoTls(rampart, scratch);
    mosquitto = await startMosquitto({
      dir: scratch,
      port: await freePort(),
      ...tls,
      maxOpenFiles: WANT_FILES,
    });

    // How many devices fit: every broker connection is a descriptor.
    fdLimit = Math.min(openFileLimit(rampart.pid), openFileLimit(mosquitto.pid));
    const maxDevices = Math.min(TARGET_DEVICES, fdLimit - FD_RESERVE);
    sizes = quick
      ? [Math.min(2000, maxDevices)]
      : [10_000, maxDevices].filter((s, i, a) => a.indexOf(s) === i);
    const fleetSize = Math.max(...sizes, stormN, PUBLISHERS);
    say(
      `Rampart ${rampartUrl.href} (pid ${rampart.pid}, open files ${fmt(openFileLimit(rampart.pid))}); ` +
        `Mosquitto ${mosquitto.version} mqtts://127.0.0.1:${mosquitto.port} (pid ${mosquitto.pid}, open files ${fmt(
          openFileLimit(mosquitto.pid),
        )})`,
    );
    say(
      `Rampart gateway limits for the run: ${Object.entries(RAMPART_SETTINGS)
        .filter(([k]) => k.startsWith('gateway.'))
        .map(([k, v]) => `${k} = ${v}`)
        .join(', ')}; the gateway has no connection limit`,
    );

    // Ids carry the run's tag: a run that stopped half-way leaves registered devices behind.
    const tag = Date.now().toString(36);
    if (cached.length < fleetSize) {
      const ids = Array.from(
        { length: fleetSize - cached.length },
        (_, k) => `gw-${tag}-${String(k).padStart(6, '0')}`,
      );
      say(
        `issuing ${fmt(ids.length)} device certificates through EST (kept in ${cache.dir} for later runs)…`,
      );
      const t0 = performance.now();
      const issued = await registerAndEnroll(rampart, ids);
      cache.append(issued);
      cached = [...cached, ...issued];
      say(`issued in ${fmt((performance.now() - t0) / 1000, 1)} s`);
    }
    const fleet = cached.slice(0, fleetSize);
    // Devices to revoke: fresh each run (a revoked certificate cannot connect again).
    const revIds = Array.from({ length: ROUNDS * revokePerRound }, (_, k) => `gwr-${tag}-${k}`);
    const revDevices = await registerAndEnroll(rampart, revIds);
    const [policyProbe] = await registerAndEnroll(rampart, [`gwp-${tag}`]);

    gen = await LoadGenerator.start({
      workers: WORKERS,
      identities: fleet,
      engine: {
        ca,
        keepaliveSeconds: KEEPALIVE_S,
        sourceAddresses: loopbackAddresses(SOURCE_ADDRESSES),
      },
      maxOpenFiles: WANT_FILES,
    });
    const brokers: Record<BrokerName, Broker> = {
      mosquitto: {
        name: 'mosquitto',
        label: `mosquitto ${mosquitto.version}`,
        pid: mosquitto.pid,
        target: { host: '127.0.0.1', port: mosquitto.port },
      },
      rampart: {
        name: 'rampart',
        label: 'rampart',
        pid: rampart.pid,
        target: { host: rampartUrl.hostname, port: Number(rampartUrl.port) },
      },
    };
    const order = (round: number): Broker[] =>
      round % 2 ? [brokers.mosquitto, brokers.rampart] : [brokers.rampart, brokers.mosquitto];

    // Warm-up: code paths, JIT, TLS session caches.
    for (const b of order(1)) {
      checkOpen(
        `${b.label} warm-up`,
        await gen.open({ target: b.target, from: 0, count: 500, concurrency: STORM_WIDTH, retries: 2 }),
      );
      await gen.closeAll();
    }

    say(
      `idle fleet: ${sizes.map((s) => fmt(s)).join(' then ')} devices connected, keep-alive ${KEEPALIVE_S} s`,
    );
    const rampartRef = rampart;
    for (const b of order(1))
      idle[b.name] = await idleFleet(
        b,
        gen,
        sizes,
        b.name === 'rampart'
          ? async (connected) => {
              for (let r = 0; r < ROUNDS; r++)
                revocations.push(
                  await revocationRound(
                    rampartRef,
                    b.target,
                    ca,
                    revDevices.slice(r * revokePerRound, (r + 1) * revokePerRound),
                    connected,
                  ),
                );
              policyChanges = await policyRounds(
                rampartRef,
                b.target,
                ca,
                policyProbe!,
                connected,
                ROUNDS,
                tag,
              );
            }
          : undefined,
      );

    for (let round = 1; round <= ROUNDS; round++) {
      say(
        `connect storm, round ${round} of ${ROUNDS}: ${fmt(stormN)} devices, ${STORM_WIDTH} connecting at a time`,
      );
      for (const b of order(round)) stormRounds[b.name].push(await storm(b, gen, stormN));
    }
    for (let round = 1; round <= ROUNDS; round++) {
      say(
        `QoS 1 publishing, round ${round} of ${ROUNDS}: ${fmt(PUBLISHERS)} devices, ${INFLIGHT} in flight each, ` +
          `${PAYLOAD_BYTES}-byte payloads, ${warmupMs / 1000} s warm-up then ${publishMs / 1000} s measured`,
      );
      for (const b of order(round))
        publishRounds[b.name].push(await publishRound(b, gen, { warmupMs, durationMs: publishMs }));
    }
  } finally {
    await gen?.stop();
    await mosquitto?.stop();
    await rampart?.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
  report({
    stormN,
    publishMs,
    sizes,
    fdLimit,
    hardFiles,
    canRaise,
    stormRounds,
    publishRounds,
    idle,
    revocations,
    policyChanges,
  });
}

function report(r: {
  stormN: number;
  publishMs: number;
  sizes: number[];
  fdLimit: number;
  hardFiles: number;
  canRaise: boolean;
  stormRounds: Record<BrokerName, StormRound[]>;
  publishRounds: Record<BrokerName, PublishRound[]>;
  idle: Record<BrokerName, IdlePoint[]>;
  revocations: RevocationRound[];
  policyChanges: PolicyRound[];
}): void {
  const of = `median of ${ROUNDS} rounds`;
  const med = <T>(list: T[], f: (x: T) => number) => median(list.map(f));
  const peer = 'Mosquitto 2.0 (same certificates, ACL, load generator)';
  const dialect = 'sqlite';
  const limits: string[] = [];
  const caveats: string[] = [];

  const storms = r.stormRounds;
  for (const mode of ['full', 'resumed'] as const) {
    const cpu = mode === 'full' ? 'fullCpu' : 'resumedCpu';
    const ours = med(storms.rampart, (x) => x[mode].rate);
    const theirs = med(storms.mosquitto, (x) => x[mode].rate);
    const ourCpu = med(storms.rampart, (x) => x[cpu].broker);
    const genCpu = med(storms.rampart, (x) => x[cpu].generator);
    record({
      bench:
        mode === 'full'
          ? 'gateway: connect storm, full mTLS handshake'
          : 'gateway: connect storm, TLS resumed',
      dialect,
      metric:
        `${fmt(r.stormN)} devices, ${STORM_WIDTH} at a time to CONNACK, ${of} (p99 ${fmt(
          med(storms.rampart, (x) => x[mode].connack.p99),
          1,
        )} ms vs ${fmt(
          med(storms.mosquitto, (x) => x[mode].connack.p99),
          1,
        )} ms; ` +
        `resumed ${fmt(med(storms.rampart, (x) => (100 * x[mode].resumed) / x[mode].opened))} % vs ${fmt(
          med(storms.mosquitto, (x) => (100 * x[mode].resumed) / x[mode].opened),
        )} %; Rampart CPU ${fmt(ourCpu * 100)} %, Mosquitto ${fmt(
          med(storms.mosquitto, (x) => x[cpu].broker * 100),
        )} %, generator ${fmt(genCpu * 100)} % of a core); target ≥ 1.0× Mosquitto`,
      value: ours,
      unit: 'connections/s',
      target: { op: '>=', value: theirs, advisory: true },
      peer: { name: peer, value: theirs },
    });
    const peerCpu = med(storms.mosquitto, (x) => x[cpu].broker);
    record({
      bench: `gateway: connect storm, ${mode === 'full' ? 'full mTLS handshake' : 'TLS resumed'}, per broker CPU-second`,
      dialect,
      metric: `connections per CPU-second the broker process used (its capacity where it is not saturated), ${of}`,
      value: med(storms.rampart, (x) => x[mode].rate / x[cpu].broker),
      unit: 'connections/CPU-s',
      peer: { name: peer, value: med(storms.mosquitto, (x) => x[mode].rate / x[cpu].broker) },
    });
    const ourPer = med(storms.rampart, (x) => x[mode].rate / x[cpu].broker);
    const theirPer = med(storms.mosquitto, (x) => x[mode].rate / x[cpu].broker);
    if (ours < theirs)
      limits.push(
        `connect storm (${mode}): ${saturation(ourCpu, peerCpu, genCpu)} Per broker CPU-second Rampart sets up ` +
          `${fmt(ourPer)} connections and Mosquitto ${fmt(theirPer)}. What lifts it: several gateway processes ` +
          'sharing the port (one per core), a cheaper connection set-up in the gateway (profile: `--cpu-prof DIR`) ' +
          'and, for the measurement, a load generator on cores of its own.',
      );
    else if (peerCpu < 0.9 && ourPer < theirPer)
      caveats.push(
        `connect storm (${mode}): met, but Mosquitto used only ${fmt(peerCpu * 100)} % of a core, held back by the ` +
          `load generator on the same two cores; per broker CPU-second Rampart sets up ${fmt(ourPer)} connections ` +
          `and Mosquitto ${fmt(theirPer)} (${fmt(ourPer / theirPer, 2)}×).`,
      );
  }

  const pubs = r.publishRounds;
  const ourRate = med(pubs.rampart, (x) => x.report.rate);
  const theirRate = med(pubs.mosquitto, (x) => x.report.rate);
  const ourPubCpu = med(pubs.rampart, (x) => x.cpu.broker);
  const genPubCpu = med(pubs.rampart, (x) => x.cpu.generator);
  record({
    bench: 'gateway: QoS 1 publish, per-message authorization',
    dialect,
    metric:
      `${fmt(PUBLISHERS)} devices to devices/<id>/telemetry, ${INFLIGHT} in flight each, ${PAYLOAD_BYTES}-byte payloads, ` +
      `${r.publishMs / 1000} s, ${of} (PUBACK p99 ${fmt(
        med(pubs.rampart, (x) => x.report.latency.p99),
        1,
      )} ms vs ${fmt(
        med(pubs.mosquitto, (x) => x.report.latency.p99),
        1,
      )} ms; Rampart CPU ${fmt(ourPubCpu * 100)} %, Mosquitto ${fmt(
        med(pubs.mosquitto, (x) => x.cpu.broker * 100),
      )} %, generator ${fmt(genPubCpu * 100)} % of a core); target ≥ 1.0× Mosquitto`,
    value: ourRate,
    unit: 'messages/s',
    target: { op: '>=', value: theirRate, advisory: true },
    peer: { name: peer, value: theirRate },
  });
  const peerPubCpu = med(pubs.mosquitto, (x) => x.cpu.broker);
  const ourPerCpu = med(pubs.rampart, (x) => x.report.rate / x.cpu.broker);
  const theirPerCpu = med(pubs.mosquitto, (x) => x.report.rate / x.cpu.broker);
  record({
    bench: 'gateway: QoS 1 publish, per broker CPU-second',
    dialect,
    metric: `messages acknowledged per CPU-second the broker process used, ${of}`,
    value: ourPerCpu,
    unit: 'messages/CPU-s',
    peer: { name: peer, value: theirPerCpu },
  });
  if (ourRate < theirRate)
    limits.push(
      `QoS 1 publish: ${saturation(ourPubCpu, peerPubCpu, genPubCpu)} Per broker CPU-second Rampart acknowledges ` +
        `${fmt(ourPerCpu)} messages and Mosquitto ${fmt(theirPerCpu)}: per message Rampart runs the TLS record, ` +
        "aedes' MQTT parsing, the policy decision, the limits and the per-device counters in JavaScript. What lifts it: " +
        'several gateway processes over the cores, and a cheaper per-message path (profile: `--cpu-prof DIR`).',
    );
  else if (peerPubCpu < 0.9 && ourPerCpu < theirPerCpu)
    caveats.push(
      `QoS 1 publish: met, but Mosquitto used only ${fmt(peerPubCpu * 100)} % of a core, held back by the load ` +
        `generator on the same two cores; per broker CPU-second Rampart acknowledges ${fmt(ourPerCpu)} messages and ` +
        `Mosquitto ${fmt(theirPerCpu)} (${fmt(ourPerCpu / theirPerCpu, 2)}×).`,
    );

  const memoryMissed: string[] = [];
  for (let k = 0; k < r.sizes.length; k++) {
    const ours = r.idle.rampart[k];
    const theirs = r.idle.mosquitto[k];
    if (!ours || !theirs) continue;
    record({
      bench: 'gateway: memory per idle device',
      dialect,
      metric: `${fmt(ours.devices)} devices connected over mTLS, idle with ${KEEPALIVE_S} s keep-alive: broker RSS growth ÷ devices (Rampart +${fmt(
        mib(ours.rssDeltaBytes),
      )} MiB, Mosquitto +${fmt(mib(theirs.rssDeltaBytes))} MiB); target ≤ 2× Mosquitto`,
      value: kib(ours.perDeviceBytes),
      unit: 'KiB',
      target: { op: '<=', value: 2 * kib(theirs.perDeviceBytes), advisory: true },
      peer: { name: peer, value: kib(theirs.perDeviceBytes) },
    });
    if (ours.perDeviceBytes > 2 * theirs.perDeviceBytes) memoryMissed.push(fmt(ours.devices));
  }
  if (memoryMissed.length)
    limits.push(
      `memory at ${memoryMissed.join(' and ')} devices: a Rampart session holds a Node TLS socket (JavaScript ` +
        "stream state, Node's TLS buffers and OpenSSL's SSL), an aedes client (parser, keep-alive timer, queues) " +
        "and its own compiled policy; a Mosquitto session is a C struct and OpenSSL's SSL. What lifts it: " +
        'compiled policies shared by the sessions that have the same policies, and fewer objects per connection ' +
        '(a heap snapshot of the server shows which: `node --heapsnapshot-signal=SIGUSR2`).',
    );

  const held = Math.min(r.idle.rampart.at(-1)?.devices ?? 0, r.idle.mosquitto.at(-1)?.devices ?? 0);
  record({
    bench: 'gateway: concurrent mTLS devices',
    dialect,
    metric: `most devices held at once by each broker in this run (open-file limit ${fmt(r.fdLimit)} per process)`,
    value: held,
    unit: 'devices',
    target: { op: '>=', value: TARGET_DEVICES, advisory: true },
    notes: held < TARGET_DEVICES ? 'bounded by the open-file limit, not by the brokers' : undefined,
  });
  if (held < TARGET_DEVICES)
    limits.push(
      `${fmt(TARGET_DEVICES)} devices: each connection is a file descriptor and this machine's hard open-file limit is ` +
        `${fmt(r.hardFiles)} per process${r.canRaise ? '' : ', and this user cannot raise it'}, so no ` +
        `single broker process can hold more than about ${fmt(r.fdLimit - FD_RESERVE)}. What lifts it: a hard limit ` +
        `above 50,000 (\`ulimit -Hn\` as root, LimitNOFILE= in systemd, \`docker run --ulimit nofile=200000\`); the ` +
        'benchmark asks for 200,000 and measures up to 50,000 when it gets them.',
    );

  if (r.revocations.length) {
    const p99 = median(r.revocations.map((x) => x.p99));
    const all = r.revocations.flatMap((x) => x.latenciesMs);
    record({
      bench: 'gateway: revocation to disconnect',
      dialect,
      metric: `POST /certificates/<serial>/revoke to the socket closing at the device, ${fmt(
        r.revocations[0]!.latenciesMs.length,
      )} devices per round revoked one after another with ${fmt(r.revocations[0]!.background)} others connected, p99, ${of} (p50 ${fmt(
        median(r.revocations.map((x) => x.p50)),
        1,
      )} ms, worst of all ${fmt(Math.max(...all), 1)} ms; the issuing CA had ${fmt(
        r.revocations[0]!.revokedBefore,
      )} revoked certificates at the start, each revocation re-signs its CRL with all of them)`,
      value: p99,
      unit: 'ms',
      target: { op: '<=', value: REVOCATION_TARGET_MS, advisory: true },
      notes: 'Mosquitto: n/a (checks revocation only at the next handshake)',
    });
  }
  if (r.policyChanges.length) {
    record({
      bench: 'gateway: policy change to re-authorization',
      dialect,
      metric: `a policy attached to the model of ${fmt(r.policyChanges[0]!.sessions)} live sessions (each recompiled) until the last of them is re-authorized, ${of}`,
      value: median(r.policyChanges.map((x) => x.ms)),
      unit: 'ms',
      target: { op: '<=', value: REVOCATION_TARGET_MS, advisory: true },
      notes: 'Mosquitto: n/a (ACL changes need a reload and do not touch live sessions)',
    });
  }

  process.stdout.write('\n  Gateway side by side, medians of 3 rounds\n');
  const row = (cells: string[]) => process.stdout.write(`  | ${cells.join(' | ')} |\n`);
  row(['measurement', 'Rampart', 'Mosquitto 2.0', 'Rampart ÷ Mosquitto', 'target']);
  row(['---', '---:', '---:', '---:', '---']);
  for (const mode of ['full', 'resumed'] as const) {
    const a = med(storms.rampart, (x) => x[mode].rate);
    const b = med(storms.mosquitto, (x) => x[mode].rate);
    row([
      `connect storm, ${mode === 'full' ? 'full mTLS handshakes' : 'TLS sessions resumed'}`,
      `${fmt(a)}/s`,
      `${fmt(b)}/s`,
      fmt(a / b, 2),
      `≥ 1.0×: ${a >= b ? 'met' : 'MISSED'}`,
    ]);
  }
  row([
    'QoS 1 messages acknowledged',
    `${fmt(ourRate)}/s`,
    `${fmt(theirRate)}/s`,
    fmt(ourRate / theirRate, 2),
    `≥ 1.0×: ${ourRate >= theirRate ? 'met' : 'MISSED'}`,
  ]);
  for (let k = 0; k < r.sizes.length; k++) {
    const a = r.idle.rampart[k];
    const b = r.idle.mosquitto[k];
    if (!a || !b) continue;
    row([
      `memory per idle device, ${fmt(a.devices)} devices`,
      `${fmt(kib(a.perDeviceBytes), 1)} KiB`,
      `${fmt(kib(b.perDeviceBytes), 1)} KiB`,
      fmt(a.perDeviceBytes / b.perDeviceBytes, 2),
      `≤ 2×: ${a.perDeviceBytes <= 2 * b.perDeviceBytes ? 'met' : 'MISSED'}`,
    ]);
  }
  row([
    'concurrent mTLS devices',
    fmt(held),
    fmt(held),
    '-',
    `≥ ${fmt(TARGET_DEVICES)}: ${held >= TARGET_DEVICES ? 'met' : 'MISSED'}`,
  ]);
  if (r.revocations.length) {
    const p99 = median(r.revocations.map((x) => x.p99));
    row([
      'revocation to disconnect, p99',
      `${fmt(p99, 1)} ms`,
      'n/a (checks revocation only at the next handshake)',
      '-',
      `≤ ${fmt(REVOCATION_TARGET_MS)} ms: ${p99 <= REVOCATION_TARGET_MS ? 'met' : 'MISSED'}`,
    ]);
  }
  if (r.policyChanges.length) {
    const ms = median(r.policyChanges.map((x) => x.ms));
    row([
      `policy change to re-authorization, ${fmt(r.policyChanges[0]!.sessions)} sessions`,
      `${fmt(ms, 0)} ms`,
      'n/a (ACL changes need a reload)',
      '-',
      `≤ ${fmt(REVOCATION_TARGET_MS)} ms: ${ms <= REVOCATION_TARGET_MS ? 'met' : 'MISSED'}`,
    ]);
  }
  if (limits.length) {
    process.stdout.write('\n  Where a target is missed, the limit that binds:\n');
    for (const l of limits) process.stdout.write(`  - ${l}\n`);
  }
  if (caveats.length) {
    process.stdout.write('\n  Where a target is met, what to keep in mind:\n');
    for (const l of caveats) process.stdout.write(`  - ${l}\n`);
  }
  process.stdout.write(`  Load average at the end (1/5/15 min): ${loadNow()}\n`);
}
