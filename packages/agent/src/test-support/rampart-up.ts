import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EstClient } from '../est/client.js';
import { enrollDevice } from '../identity/enroll.js';
import { IdentityStore } from '../identity/store.js';
import { SoftwareTrustAnchor } from '../trust-anchor/software.js';

/**
 * The built `rampart` command (tests run after `tsc -b`, as `npm test` does). The agent never
 * imports the platform: its end-to-end tests run the real one as a separate process, as a device
 * meets it in the field.
 */
const RAMPART = fileURLToPath(new URL('../../../cli/dist/bin/rampart.js', import.meta.url));
const PASSPHRASE = 'test passphrase for rampart';

export interface ApiReply {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** A device enrolled on the platform, with its identity in a data directory of its own. */
export interface EnrolledDevice {
  id: string;
  dataDir: string;
  store: IdentityStore;
  anchor: SoftwareTrustAnchor;
  /** An EST client trusting the pinned root, for renewal. */
  est: EstClient;
}

/** `rampart up` on free ports and a temporary data directory; stop() and start() keep both. */
export class RampartUp {
  readonly dataDir = mkdtempSync(join(tmpdir(), 'agent-e2e-platform-'));
  api = '';
  est = '';
  mqtt = '';
  private ports: { api: number; est: number; pki: number; mqtt: number } | null = null;
  private child: ChildProcess | null = null;
  private exited: Promise<void> | null = null;
  private output = '';
  private readonly models = new Set<string>();

  get rootCaFile(): string {
    return join(this.dataDir, 'ca.pem');
  }

  get rootCaPem(): string {
    return readFileSync(this.rootCaFile, 'utf8');
  }

  get adminToken(): string {
    return readFileSync(join(this.dataDir, 'admin-token'), 'utf8').trim();
  }

  /** What the platform printed and logged, for failure messages. */
  get logs(): string {
    return this.output;
  }

  static async start(): Promise<RampartUp> {
    const up = new RampartUp();
    await up.start();
    return up;
  }

  /** Start (again, on the same ports and data directory after stop()). */
  async start(): Promise<void> {
    const p = this.ports;
    const ports = p
      ? ['--api-port', p.api, '--est-port', p.est, '--pki-port', p.pki, '--mqtt-port', p.mqtt]
      : ['--api-port', 0, '--est-port', 0, '--pki-port', 0, '--mqtt-port', 0];
    // The updates listener is not used by the agent's tests: any free port, so that runs never clash.
    ports.push('--updates-port', 0);
    const child = spawn(
      process.execPath,
      [
        RAMPART,
        'up',
        '--data-dir',
        this.dataDir,
        ...ports.map(String),
        '--log-level',
        'warn',
        '--log-format',
        'json',
      ],
      {
        env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), RAMPART_KEYSTORE_PASSPHRASE: PASSPHRASE },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    this.child = child;
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      this.output += d.toString();
    });
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => child.on('exit', () => resolve()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`rampart up did not start in time:\n${this.output}`));
      }, 60_000);
      const check = () => {
        const url = (name: string) => new RegExp(`^listening ${name} (\\S+)$`, 'm').exec(out)?.[1];
        const api = url('api');
        const est = url('est');
        const pki = url('pki');
        const mqtt = url('mqtt');
        if (!api || !est || !pki || !mqtt) return;
        clearTimeout(timer);
        child.stdout!.off('data', check);
        this.api = api;
        this.est = est;
        this.mqtt = mqtt;
        const port = (u: string) => Number(new URL(u).port);
        this.ports = { api: port(api), est: port(est), pki: port(pki), mqtt: port(mqtt) };
        resolve();
      };
      child.stdout!.on('data', check);
      void this.exited!.then(() => {
        clearTimeout(timer);
        reject(new Error(`rampart up exited before listening:\n${this.output}`));
      });
    });
  }

  /** Stop the platform (SIGTERM) and wait for it to exit. */
  async stop(): Promise<void> {
    if (!this.child) return;
    this.child.kill('SIGTERM');
    await this.exited;
    this.child = null;
  }

  async close(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** Call the management API as the admin, trusting only the platform's root. */
  call(method: string, path: string, body?: unknown): Promise<ApiReply> {
    const url = new URL(path, this.api);
    const data = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          ca: this.rootCaPem,
          headers: {
            authorization: `Bearer ${this.adminToken}`,
            ...(data ? { 'content-type': 'application/json' } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            const json = String(res.headers['content-type'] ?? '').includes('json') && text;
            resolve({ status: res.statusCode ?? 0, body: json ? JSON.parse(text) : text });
          });
        },
      );
      req.on('error', reject);
      req.end(data);
    });
  }

  /** Register a device (and its model, once) in the registry. */
  async register(id: string, model = 'DW100'): Promise<void> {
    if (!this.models.has(model)) {
      await this.call('POST', '/api/v1/device-models', { id: model });
      this.models.add(model);
    }
    const r = await this.call('POST', '/api/v1/devices', { id, model });
    if (r.status !== 201) throw new Error(`device create failed: ${r.status} ${JSON.stringify(r.body)}`);
  }

  /** Register a device and enroll it over EST with a one-time token, as `rampart-agent enroll` does. */
  async enroll(id: string): Promise<EnrolledDevice> {
    await this.register(id);
    const t = await this.call('POST', '/api/v1/enrollment-tokens', { deviceId: id, expiresIn: '1h' });
    if (t.status !== 201) throw new Error(`token create failed: ${t.status} ${JSON.stringify(t.body)}`);
    const dataDir = mkdtempSync(join(tmpdir(), 'agent-e2e-device-'));
    const anchor = new SoftwareTrustAnchor(join(dataDir, 'identity', 'device-key.pem'));
    const store = new IdentityStore(dataDir);
    const rootPem = this.rootCaPem;
    const est = new EstClient({ url: this.est, caPem: rootPem });
    await enrollDevice({
      anchor,
      store,
      est,
      rootPem,
      deviceId: id,
      credentials: { deviceId: id, token: t.body.token },
    });
    store.rememberServer(this.est, id);
    return { id, dataDir, store, anchor, est };
  }
}
