import { X509Certificate, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import {
  AttestationClient,
  EstClient,
  SoftwareTrustAnchor,
  TpmTrustAnchor,
  collectEvidence,
  createDeviceCsr,
  measurementStore,
  type TrustAnchor,
} from '@rampart/agent';
import { issueBirthCertificate } from '@rampart/server';
import { EST_MEDIA, decodeBase64Body, decodeCertsOnly, encodeBase64Body } from '@rampart/shared/pki';
import type { ManifestDevice } from '@rampart/shared/provisioning';
import { signatureProblem } from '@rampart/shared/provisioning';
import {
  measureSimulatedBoot,
  missingTpmTools,
  signedManifest,
  simulatedReferenceValues,
  startSoftwareTpm,
  type FactoryStation,
  type SoftwareTpm,
} from '@rampart/sim/fleet';
import { freshDatabase, type BenchDatabase } from './lib/databases.js';
import { api } from './lib/gateway-fleet.js';
import { fixedCount } from './lib/load.js';
import { startRampart, type RunningRampart } from './lib/processes.js';
import { cpuMeter } from './lib/procfs.js';
import { record } from './lib/report.js';
import { fmt, median, percentile } from './lib/stats.js';

/**
 * Zero-touch provisioning, timed per device: nonce, evidence (software-anchor statement or TPM
 * quote) verified, EST simpleenroll authenticated by the attestation token earned with the birth
 * certificate, operational certificate issued and signed transcript written. Keys, birth
 * certificates, the batch manifests (imported) and each device's certificate request are made
 * before the clock starts. The platform is `rampart up` on SQLite (synchronous = full) in its own
 * process; the devices run in this one: the agent's attestation client and evidence collection,
 * then simpleenroll over HTTPS keep-alive, the issued certificates decoded and checked after the
 * clock stops (as the CA benchmark does), so that the device side takes as little as possible of
 * the CPU the platform needs.
 */

const CONCURRENCY = 16;
const ROUNDS = 3;
/** Software TPMs (swtpm) for the TPM run; one device at a time on each. */
const TPMS = 4;
const TARGET = 300;
const MODEL = 'ZT100';
const STATION = 'bench-line';

/** What users compare provisioning with: published figures, printed beside the results, never measured here. */
export const PUBLISHED =
  'managed provisioning services allow roughly 10–17 registrations per second per account or unit';
/** The upper published figure, which the ratio is taken against. */
const PUBLISHED_RATE = 17;

interface BenchDevice {
  id: string;
  anchor: TrustAnchor;
  /** The birth certificate, then the station CA (PEM). */
  birthCertificates: string[];
  /** For TPM devices: the index of the TPM that holds the key. */
  tpm?: number;
  /** The request for the operational certificate (base64 DER, as EST sends it), made before timing. */
  csr?: string;
  /** The simpleenroll reply, checked after timing. */
  reply?: string;
}

/** The device side's connections: the agent's EST client for attestation, a pool for simpleenroll. */
interface Clients {
  attestation: AttestationClient;
  enroll: Pool;
  enrollPath: string;
}

interface Round {
  rate: number;
  p50: number;
  p95: number;
  /** Server process CPU per device, ms (null when /proc is not readable). */
  serverCpuMs: number | null;
  /** Share of a core the devices' side used. */
  deviceCpu: number;
}

const say = (line: string) => process.stdout.write(`  ${line}\n`);
const loadNow = () =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(' / ');

async function post(r: RunningRampart, path: string, body: unknown): Promise<unknown> {
  const res = await api(r, 'POST', path, JSON.stringify(body));
  if (res.status !== 201) throw new Error(`POST ${path} failed: ${res.status} ${res.text.slice(0, 500)}`);
  return JSON.parse(res.text) as unknown;
}

/** The station registered through the API, issuing birth certificates offline with its own key. */
async function registerStation(r: RunningRampart): Promise<FactoryStation> {
  const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const reg = (await post(r, '/api/v1/stations', {
    name: STATION,
    publicKey: createPublicKey(key).export({ type: 'spki', format: 'pem' }),
  })) as { certificate: string; rootCertificate: string };
  await post(r, '/api/v1/device-models', { id: MODEL, name: 'Zero-touch bench device' });
  for (const ref of simulatedReferenceValues())
    await post(r, '/api/v1/reference-values', { model: MODEL, ...ref });
  return stationOf(key, reg.certificate, reg.rootCertificate);
}

function stationOf(key: KeyObject, caPem: string, rootPem: string): FactoryStation {
  return {
    name: STATION,
    caPem,
    rootPem,
    publicKey: createPublicKey(key),
    sign: async (data) => sign('sha256', data, key),
    issueBirthCertificate: (d) =>
      issueBirthCertificate({
        stationKey: key,
        stationCaPem: caPem,
        deviceSpki: d.spki,
        deviceId: d.deviceId,
        serial: d.serial,
        validityDays: 3650,
      }),
  };
}

/**
 * Make devices at the station — key in the anchor (for a TPM also its attestation key), birth
 * certificate, the request for the operational certificate — and import their batch. Devices on
 * one TPM are made one after the other, the TPMs side by side.
 */
async function manufacture(
  r: RunningRampart,
  station: FactoryStation,
  batch: string,
  devices: { id: string; anchor: TrustAnchor; tpm?: { index: number; ek: string } }[],
): Promise<BenchDevice[]> {
  const entries = new Array<ManifestDevice>(devices.length);
  const out = new Array<BenchDevice>(devices.length);
  const make = async (k: number) => {
    const d = devices[k]!;
    const spki = (await d.anchor.ensureKey()).export({ type: 'spki', format: 'der' });
    const serial = `SN-${d.id}`;
    const birth = await station.issueBirthCertificate({ deviceId: d.id, serial, spki });
    let tpm: ManifestDevice['tpm'];
    if (d.tpm && d.anchor instanceof TpmTrustAnchor)
      tpm = { ek: d.tpm.ek, ak: (await d.anchor.ensureAttestationKey()).toString('base64') };
    entries[k] = {
      deviceId: d.id,
      serial,
      model: MODEL,
      hardwareRevision: null,
      trustAnchor: d.anchor.kind,
      publicKey: spki.toString('base64'),
      birthCertificate: birth,
      ...(tpm ? { tpm } : {}),
      provisionedAt: new Date().toISOString(),
    };
    out[k] = {
      id: d.id,
      anchor: d.anchor,
      birthCertificates: [birth, station.caPem],
      ...(d.tpm ? { tpm: d.tpm.index } : {}),
      csr: encodeBase64Body(await createDeviceCsr(d.anchor, d.id)),
    };
  };
  const lanes = new Map<number, number[]>();
  devices.forEach((d, k) => {
    const key = d.tpm?.index ?? -1;
    const lane = lanes.get(key);
    if (lane) lane.push(k);
    else lanes.set(key, [k]);
  });
  await Promise.all(
    [...lanes.values()].map(async (ks) => {
      for (const k of ks) await make(k);
    }),
  );
  await post(r, '/api/v1/batches', await signedManifest(station, batch, entries, new Date()));
  return out;
}

/**
 * One device's zero-touch provisioning, as the agent does it: a nonce, evidence over it (the
 * agent's collectEvidence), then simpleenroll with the attestation token. The reply is kept for
 * `checkIssued`.
 */
async function provisionOne(
  clients: Clients,
  device: BenchDevice,
  measurements: ReturnType<typeof measurementStore>,
  scratch: string,
): Promise<void> {
  const { nonce } = await clients.attestation.nonce(device.id);
  const evidence = await collectEvidence({
    anchor: device.anchor,
    dataDir: scratch,
    measurements,
    nonce,
    deviceId: device.id,
    birthCertificates: device.birthCertificates,
  });
  const { result, token } = await clients.attestation.submit(evidence);
  if (!token)
    throw new Error(`${device.id}: attestation ${result.status} (${result.reasons.join('; ')}), no token`);
  const res = await clients.enroll.request({
    method: 'POST',
    path: `${clients.enrollPath}/simpleenroll`,
    headers: { authorization: `Bearer ${token}`, 'content-type': EST_MEDIA.pkcs10 },
    body: device.csr!,
  });
  device.reply = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${device.id}: simpleenroll ${res.statusCode} ${device.reply}`);
}

/** Every reply holds exactly one certificate, for the device, issued under the platform's root. */
function checkIssued(devices: readonly BenchDevice[], issuing: readonly X509Certificate[]): void {
  for (const d of devices) {
    const [der, ...rest] = decodeCertsOnly(decodeBase64Body(d.reply ?? '', 'PKCS#7'));
    if (!der || rest.length) throw new Error(`${d.id}: the reply does not hold exactly one certificate`);
    const cert = new X509Certificate(der);
    if (!cert.subject.split('\n').includes(`CN=${d.id}`))
      throw new Error(`${d.id}: the certificate is for ${cert.subject}`);
    if (!issuing.some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey)))
      throw new Error(`${d.id}: the certificate is not signed by the platform's issuing CA`);
  }
}

