import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentConfig } from './config.js';
import { gatewayUrl, readAgentStatus } from './daemon.js';
import { IdentityStore } from './identity/store.js';
import { RampartUp } from './test-support/rampart-up.js';
import { VERSION } from './version.js';

/** The built entry point (tests run after `tsc -b`, as `npm test` does). */
const BIN = fileURLToPath(new URL('../dist/bin/rampart-agent.js', import.meta.url));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function start(args: string[], env: Record<string, string> = {}) {
  const child: ChildProcess = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out.stderr += d.toString()));
  const done = new Promise<Result>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, ...out });
    });
  });
  return { child, out, done };
}

const agent = (args: string[], env: Record<string, string> = {}) => start(args, env).done;

async function until<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>) {
  const end = Date.now() + 20_000;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let up: RampartUp;
let work: string;

beforeAll(async () => {
  up = await RampartUp.start();
  work = mkdtempSync(join(tmpdir(), 'agent-daemon-'));
}, 120_000);
afterAll(async () => {
  await up?.close();
});

describe('rampart-agent run against the platform', () => {
  it('connects, answers ping, reports its version and certificate in the shadow, shows its status, and stops cleanly', async () => {
    const id = 'AG-DAEMON-1';
    const dataDir = join(work, id);
    await up.register(id);
    const token = await up.call('POST', '/api/v1/enrollment-tokens', { deviceId: id, expiresIn: '1h' });
    writeFileSync(join(work, 'token'), token.body.token as string);
    const enrolled = await agent([
      '--data-dir',
      dataDir,
      'enroll',
      '--est-url',
      up.est,
      '--ca',
      up.rootCaFile,
      '--device-id',
      id,
      '--token-file',
      join(work, 'token'),
    ]);
    expect(enrolled.code, enrolled.stderr).toBe(0);
    const serial = new IdentityStore(dataDir).current()!.info.serial;

    const run = start([
      '--data-dir',
      dataDir,
      'run',
      '--mqtt-url',
      up.mqtt,
      '--backoff-initial-ms',
      '200',
      '--json',
    ]);
    await until('the connection', () => run.out.stderr.includes(`connected to the gateway as ${id}`));

    const ping = await up.call('POST', `/api/v1/devices/${id}/commands`, { name: 'ping', timeoutSeconds: 5 });
    expect(ping.body).toMatchObject({
      status: 'succeeded',
      result: { pong: true, agentVersion: VERSION, certificateSerial: serial },
    });
    const shadow = await until('the reported agent state', async () => {
      const r = await up.call('GET', `/api/v1/devices/${id}/shadow`);
      return r.body.state?.reported?.agent && r.body;
    });
    expect(shadow.state.reported.agent).toEqual({
      version: VERSION,
      certificateSerial: serial,
      certificateNotAfter: expect.stringMatching(/^\d{4}-/),
      trustAnchor: 'software',
    });

    const status = await agent(['--data-dir', dataDir, 'status', '--json']);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({
      running: true,
      state: 'online',
      deviceId: id,
      gateway: up.mqtt,
      certificate: { serial },
      queue: { messages: 0, dropped: 0 },
    });
    const human = await agent(['--data-dir', dataDir, 'status']);
    expect(human.stdout).toMatch(/^device id: {3}AG-DAEMON-1\nagent: {7}running \(pid \d+/);

    // The identity commands keep working next to the daemon.
    const show = await agent(['--data-dir', dataDir, 'identity', 'show', '--json']);
    expect(show.code).toBe(0);
    expect(JSON.parse(show.stdout).certificate.serial).toBe(serial);

    // One agent per data directory: a second one is refused, clearly.
    const second = await agent(['--data-dir', dataDir, 'run', '--mqtt-url', up.mqtt]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/in use by process \d+; run one agent per data directory/);

    run.child.kill('SIGTERM');
    const r = await run.done;
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/SIGTERM: stopping/);
    expect(r.stderr).toMatch(/"msg":"gateway connection stopped"/);
    expect(readAgentStatus(dataDir)?.state).toBe('stopped');
    const stopped = await agent(['--data-dir', dataDir, 'status']);
    expect(stopped.code).toBe(1);
    expect(stopped.stdout).toMatch(/not running \(last seen/);
    const conn = await up.call('GET', `/api/v1/devices/${id}/connection`);
    expect(conn.body.connected).toBe(false);
  }, 90_000);

  it('logs a refused connection with what to do next and keeps backing off', async () => {
    const id = 'AG-DAEMON-2';
    const device = await up.enroll(id);
    const serial = device.store.current()!.info.serial;
    await up.call('POST', `/api/v1/certificates/${serial}/revoke`, { reason: 'keyCompromise' });
    const run = start([
      '--data-dir',
      device.dataDir,
      'run',
      '--mqtt-url',
      up.mqtt,
      '--backoff-initial-ms',
      '100',
    ]);
    await until('two refusals', () => (run.out.stderr.match(/CONNACK 5 not authorized/g) ?? []).length >= 2);
    expect(run.out.stderr).toMatch(/rampart device show AG-DAEMON-2/);
    expect(run.out.stderr).toMatch(/retrying in \d+\.\d s \(attempt 2\)/);
    expect(readAgentStatus(device.dataDir)?.lastFailure).toMatchObject({ kind: 'not-authorized' });
    run.child.kill('SIGINT');
    expect((await run.done).code).toBe(0);
  }, 60_000);
});

describe('gatewayUrl', () => {
  const config = (mqtt: Partial<AgentConfig['mqtt']>, est: string | undefined) =>
    ({ mqtt, est: { url: est } }) as unknown as AgentConfig;
  const dir = mkdtempSync(join(tmpdir(), 'agent-gw-url-'));
  mkdirSync(join(dir, 'identity'));
  const store = new IdentityStore(dir);

  it('uses mqtt.url when set, else the EST host on port 8883', () => {
    expect(gatewayUrl(config({ url: 'mqtts://gw.example:9883/' }, undefined), store)).toBe(
      'mqtts://gw.example:9883',
    );
    expect(gatewayUrl(config({}, 'https://rampart.example:8444'), store)).toBe(
      'mqtts://rampart.example:8883',
    );
    expect(gatewayUrl(config({}, 'https://[::1]:8444/.well-known/est'), store)).toBe('mqtts://[::1]:8883');
    expect(() => gatewayUrl(config({}, undefined), store)).toThrow(/--mqtt-url mqtts:\/\/host:port/);
    store.rememberServer('https://enrolled.example:8444', 'dw-1');
    expect(gatewayUrl(config({}, undefined), store)).toBe('mqtts://enrolled.example:8883');
    expect(readFileSync(store.serverFile, 'utf8')).toContain('enrolled.example');
  });
});
