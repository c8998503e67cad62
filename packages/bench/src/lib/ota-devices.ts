/**
 * One process of simulated devices for the OTA benchmark (forked by ../ota.ts). Each device is
 * made of the agent's own parts, as on a real device: the software trust anchor and identity store,
 * the `UpdateClient` (director over mutual TLS, the release repository through the unmodified
 * tuf-js client, chunk-verified download) and the A/B `Installer`, which self-tests, commits and
 * signs the receipt the deployment counts. Device directories live under a tmpfs and are removed
 * once a device is done, so that 10,000 devices need only `concurrency` of them at a time.
 *
 * Protocol (IPC): the parent sends `{ go: true }`; this process sends `{ ready }` once the devices
 * are loaded, `{ progress }` now and then, and `{ result }` at the end.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import {
  FileRollbackCounter,
  IdentityStore,
  Installer,
  SoftwareTrustAnchor,
  UpdateClient,
  mutualTlsIdentity,
} from '@rampart/agent';
import { createLogger } from '@rampart/shared/logging';
import type { DeviceIdentity } from '@rampart/sim';

export interface OtaWorkerConfig {
  /** JSON lines of DeviceIdentity. */
  devicesFile: string;
  /** This worker's share: devices [from, to) of the file. */
  from: number;
  to: number;
  concurrency: number;
  /** The platform's EST origin and root CA file (empty in a peer run). */
  estUrl: string;
  rootPemFile: string;
  model: string;
  /** Where device directories go (a tmpfs). */
  workDir: string;
  /** Peer run: download this URL and check it against `peerSha256`, nothing else. */
  peerUrl?: string;
  peerSha256?: string;
  /** Keep each device's directory (its slots) after its check, for a later check of the same devices. */
  keep?: boolean;
}

export interface DeviceRun {
  ok: boolean;
  /** Whole update check: metadata, download, install, self-test, commit, receipt. */
  ms: number;
  /** Refreshing and verifying both repositories' metadata (director and tuf-js), when reported. */
  metadataMs: number | null;
  transfer: string | null;
  /** Bytes the device downloaded for the image (a patch, or the full image). */
  downloadedBytes: number | null;
  error?: string;
}

export interface OtaWorkerResult {
  runs: DeviceRun[];
  seconds: number;
  /** CPU seconds this process used for the devices' work. */
  cpuSeconds: number;
}

const config = JSON.parse(process.env.RAMPART_OTA_WORKER ?? 'null') as OtaWorkerConfig | null;
if (!config || !process.send) {
  process.stderr.write('ota-devices is started by the OTA benchmark (npm run bench:ota)\n');
  process.exit(2);
}

const log = createLogger({ level: 'silent' });
// A peer run talks plain HTTP to the static server: no platform root to pin.
const rootPem = config.peerUrl ? '' : readFileSync(config.rootPemFile, 'utf8');
const devices = readFileSync(config.devicesFile, 'utf8')
  .split('\n')
  .filter(Boolean)
  .slice(config.from, config.to)
  .map((l) => JSON.parse(l) as DeviceIdentity);

async function runDevice(d: DeviceIdentity): Promise<DeviceRun> {
  const dir = join(config!.workDir, d.id);
  const t0 = performance.now();
  try {
    mkdirSync(join(dir, 'identity'), { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, 'identity', 'device-key.pem'), d.keyPem, { mode: 0o600 });
    writeFileSync(join(dir, 'identity', 'device.crt'), d.certPem);
    writeFileSync(join(dir, 'identity', 'root-ca.pem'), rootPem);
    const anchor = new SoftwareTrustAnchor(join(dir, 'identity', 'device-key.pem'));
    const store = new IdentityStore(dir);
    const publicKey = (await anchor.publicKey())!;
    const installer = new Installer({
      dataDir: dir,
      counter: new FileRollbackCounter(join(dir, 'slots', 'counters.json')),
      log,
      selfTest: { timeoutMs: 10_000 },
      maxBootAttempts: 3,
      commitTimeoutMs: 3600_000,
      signer: async () => ({ deviceId: d.id, publicKey, sign: (data) => anchor.sign(data) }),
    });
    const client = new UpdateClient({
      dataDir: dir,
      estUrl: config!.estUrl,
      model: config!.model,
      installer,
      log,
      timeoutMs: 60_000,
      download: { retryDelayMs: 200 },
      identity: async () => {
        const m = await mutualTlsIdentity(store, anchor, Date.now(), 'the director');
        return { deviceId: m.deviceId, certPem: store.clientCertificatePem(), tls: m.tls, caPem: m.rootPem };
      },
    });
    const r = await client.check();
    const timings = r.timings;
    const transfer = r.transfer ?? null;
    const ok = r.outcome === 'installed' && r.result?.outcome === 'committed' && r.receiptSent;
    return {
      ok,
      ms: performance.now() - t0,
      metadataMs: timings?.metadataMs ?? null,
      transfer,
      downloadedBytes: r.downloadedBytes ?? null,
      ...(ok ? {} : { error: `${r.outcome}: ${r.detail}` }),
    };
  } catch (err) {
    return {
      ok: false,
      ms: performance.now() - t0,
      metadataMs: null,
      transfer: null,
      downloadedBytes: null,
      error: (err as Error).message,
    };
  } finally {
    if (!config!.keep) rmSync(dir, { recursive: true, force: true });
  }
}

/** The peer's device: one plain GET of the image on a connection of its own, written out and hashed. */
async function runPeerDevice(d: DeviceIdentity): Promise<DeviceRun> {
  const dir = join(config!.workDir, d.id);
  const t0 = performance.now();
  try {
    mkdirSync(dir, { recursive: true });
    const sha256 = await new Promise<string>((resolve, reject) => {
      get(config!.peerUrl!, { agent: false }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`peer answered ${res.statusCode}`));
        const hash = createHash('sha256');
        const out = createWriteStream(join(dir, 'image'));
        res.on('data', (c: Buffer) => hash.update(c));
        res.pipe(out);
        out.on('finish', () => resolve(hash.digest('hex')));
        out.on('error', reject);
        res.on('error', reject);
      }).on('error', reject);
    });
    const ok = sha256 === config!.peerSha256;
    return {
      ok,
      ms: performance.now() - t0,
      metadataMs: null,
      transfer: 'full',
      downloadedBytes: null,
      ...(ok ? {} : { error: 'hash mismatch' }),
    };
  } catch (err) {
    return {
      ok: false,
      ms: performance.now() - t0,
      metadataMs: null,
      transfer: null,
      downloadedBytes: null,
      error: (err as Error).message,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function run(): Promise<OtaWorkerResult> {
  const runs: DeviceRun[] = [];
  let next = 0;
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  const progress = setInterval(() => process.send!({ progress: runs.length }), 500);
  const lane = async () => {
    while (next < devices.length) {
      const d = devices[next++]!;
      runs.push(await (config!.peerUrl ? runPeerDevice(d) : runDevice(d)));
    }
  };
  await Promise.all(Array.from({ length: config!.concurrency }, lane));
  clearInterval(progress);
  const cpu = process.cpuUsage(cpu0);
  return { runs, seconds: (performance.now() - start) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

process.on('message', (m: { go?: boolean }) => {
  if (!m.go) return;
  run().then(
    (result) => process.send!({ result }, () => process.exit(0)),
    (err: unknown) => {
      process.stderr.write(`ota-devices failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
});
process.send({ ready: devices.length });