/** What the platform shows after a round: every device active with one signed, issued transcript (a sample). */
async function checkRound(r: RunningRampart, devices: readonly BenchDevice[], transcriptKey: string) {
  const sample = devices.filter((_, i) => i % Math.max(1, Math.floor(devices.length / 20)) === 0);
  for (const d of sample) {
    const dev = await api(r, 'GET', `/api/v1/devices/${d.id}`);
    if (dev.status !== 200 || (JSON.parse(dev.text) as { status: string }).status !== 'active')
      throw new Error(`${d.id} is not registered and active after provisioning: ${dev.status} ${dev.text}`);
    const t = await api(r, 'GET', `/api/v1/devices/${d.id}/transcripts`);
    const transcripts = JSON.parse(t.text) as { decision: string }[];
    if (transcripts.length !== 1 || transcripts[0]!.decision !== 'issued')
      throw new Error(`${d.id} should have one transcript of an issued certificate: ${t.text.slice(0, 300)}`);
    const bad = signatureProblem(transcripts[0], transcriptKey);
    if (bad) throw new Error(`${d.id}: the transcript's signature: ${bad}`);
  }
}

/** Run `devices` through the flow, `concurrency` at a time; the timed figures of the round. */
async function timedRound(
  r: RunningRampart,
  clients: Clients,
  devices: readonly BenchDevice[],
  lanes: { concurrency: number } | { tpms: number },
  measurementsOf: (d: BenchDevice) => ReturnType<typeof measurementStore>,
  scratch: string,
): Promise<Round> {
  let server: ReturnType<typeof cpuMeter> | null;
  try {
    server = cpuMeter([r.pid]);
  } catch {
    // /proc not readable: the server's CPU is left out.
    server = null;
  }
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let latencies: number[];
  let failure = '';
  if ('concurrency' in lanes) {
    const run = await fixedCount({
      concurrency: lanes.concurrency,
      count: devices.length,
      request: async (n) => {
        try {
          await provisionOne(clients, devices[n]!, measurementsOf(devices[n]!), scratch);
          return true;
        } catch (err) {
          failure ||= (err as Error).message;
          return false;
        }
      },
    });
    if (run.failed) throw new Error(`${run.failed} of ${devices.length} devices failed; first: ${failure}`);
    latencies = run.latenciesMs;
  } else {
    // One lane per TPM: a TPM runs one command at a time, and its devices share it.
    latencies = [];
    await Promise.all(
      Array.from({ length: lanes.tpms }, async (_, tpm) => {
        for (const d of devices.filter((x) => x.tpm === tpm)) {
          const s = performance.now();
          await provisionOne(clients, d, measurementsOf(d), scratch);
          latencies.push(performance.now() - s);
        }
      }),
    );
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const serverCpuMs = server ? (server().seconds * 1000) / devices.length : null;
  return {
    rate: devices.length / seconds,
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
    serverCpuMs,
    deviceCpu: (cpu.user + cpu.system) / 1e6 / seconds,
  };
}

export async function benchProvision(options: { quick: boolean; cpuProfDir?: string }): Promise<void> {
  const n = options.quick ? 400 : 2000;
  const warm = options.quick ? 200 : 400;
  const tpmPerRound = options.quick ? 2 * TPMS : 6 * TPMS;
  const scratch = mkdtempSync(join(tmpdir(), 'rampart-bench-provision-'));
  const tpmTool = missingTpmTools(false);
  let db: BenchDatabase | null = null;
  let rampart: RunningRampart | null = null;
  let est: EstClient | null = null;
  let enroll: Pool | null = null;
  const tpms: SoftwareTpm[] = [];
  const software: Round[] = [];
  const tpmRounds: Round[] = [];
  say(`load average at start (1/5/15 min): ${loadNow()}`);
  try {
    db = await freshDatabase('sqlite');
    rampart = await startRampart(
      db.dir,
      db.url,
      {},
      {
        nodeArgs: options.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir] : [],
      },
    );
    const root = readFileSync(join(db.dir, 'ca.pem'), 'utf8');
    const station = await registerStation(rampart);
    const transcriptKey = (await api(rampart, 'GET', '/api/v1/provisioning/transcript-key')).text;
    est = new EstClient({ url: rampart.listeners.est!, caPem: root, keepAliveConnections: CONCURRENCY });
    const estUrl = new URL(est.baseUrl);
    enroll = new Pool(estUrl.origin, { connect: { ca: root }, connections: CONCURRENCY });
    const clients: Clients = {
      attestation: new AttestationClient(est),
      enroll,
      enrollPath: estUrl.pathname,
    };
    const issuing = (await est.cacerts()).map((der) => new X509Certificate(der));

    // Every device boots the same simulated firmware: one measured boot stands for all of them.
    const softwareBoot = measurementStore(join(scratch, 'software-boot'), null);
    await measureSimulatedBoot(softwareBoot.register, softwareBoot.log);

    say(
      `making ${fmt(warm + ROUNDS * n)} devices with the software trust anchor (keys, birth certificates, ${ROUNDS + 1} signed manifests imported)…`,
    );
    const keys = join(scratch, 'keys');
    mkdirSync(keys, { mode: 0o700 });
    const make = (tag: string, count: number) =>
      manufacture(
        rampart!,
        station,
        `bench-${tag}`,
        Array.from({ length: count }, (_, i) => {
          const id = `zt-${tag}-${String(i).padStart(6, '0')}`;
          return { id, anchor: new SoftwareTrustAnchor(join(keys, `${id}.pem`)) };
        }),
      );
    const warmDevices = await make('warm', warm);
    const rounds: BenchDevice[][] = [];
    for (let round = 1; round <= ROUNDS; round++) rounds.push(await make(`r${round}`, n));

    // Warm-up: connections, TLS sessions, JIT, SQLite page cache.
    await timedRound(
      rampart,
      clients,
      warmDevices,
      { concurrency: CONCURRENCY },
      () => softwareBoot,
      scratch,
    );
    for (let round = 1; round <= ROUNDS; round++) {
      const devices = rounds[round - 1]!;
      const res = await timedRound(
        rampart,
        clients,
        devices,
        { concurrency: CONCURRENCY },
        () => softwareBoot,
        scratch,
      );
      checkIssued(devices, issuing);
      await checkRound(rampart, devices, transcriptKey);
      software.push(res);
      say(
        `round ${round} of ${ROUNDS}, software trust anchor: ${fmt(n)} devices, ${fmt(res.rate)} devices/s ` +
          `(p50 ${fmt(res.p50, 1)} ms, p95 ${fmt(res.p95, 1)} ms; server CPU ${res.serverCpuMs === null ? 'n/a' : `${fmt(res.serverCpuMs, 2)} ms`} per device; ` +
          `devices' side ${fmt(res.deviceCpu * 100)} % of a core), load average ${loadNow()}`,
      );
    }

    if (tpmTool) {
      say(`TPM run skipped: ${tpmTool} is not installed (Debian packages swtpm and tpm2-tools)`);
    } else {
      say(`starting ${TPMS} software TPMs (swtpm) and making ${fmt(ROUNDS * tpmPerRound)} TPM devices…`);
      for (let i = 0; i < TPMS; i++) tpms.push(await startSoftwareTpm(join(scratch, `swtpm-${i}`)));
      // Each TPM's PCRs hold one measured boot, which every device on it reports.
      const tpmBoot = await Promise.all(
        tpms.map(async (t, i) => {
          const store = measurementStore(join(scratch, `tpm-boot-${i}`), t.tcti);
          await measureSimulatedBoot(store.register, store.log);
          return store;
        }),
      );
      const eks = await Promise.all(
        tpms.map(async (t, i) =>
          (
            await new TpmTrustAnchor({
              dir: join(scratch, `tpm-ek-${i}`),
              tcti: t.tcti,
            }).endorsementKeyPublic()
          ).toString('base64'),
        ),
      );
      const tpmRoundsDevices: BenchDevice[][] = [];
      for (let round = 1; round <= ROUNDS; round++) {
        const specs = Array.from({ length: tpmPerRound }, (_, i) => {
          const id = `zt-tpm-r${round}-${String(i).padStart(4, '0')}`;
          const index = i % TPMS;
          return {
            id,
            anchor: new TpmTrustAnchor({ dir: join(scratch, 'tpm-keys', id), tcti: tpms[index]!.tcti }),
            tpm: { index, ek: eks[index]! },
          };
        });
        tpmRoundsDevices.push(await manufacture(rampart, station, `bench-tpm-r${round}`, specs));
      }
      for (let round = 1; round <= ROUNDS; round++) {
        const devices = tpmRoundsDevices[round - 1]!;
        const res = await timedRound(
          rampart,
          clients,
          devices,
          { tpms: TPMS },
          (d) => tpmBoot[d.tpm!]!,
          scratch,
        );
        checkIssued(devices, issuing);
        await checkRound(rampart, devices, transcriptKey);
        tpmRounds.push(res);
        say(
          `round ${round} of ${ROUNDS}, TPM (swtpm): ${fmt(devices.length)} devices on ${TPMS} TPMs, ${fmt(res.rate, 1)} devices/s ` +
            `(p50 ${fmt(res.p50, 1)} ms, p95 ${fmt(res.p95, 1)} ms; server CPU ${res.serverCpuMs === null ? 'n/a' : `${fmt(res.serverCpuMs, 2)} ms`} per device)`,
        );
      }
    }
  } finally {
    est?.close();
    await enroll?.close();
    for (const t of tpms) await t.stop().catch(() => undefined);
    await rampart?.stop();
    await db?.drop();
    rmSync(scratch, { recursive: true, force: true });
  }
  report(software, tpmRounds, n, tpmPerRound);
}

