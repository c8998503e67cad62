import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { provisionAtFactory } from '../test-support/factory.js';
import { startFakePlatform, type FakePlatform } from '../test-support/platform.js';
import { TestPki, type TestCa } from '../test-support/pki.js';

/** The built entry point (tests run after `tsc -b`, as `npm test` does). */
const BIN = fileURLToPath(new URL('../../dist/bin/rampart-agent.js', import.meta.url));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function start(
  args: string[],
  env: Record<string, string> = {},
  input = '',
): { child: ChildProcess; done: Promise<Result> } {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin!.end(input);
  const done = new Promise<Result>((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  return { child, done };
}

const agent = (args: string[], env: Record<string, string> = {}, input = '') => start(args, env, input).done;

let pki: TestPki;
let root: TestCa;
let issuing: TestCa;
let platform: FakePlatform;
let dir: string;

beforeAll(async () => {
  pki = new TestPki();
  root = pki.rootCa('Test Root CA');
  issuing = pki.issuingCa('Test Issuing CA', root);
  platform = await startFakePlatform(pki, root, issuing);
  dir = mkdtempSync(join(tmpdir(), 'agent-cli-'));
  writeFileSync(join(dir, 'ca.pem'), root.pem);
  writeFileSync(join(dir, 'token'), 'good-token\n');
  writeFileSync(join(dir, 'bad-token'), 'used-token\n');
});
afterAll(() => platform.close());

describe('rampart-agent', () => {
  it('has --help with examples on every command', async () => {
    for (const cmd of [
      [],
      ['identity'],
      ['identity', 'init'],
      ['identity', 'show'],
      ['enroll'],
      ['provision'],
      ['renew'],
      ['run'],
      ['status'],
      ['config'],
    ]) {
      const r = await agent([...cmd, '--help']);
      expect(r.code, cmd.join(' ')).toBe(0);
      expect(r.stdout, cmd.join(' ')).toContain('Examples:');
    }
  });

  it('lists the gateway, backoff and queue flags in run --help', async () => {
    const r = await agent(['run', '--help']);
    for (const flag of [
      '--mqtt-url <url>',
      '--keepalive <seconds>',
      '--backoff-initial-ms <ms>',
      '--backoff-max-ms <ms>',
      '--queue-max-messages <n>',
      '--queue-max-bytes <n>',
      '--est-url <url>',
      '--json',
    ])
      expect(r.stdout).toContain(flag);
    expect(r.stdout).toContain('RAMPART_AGENT_MQTT_URL');
  });

  it('refuses invalid gateway settings with the key and where the value came from', async () => {
    let r = await agent(['run', '--mqtt-url', 'mqtt://plain.example:1883']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/mqtt\.url must match .* from flag --mqtt-url/);
    r = await agent(['run', '--backoff-initial-ms', '5000', '--backoff-max-ms', '1000']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /mqtt\.backoff\.maxMs \(1000\) must be at least mqtt\.backoff\.initialMs \(5000\), from flag --backoff-max-ms/,
    );
  });

  it('refuses an enrollment token on the command line or missing altogether', async () => {
    let r = await agent(['enroll', '--token', 'good-token', '--device-id', 'dw-0001']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/never pass the enrollment token on the command line/);
    r = await agent([
      'enroll',
      '--data-dir',
      join(dir, 'none'),
      '--device-id',
      'dw-0001',
      '--est-url',
      platform.url,
      '--ca',
      join(dir, 'ca.pem'),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no enrollment token: .*--token-file FILE.*RAMPART_AGENT_ENROLLMENT_TOKEN/);
  });

  it('enrolls, shows the certificate, renews it, and says clearly when the token is refused', async () => {
    const dataDir = join(dir, 'device-1');
    const common = ['--data-dir', dataDir];
    const flags = ['--est-url', platform.url, '--ca', join(dir, 'ca.pem'), '--device-id', 'dw-0001'];

    let r = await agent([...common, 'enroll', ...flags, '--token-file', join(dir, 'bad-token')]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(
      /The enrollment token was refused.*rampart enrollment token create --device dw-0001/,
    );

    r = await agent([...common, '--json', 'enroll', ...flags, '--token-file', join(dir, 'token')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const enrolled = JSON.parse(r.stdout) as {
      certificate: { serial: string; notAfter: string; issuer: string };
    };
    expect(enrolled.certificate).toMatchObject({
      serial: expect.stringMatching(/^[0-9a-f]+$/),
      issuer: 'CN=Test Issuing CA',
    });

    r = await agent([...common, 'identity', 'show']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`certificate serial: ${enrolled.certificate.serial}`);
    expect(r.stdout).toContain('issuer:             CN=Test Issuing CA');
    expect(r.stdout).toMatch(/software \(weaker: the key is a file on the device\)/);

    // Renewal needs only the EST URL: the root pinned at enrollment is in identity/root-ca.pem.
    r = await agent([...common, 'renew'], { RAMPART_AGENT_EST_URL: platform.url });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`previous serial ${enrolled.certificate.serial}`);
    expect(platform.requests.at(-1)!.clientCert!.serialNumber.toLowerCase()).toBe(
      enrolled.certificate.serial,
    );

    r = await agent([...common, '--json', 'identity', 'show']);
    const shown = JSON.parse(r.stdout) as { certificate: { serial: string; expired: boolean } };
    expect(shown.certificate.serial).not.toBe(enrolled.certificate.serial);
    expect(shown.certificate.expired).toBe(false);
  });

  it('reads the token from the environment or standard input', async () => {
    const flags = ['--est-url', platform.url, '--ca', join(dir, 'ca.pem'), '--device-id', 'dw-0002'];
    let r = await agent(['--data-dir', join(dir, 'device-2'), 'enroll', ...flags], {
      RAMPART_AGENT_ENROLLMENT_TOKEN: 'good-token',
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^enrolled dw-0002\ncertificate serial: [0-9a-f]+\n/);
    r = await agent(
      ['--data-dir', join(dir, 'device-3'), 'enroll', ...flags.slice(0, -1), 'dw-0003', '--token-file', '-'],
      {},
      'good-token\n',
    );
    expect(r.code).toBe(0);
  });

  it('runs until SIGTERM, logging the planned renewal and the unreachable gateway; exits 1 when not enrolled', async () => {
    const dataDir = join(dir, 'device-run');
    const flags = ['--est-url', platform.url, '--ca', join(dir, 'ca.pem'), '--device-id', 'dw-0010'];
    expect(
      (await agent(['--data-dir', dataDir, 'enroll', ...flags, '--token-file', join(dir, 'token')])).code,
    ).toBe(0);

    const run = start(['--data-dir', dataDir, 'run', '--est-url', platform.url]);
    await new Promise<void>((resolve) => {
      let seen = '';
      run.child.stderr!.on('data', (d: Buffer) => {
        seen += d.toString();
        // No gateway listens on the EST host's port 8883 here: the agent keeps trying, calmly.
        if (seen.includes('renewal planned at') && seen.includes('cannot reach the gateway')) resolve();
      });
    });
    run.child.kill('SIGTERM');
    const r = await run.done;
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/"msg":"stopped"/);
    expect(r.stderr).toMatch(/cannot reach the gateway at mqtts:\/\/127\.0\.0\.1:8883.*retrying in/);

    const none = await agent(['--data-dir', join(dir, 'never-enrolled'), 'run', '--est-url', platform.url]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no certificate .* enroll it first/);
  });

  it('provisions a factory-made device: attestation, then enrollment with the token; renewal attests again', async () => {
    const dataDir = join(dir, 'device-zero-touch');
    const station = pki.issuingCa('Station 1 CA', root);
    await provisionAtFactory({ pki, root, station, dataDir, deviceId: 'dw-0700' });
    const common = ['--data-dir', dataDir];
    for (const [component, content] of [
      ['bootloader', 'u-boot'],
      ['os', 'rootfs'],
      ['application', 'app'],
      ['configuration', 'config'],
    ] as const) {
      const file = join(dir, `${component}.img`);
      writeFileSync(file, content);
      expect((await agent([...common, 'measure', component, file])).code).toBe(0);
    }

    // Nothing registered on the platform yet: the verifier warns and hands out no token.
    let r = await agent([...common, '--json', 'provision', '--est-url', platform.url]);
    expect(r.code).toBe(1);
    const refused = JSON.parse(r.stdout) as {
      enrolled: boolean;
      attestation: { status: string; reasons: string[] };
      certificate: unknown;
      problem: string;
    };
    expect(refused).toMatchObject({ enrolled: false, certificate: null, attestation: { status: 'warning' } });
    expect(refused.attestation.reasons).toContain('no reference values are registered for os of model DW100');
    expect(r.stderr).toMatch(
      /^error: .*with warnings: .*rampart attestation reference add … for model DW100/,
    );
    expect(refused.problem).toBe(r.stderr.replace(/^error: /, '').trim());

    // The operator registers what the device runs.
    const evidence = platform.verifier.evidence.at(-1) as { eventLog: { component: 'os'; digest: string }[] };
    for (const e of evidence.eventLog) platform.verifier.references.set(e.component, new Set([e.digest]));
    r = await agent([...common, 'provision', '--est-url', platform.url]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /^provisioned dw-0700\nattestation: {8}affirming \(software trust anchor; result att_[0-9a-f]+\)\ncertificate serial: [0-9a-f]+\n/,
    );
    expect(platform.requests.at(-1)!.headers.authorization).toMatch(/^Bearer rpa_/);

    // Renewal needs no flags (server.json), attests again and sends the new token with mutual TLS.
    r = await agent([...common, '--json', 'renew']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const last = platform.requests.slice(-3);
    expect(last.map((q) => q.path)).toEqual([
      '/attestation/v1/nonce',
      '/attestation/v1/evidence',
      '/.well-known/est/simplereenroll',
    ]);
    expect(last[2]!.headers.authorization).toMatch(/^Bearer rpa_/);
    expect(last[2]!.clientCert).not.toBeNull();
  });

  it('refuses to provision without a birth identity, or as another device than the factory made', async () => {
    let r = await agent(['--data-dir', join(dir, 'no-birth'), 'provision', '--est-url', platform.url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no birth identity in .*identity\/birth\/ .*rampart-agent enroll/);
    const dataDir = join(dir, 'device-zero-touch-2');
    await provisionAtFactory({
      pki,
      root,
      station: pki.issuingCa('Station 2 CA', root),
      dataDir,
      deviceId: 'dw-0701',
    });
    r = await agent(['--data-dir', dataDir, 'provision', '--est-url', platform.url], {
      RAMPART_AGENT_DEVICE_ID: 'dw-0799',
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /provisioned this device as "dw-0701" .*but the configuration says device id "dw-0799"/,
    );
  });
});
