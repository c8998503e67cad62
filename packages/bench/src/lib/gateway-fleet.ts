import { createHash, X509Certificate } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { enrollDevices, type DeviceIdentity } from '@rampart/sim';
import { normalizeSerial } from '@rampart/shared/pki';
import { fixedCount } from './load.js';
import type { RunningRampart } from './processes.js';

export const BENCH_MODEL = 'GW100';
const CONCURRENCY = 16;

export async function api(
  r: RunningRampart,
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  body?: string,
  contentType = 'application/json',
): Promise<{ status: number; text: string }> {
  const res = await request(`${r.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${r.token}`,
      ...(body !== undefined ? { 'content-type': contentType } : {}),
    },
    ...(body !== undefined ? { body } : {}),
    dispatcher: r.dispatcher,
  });
  return { status: res.statusCode, text: await res.body.text() };
}

/**
 * Register devices (bulk import), give each a one-time token and enroll them through EST with a
 * fresh P-256 key each, as devices would: what Rampart's gateway admits is a device certificate
 * Rampart issued and recorded, for a registered, active device.
 */
export async function registerAndEnroll(
  r: RunningRampart,
  ids: readonly string[],
): Promise<DeviceIdentity[]> {
  const model = await api(
    r,
    'POST',
    '/api/v1/device-models',
    JSON.stringify({ id: BENCH_MODEL, name: 'Bench device' }),
  );
  if (model.status !== 201 && model.status !== 409)
    throw new Error(`creating the device model failed: ${model.status} ${model.text}`);
  for (let k = 0; k < ids.length; k += 10_000) {
    const chunk = ids.slice(k, k + 10_000);
    const csv = ['id,model', ...chunk.map((id) => `${id},${BENCH_MODEL}`)].join('\n') + '\n';
    const imported = await api(r, 'POST', '/api/v1/devices/import', csv, 'text/csv');
    if (imported.status !== 200) throw new Error(`device import failed: ${imported.status} ${imported.text}`);
  }
  const tokens = new Array<string>(ids.length);
  const made = await fixedCount({
    concurrency: CONCURRENCY,
    count: ids.length,
    request: async (n) => {
      const t = await api(
        r,
        'POST',
        '/api/v1/enrollment-tokens',
        JSON.stringify({ deviceId: ids[n], expiresIn: '6h' }),
      );
      if (t.status !== 201) throw new Error(`enrollment token for ${ids[n]} failed: ${t.status} ${t.text}`);
      tokens[n] = (JSON.parse(t.text) as { token: string }).token;
      return true;
    },
  });
  if (made.failed) throw new Error(`${made.failed} enrollment tokens failed`);
  return enrollDevices({
    estUrl: r.listeners.est!,
    caPem: readFileSync(join(r.dataDir, 'ca.pem'), 'utf8'),
    jobs: ids.map((id, n) => ({ id, token: tokens[n]! })),
    concurrency: CONCURRENCY,
  });
}

export const serialOf = (d: DeviceIdentity): string =>
  normalizeSerial(new X509Certificate(d.certPem).serialNumber);

interface Manifest {
  /** SHA-256 of the data directory's root CA: the cached devices belong to that platform. */
  root: string;
}

/**
 * The benchmark's fleet, kept between runs under `.bench/gateway/`: the Rampart data directory the
 * devices are registered in and their keys and certificates (one JSON line per device). Issuing
 * 50,000 devices takes about a minute; later runs only start the platform on the same directory.
 */
export class FleetCache {
  readonly dataDir: string;
  private readonly devicesFile: string;
  private readonly manifestFile: string;

  constructor(readonly dir: string) {
    this.dataDir = join(dir, 'rampart');
    this.devicesFile = join(dir, 'devices.ndjson');
    this.manifestFile = join(dir, 'fleet.json');
  }

  /**
   * The devices cached, or none (and a clean directory) when the cache does not belong to its data
   * directory or a certificate expires within `minValidMs`.
   */
  load(minValidMs: number): DeviceIdentity[] {
    const devices = this.read();
    const fresh =
      devices.length > 0 &&
      existsSync(join(this.dataDir, 'ca.pem')) &&
      this.manifest()?.root === this.rootHash() &&
      [devices[0]!, devices.at(-1)!].every(
        (d) => Date.parse(new X509Certificate(d.certPem).validTo) - Date.now() > minValidMs,
      );
    if (!fresh) {
      this.clear();
      return [];
    }
    return devices;
  }

  /** Forget everything: the next run issues a new fleet on a new platform. */
  clear(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Record devices issued by the platform in the data directory (after it started). */
  append(devices: readonly DeviceIdentity[]): void {
    mkdirSync(this.dir, { recursive: true });
    writeFileSync(this.manifestFile, JSON.stringify({ root: this.rootHash() } satisfies Manifest));
    appendFileSync(this.devicesFile, devices.map((d) => JSON.stringify(d) + '\n').join(''));
  }

  private read(): DeviceIdentity[] {
    if (!existsSync(this.devicesFile)) return [];
    return readFileSync(this.devicesFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as DeviceIdentity);
  }

  private manifest(): Manifest | null {
    try {
      return JSON.parse(readFileSync(this.manifestFile, 'utf8')) as Manifest;
    } catch {
      return null;
    }
  }

  private rootHash(): string {
    return createHash('sha256')
      .update(readFileSync(join(this.dataDir, 'ca.pem')))
      .digest('hex');
  }
}