function report(software: readonly Round[], tpm: readonly Round[], n: number, tpmN: number): void {
  const med = (rounds: readonly Round[], f: (r: Round) => number) => median(rounds.map(f));
  const cpuText = (rounds: readonly Round[]) =>
    rounds.every((r) => r.serverCpuMs !== null)
      ? `server CPU ${fmt(
          med(rounds, (r) => r.serverCpuMs!),
          2,
        )} ms per device`
      : 'server CPU not measurable';
  const latencyText = (rounds: readonly Round[]) =>
    `p50 ${fmt(
      med(rounds, (r) => r.p50),
      1,
    )} ms, p95 ${fmt(
      med(rounds, (r) => r.p95),
      1,
    )} ms; ${cpuText(rounds)}`;
  const peer = {
    name: 'published limit of managed provisioning services (10–17/s per account or unit; upper figure)',
    value: PUBLISHED_RATE,
  };
  const of = `median of ${software.length} rounds`;
  record({
    bench: 'provision: zero-touch, software trust anchor',
    dialect: 'sqlite',
    metric:
      `${fmt(n)} devices: nonce, evidence verified, EST simpleenroll with the attestation token, certificate and signed transcript; ` +
      `${CONCURRENCY} concurrent over HTTPS keep-alive, ${of} (${latencyText(software)})`,
    value: med(software, (r) => r.rate),
    unit: 'devices/s',
    target: { op: '>=', value: TARGET, advisory: true },
    peer,
  });
  if (tpm.length)
    record({
      bench: 'provision: zero-touch, TPM 2.0 (swtpm)',
      dialect: 'sqlite',
      metric:
        `${fmt(tpmN)} devices on ${TPMS} swtpm instances, one device at a time per TPM (quote and AK certification through tpm2-tools), ` +
        `median of ${tpm.length} rounds (${latencyText(tpm)})`,
      value: med(tpm, (r) => r.rate),
      unit: 'devices/s',
      peer,
    });
  process.stdout.write(`  Published, not measured here: ${PUBLISHED}.\n`);
  process.stdout.write(`  Load average at the end (1/5/15 min): ${loadNow()}\n`);
}
