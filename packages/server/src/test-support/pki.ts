import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestPlatform } from './platform.js';

const run = promisify(execFile);

/** Peers for PKI tests: openssl and curl, run for real in a scratch directory. */
export class PkiPeers {
  readonly dir = mkdtempSync(join(tmpdir(), 'rampart-pki-peer-'));
  constructor(readonly tp: TestPlatform) {}

  get est(): string {
    return this.tp.platform.listeners.find((l) => l.name === 'est')!.url;
  }
  get pki(): string {
    return this.tp.platform.listeners.find((l) => l.name === 'pki')!.url;
  }
  get rootCa(): string {
    return join(this.tp.dataDir, 'ca.pem');
  }
  path(name: string): string {
    return join(this.dir, name);
  }

  openssl(...args: string[]): string {
    return execFileSync('openssl', args, { cwd: this.dir, encoding: 'utf8', stdio: 'pipe' });
  }

  /** openssl, returning exit status and combined output instead of throwing. */
  async opensslStatus(...args: string[]): Promise<{ code: number; out: string }> {
    try {
      const r = await run('openssl', args, { cwd: this.dir });
      return { code: 0, out: r.stdout + r.stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : 1, out: (e.stdout ?? '') + (e.stderr ?? '') };
    }
  }

  /** curl with the platform's root pinned; returns HTTP status, headers text and body bytes. */
  async curl(args: string[]): Promise<{ status: number; body: Buffer; headers: string }> {
    const out = this.path(`curl-${Math.random().toString(36).slice(2)}.out`);
    const hdr = out + '.h';
    const r = await run(
      'curl',
      ['-sS', '--cacert', this.rootCa, '-o', out, '-D', hdr, '-w', '%{http_code}', ...args],
      {
        cwd: this.dir,
      },
    );
    return { status: Number(r.stdout.trim()), body: readFileSync(out), headers: readFileSync(hdr, 'utf8') };
  }

  /** A key and a base64 CSR made by openssl (`/CN=<cn>`), written as `<name>.key` / `<name>.csr.b64`. */
  csr(
    name: string,
    cn: string,
    opts: { newkey?: string; digest?: string; extra?: string[]; key?: string } = {},
  ): string {
    const keyArgs = opts.key
      ? ['-key', opts.key]
      : [
          '-newkey',
          opts.newkey ?? 'ec',
          ...(opts.newkey ? [] : ['-pkeyopt', 'ec_paramgen_curve:P-256']),
          '-nodes',
          '-keyout',
          `${name}.key`,
        ];
    this.openssl(
      'req',
      '-new',
      ...keyArgs,
      '-subj',
      `/CN=${cn}`,
      `-${opts.digest ?? 'sha256'}`,
      ...(opts.extra ?? []),
      '-outform',
      'DER',
      '-out',
      `${name}.csr.der`,
    );
    const b64 = readFileSync(this.path(`${name}.csr.der`)).toString('base64');
    writeFileSync(this.path(`${name}.csr.b64`), b64.replace(/.{64}/g, '$&\n') + '\n');
    return this.path(`${name}.csr.b64`);
  }

