import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PkiPeers } from '../../../server/src/test-support/pki.js';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { CLI_BIN, cliEnvFor, runCli } from '../test-support/run-cli.js';

const run = promisify(execFile);
const EXPORT_PASSPHRASE = 'offline root key passphrase';
const KEYSTORE_PASSPHRASE = 'test passphrase for rampart';

interface Authority {
  id: string;
  kind: string;
  status: string;
  keyState: string;
  keyAlgorithm: string;
  subject: string;
}

describe('rampart ca', () => {
  let t: TestPlatform;
  let peers: PkiPeers;
  let env: Record<string, string>;
  let work: string;
  const status = async () => {
    const r = await runCli(['ca', 'status', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { authorities: Authority[]; endpoints: { est: string; ocsp: string } };
  };
  const rootOf = (s: { authorities: Authority[] }) => s.authorities.find((a) => a.kind === 'root')!;

  beforeAll(async () => {
    t = await startTestPlatform('sqlite');
    peers = new PkiPeers(t);
    env = cliEnvFor(t.dataDir);
    work = mkdtempSync(join(tmpdir(), 'rampart-ca-test-'));
  });
  afterAll(async () => {
    await t?.close();
    if (peers) rmSync(peers.dir, { recursive: true, force: true });
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('status: the hierarchy, its keys, CRLs and endpoints, for people and as JSON', async () => {
    const s = await status();
    expect(s.authorities.map((a) => [a.id, a.kind, a.status, a.keyState])).toEqual([
      ['root-1', 'root', 'active', 'online'],
      ['issuing-1', 'issuing', 'active', 'online'],
      ['manufacturing-1', 'manufacturing', 'active', 'online'],
    ]);
    expect(s).toMatchObject({ keyStore: 'file', endpoints: { est: peers.est, ocsp: `${peers.pki}/ocsp` } });

    const human = await runCli(['ca', 'status'], { env });
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/ID\s+KIND\s+STATUS\s+KEY\s+ALGORITHM\s+NOT AFTER\s+VALID\s+REVOKED/);
    expect(human.stdout).toMatch(
      /issuing-1\s+issuing\s+active\s+online\s+ec-p256\s+\d{4}-\d\d-\d\d \d\d:\d\dZ\s+\d+\s+0\s+0\s+#\d+/,
    );
    expect(human.stdout).toMatch(/EST\s+https:\/\/127\.0\.0\.1:\d+\/\.well-known\/est/);
    expect(human.stdout).toContain(`CRL issuing-1`);
    expect(human.stdout).toContain('rampart ca root export');
  });

  it('certificate: the PEM of a CA, to standard output or a file', async () => {
    const out = join(work, 'root.pem');
    const r = await runCli(['ca', 'certificate', 'root-1', '--out', out], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(out, 'utf8')).toBe(readFileSync(join(t.dataDir, 'ca.pem'), 'utf8'));
    const issuing = await runCli(['ca', 'certificate', 'issuing-1'], { env });
    expect(issuing.stdout).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect((await runCli(['ca', 'certificate', 'issuing-9'], { env })).code).toBe(5);
  });

  it('root export, remove, import: the key goes offline, rollovers need it back, and it comes back', async () => {
    const keyFile = join(work, 'root.key');
    // No passphrase, or a short one: refused before anything is exported.
    let r = await runCli(['ca', 'root', 'export', '--out', keyFile], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('RAMPART_EXPORT_PASSPHRASE');
    r = await runCli(['ca', 'root', 'export', '--out', keyFile], {
      env: { ...env, RAMPART_EXPORT_PASSPHRASE: 'short' },
    });
    expect(r.code).toBe(2);
    expect(existsSync(keyFile)).toBe(false);

    // Removing before an export is refused by the server; without --yes by the CLI.
    r = await runCli(['ca', 'root', 'remove'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--yes');
    expect(r.stderr).toContain('rampart ca root export');
    expect(rootOf(await status()).keyState).toBe('online');
    r = await runCli(['ca', 'root', 'remove', '--yes'], { env });
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('export the root key before removing it');

    const exportEnv = { ...env, RAMPART_EXPORT_PASSPHRASE: EXPORT_PASSPHRASE };
    r = await runCli(['ca', 'root', 'export', '--out', keyFile], { env: exportEnv });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`to ${keyFile} (mode 0600)`);
    expect(r.stdout).toContain('rampart ca root remove --yes');
    expect(r.stdout).toMatch(/offline/);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(keyFile, 'utf8')).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    expect(readFileSync(`${keyFile}.crt`, 'utf8')).toBe(readFileSync(join(t.dataDir, 'ca.pem'), 'utf8'));
    // openssl reads it with the passphrase, and only with it; it is the root certificate's key.
    const opened = await run(
      'openssl',
      ['pkey', '-in', keyFile, '-passin', 'env:RAMPART_EXPORT_PASSPHRASE', '-pubout'],
      {
        env: { PATH: process.env.PATH ?? '', RAMPART_EXPORT_PASSPHRASE: EXPORT_PASSPHRASE },
      },
    );
    const certKey = await run('openssl', ['x509', '-in', `${keyFile}.crt`, '-noout', '-pubkey']);
    expect(opened.stdout).toBe(certKey.stdout);
    const wrong = await peers.opensslStatus(
      'pkey',
      '-in',
      keyFile,
      '-passin',
      'pass:not the passphrase',
      '-noout',
    );
    expect(wrong.code).not.toBe(0);
    // An existing file is never overwritten.
    const before = readFileSync(keyFile, 'utf8');
    r = await runCli(['ca', 'root', 'export', '--out', keyFile], { env: exportEnv });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('exists already');
    expect(readFileSync(keyFile, 'utf8')).toBe(before);

    r = await runCli(['ca', 'root', 'remove', '--yes'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('offline');
    const offline = await status();
    expect(rootOf(offline)).toMatchObject({ keyState: 'offline', status: 'active' });
    expect((await runCli(['ca', 'status'], { env })).stdout).toMatch(/root-1\s+root\s+active\s+offline/);
    // Issuing goes on without the root key; a rollover cannot.
    r = await runCli(['ca', 'rollover'], { env });
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('rampart ca root import');
    r = await runCli(['ca', 'root', 'export', '--out', join(work, 'again.key')], { env: exportEnv });
    expect(r.code).toBe(6);
    expect(existsSync(join(work, 'again.key'))).toBe(false);

    // Import: the passphrase from a file this time; a wrong one is refused.
    const wrongFile = join(work, 'wrong-pass');
    writeFileSync(wrongFile, 'not the passphrase at all\n', { mode: 0o600 });
    r = await runCli(['ca', 'root', 'import', keyFile, '--passphrase-file', wrongFile], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('passphrase');
    const passFile = join(work, 'pass');
    writeFileSync(passFile, `${EXPORT_PASSPHRASE}\n`, { mode: 0o600 });
    r = await runCli(['ca', 'root', 'import', keyFile, '--passphrase-file', passFile], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(rootOf(await status()).keyState).toBe('online');

    r = await runCli(['ca', 'rollover', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      previous: { id: 'issuing-1', status: 'retiring' },
      next: { id: 'issuing-2', status: 'active', kind: 'issuing' },
    });
    const after = await status();
    expect(after.authorities.filter((a) => a.kind === 'issuing').map((a) => [a.id, a.status])).toEqual([
      ['issuing-1', 'retiring'],
      ['issuing-2', 'active'],
    ]);
    // EST cacerts serves the root and both issuing CAs.
    const cacerts = readFileSync(await peers.cacerts(), 'utf8');
    expect(cacerts.match(/BEGIN CERTIFICATE/g)).toHaveLength(3);

    // The human rollover names what comes next; retiring the old generation stops serving it.
    r = await runCli(['ca', 'rollover', '--kind', 'manufacturing'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('manufacturing-2');
    expect(r.stdout).toContain('rampart ca retire manufacturing-1');
    r = await runCli(['ca', 'retire', 'issuing-2'], { env });
    expect(r.code).toBe(6);
    r = await runCli(['ca', 'retire', 'issuing-1'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect((await status()).authorities.find((a) => a.id === 'issuing-1')!.status).toBe('retired');
  }, 120_000);

  it('rollover and root commands exit 4 for a role without ca:manage', async () => {
    const operator = await t.tokenFor('operator');
    const r = await runCli(['ca', 'rollover'], { env: { ...env, RAMPART_TOKEN: operator } });
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('ca:manage');
  });
});

describe('rampart ca init', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'rampart-ca-init-'));
  const env = { RAMPART_KEYSTORE_PASSPHRASE: KEYSTORE_PASSPHRASE };
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('creates the hierarchy offline once, refuses a second time with 6, and rampart up uses it', async () => {
    const r = await runCli(
      [
        'ca',
        'init',
        '--data-dir',
        dataDir,
        '--algorithm',
        'ec-p384',
        '--organization',
        'Acme Devices',
        '--json',
      ],
      { env },
    );
    expect(r.code, r.stderr).toBe(0);
    const created = JSON.parse(r.stdout);
    expect(created).toMatchObject({ dataDir, caCertificate: join(dataDir, 'ca.pem'), keyStore: 'file' });
    expect(created.authorities.map((a: Authority) => [a.id, a.keyAlgorithm])).toEqual([
      ['root-1', 'ec-p384'],
      ['issuing-1', 'ec-p384'],
      ['manufacturing-1', 'ec-p384'],
    ]);
    expect(created.authorities[0].subject).toContain('Acme Devices');
    const subject = await run('openssl', ['x509', '-in', join(dataDir, 'ca.pem'), '-noout', '-subject']);
    expect(subject.stdout).toContain('Acme Devices Root CA');
    expect(existsSync(join(dataDir, 'rampart.lock'))).toBe(false);
    // Audited, and the chain verifies offline.
    const verify = await runCli(['audit', 'verify', '--data-dir', dataDir, '--json']);
    expect(verify.code, verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, unanchoredEntries: 0 });

    const again = await runCli(['ca', 'init', '--data-dir', dataDir], { env });
    expect(again.code).toBe(6);
    expect(again.stderr).toContain('a CA hierarchy exists already');
    expect(again.stderr).toContain('root-1, issuing-1, manufacturing-1');

    // rampart up starts on it and keeps that hierarchy.
    const up = spawn(
      process.execPath,
      [
        CLI_BIN,
        'up',
        '--data-dir',
        dataDir,
        '--api-port',
        '0',
        '--est-port',
        '0',
        '--pki-port',
        '0',
        '--mqtt-port',
        '0',
        '--updates-port',
        '0',
      ],
      { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env }, stdio: 'pipe' },
    );
    const exited = new Promise<number | null>((resolve) => up.on('exit', (code) => resolve(code)));
    try {
      let out = '';
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`rampart up did not start:\n${out}`)), 30_000);
        up.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (/^listening pki /m.test(out)) {
            clearTimeout(timer);
            resolve();
          }
        });
        void exited.then((code) => reject(new Error(`rampart up exited with ${code}:\n${out}`)));
      });
      // While it runs, the data directory is locked.
      const locked = await runCli(['ca', 'init', '--data-dir', dataDir], { env });
      expect(locked.code).toBe(6);
      expect(locked.stderr).toContain(`pid ${up.pid}`);

      const s = await runCli(['ca', 'status', '--json'], { env: cliEnvFor(dataDir) });
      expect(s.code, s.stderr).toBe(0);
      const authorities = JSON.parse(s.stdout).authorities as Authority[];
      expect(authorities.map((a) => [a.id, a.keyAlgorithm])).toEqual([
        ['root-1', 'ec-p384'],
        ['issuing-1', 'ec-p384'],
        ['manufacturing-1', 'ec-p384'],
      ]);
      expect(authorities[0]!.subject).toBe(created.authorities[0].subject);
    } finally {
      up.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  }, 120_000);

  it('exits 2 for an unknown algorithm', async () => {
    const r = await runCli(['ca', 'init', '--data-dir', join(dataDir, 'other'), '--algorithm', 'dsa-1024'], {
      env,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('ec-p256');
  });
});