  /** Register model DW100 (once) and a device. */
  async device(id: string): Promise<void> {
    await this.tp.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } });
    const r = await this.tp.call('POST', '/api/v1/devices', { body: { id, model: 'DW100' } });
    if (r.status !== 201) throw new Error(`device create failed: ${r.status} ${JSON.stringify(r.body)}`);
  }

  async token(deviceId: string, expiresIn = '1h'): Promise<string> {
    const r = await this.tp.call('POST', '/api/v1/enrollment-tokens', { body: { deviceId, expiresIn } });
    if (r.status !== 201) throw new Error(`token create failed: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.token as string;
  }

  /** EST simpleenroll with curl and HTTP Basic; on 200 writes `<name>.pem` (via openssl pkcs7) and returns it. */
  async enroll(name: string, deviceId: string, token: string, csrPath?: string) {
    const res = await this.curl([
      '--user',
      `${deviceId}:${token}`,
      '-H',
      'Content-Type: application/pkcs10',
      '--data-binary',
      `@${csrPath ?? this.csr(name, deviceId)}`,
      `${this.est}/simpleenroll`,
    ]);
    if (res.status === 200) this.writeCert(name, res.body);
    return res;
  }

  /** EST simplereenroll with curl, authenticated by `<cert>.pem` / `<cert>.key`. */
  async reenroll(name: string, deviceId: string, current: string, opts: { sameKey?: boolean } = {}) {
    const csr = opts.sameKey ? this.csr(name, deviceId, { key: `${current}.key` }) : this.csr(name, deviceId);
    if (opts.sameKey) writeFileSync(this.path(`${name}.key`), readFileSync(this.path(`${current}.key`)));
    const res = await this.curl([
      '--cert',
      this.path(`${current}.pem`),
      '--key',
      this.path(`${current}.key`),
      '-H',
      'Content-Type: application/pkcs10',
      '--data-binary',
      `@${csr}`,
      `${this.est}/simplereenroll`,
    ]);
    if (res.status === 200) this.writeCert(name, res.body);
    return res;
  }

  private writeCert(name: string, base64Body: Buffer): void {
    writeFileSync(this.path(`${name}.p7.b64`), base64Body);
    writeFileSync(this.path(`${name}.p7`), Buffer.from(base64Body.toString('latin1'), 'base64'));
    this.openssl('pkcs7', '-inform', 'DER', '-in', `${name}.p7`, '-print_certs', '-out', `${name}.pem`);
  }

  /** The issuing CA chain from EST cacerts (all CA certs, PEM), written to `cacerts.pem`. */
  async cacerts(): Promise<string> {
    const res = await this.curl([`${this.est}/cacerts`]);
    writeFileSync(this.path('cacerts.p7'), Buffer.from(res.body.toString('latin1'), 'base64'));
    this.openssl('pkcs7', '-inform', 'DER', '-in', 'cacerts.p7', '-print_certs', '-out', 'cacerts.pem');
    return this.path('cacerts.pem');
  }

  serialOf(name: string): string {
    return this.openssl('x509', '-in', `${name}.pem`, '-noout', '-serial')
      .trim()
      .replace(/^serial=/, '');
  }
}

/** Device certificates on record (rows of `certificates` with profile `device`). */
export async function deviceCertificateCount(tp: TestPlatform): Promise<number> {
  const row = await tp.platform.storage.db
    .selectFrom('certificates')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('profile', '=', 'device')
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export interface TestAuditEntry {
  seq: number;
  actor: string;
  action: string;
  target: string;
  outcome: string;
  details: Record<string, unknown>;
}

/** Sequence number of the newest sealed audit entry. */
export async function auditHead(tp: TestPlatform): Promise<number> {
  const r = await tp.call('GET', '/api/v1/audit/entries?limit=1&order=desc');
  if (r.status !== 200) throw new Error(`audit read failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.head.seq as number;
}

/**
 * Audit entries with `action` sealed after `afterSeq` (via the API), oldest first; waits up to
 * `timeoutMs` for at least `atLeast` of them, since entries are sealed shortly after they commit.
 */
export async function auditEntriesAfter(
  tp: TestPlatform,
  action: string,
  afterSeq: number,
  atLeast = 1,
  timeoutMs = 5000,
): Promise<TestAuditEntry[]> {
  const started = Date.now();
  for (;;) {
    const r = await tp.call(
      'GET',
      `/api/v1/audit/entries?action=${encodeURIComponent(action)}&after=${afterSeq}&limit=1000`,
    );
    if (r.status !== 200) throw new Error(`audit read failed: ${r.status} ${JSON.stringify(r.body)}`);
    const items = r.body.items as TestAuditEntry[];
    if (items.length >= atLeast || Date.now() - started > timeoutMs) return items;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
