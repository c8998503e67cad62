import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RampartUp, type ApiReply, type EnrolledDevice } from '../test-support/rampart-up.js';

/**
 * `rampart-agent run` and software updates, end to end: the built agent as a child process against
 * `rampart up` — periodic checks that install what the director assigns, the receipt of an update
 * settled at start (sent again once a platform that was down is back), no checks without
 * updates.model.
 */
const BIN = fileURLToPath(new URL('../../dist/bin/rampart-agent.js', import.meta.url));

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function start(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
  const done = new Promise<Result>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, ...out });
    });
  });
  return { child, out, done };
}

const agent = (args: string[], env: Record<string, string> = {}) => start(args, env).done;

async function until<T>(
  what: string,
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  ms = 30_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let up: RampartUp;
let work: string;
const app = randomBytes(24_000);
let release: { path: string; sha256: string };
const devices: EnrolledDevice[] = [];
const enroll = async (id: string) => {
  const device = await up.enroll(id);
  devices.push(device);
  return device;
};

/** `POST /api/v1/updates/releases` with the raw artifact, as `rampart release create` streams it. */
function upload(query: string, body: Buffer): Promise<ApiReply> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(`/api/v1/updates/releases?${query}`, up.api),
      {
        method: 'POST',
        ca: up.rootCaPem,
        headers: {
          authorization: `Bearer ${up.adminToken}`,
          'content-type': 'application/octet-stream',
          'content-length': String(body.length),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The platform's `update.receipt` audit entries for a device (a stored receipt is audited in its commit). */
async function receiptsAudited(id: string) {
  const r = await up.call(
    'GET',
    `/api/v1/audit/entries?action=update.receipt&target=${encodeURIComponent(`device:${id}`)}`,
  );
  expect(r.status).toBe(200);
  return r.body.items as { actor: string; outcome: string; details: Record<string, unknown> }[];
}

/** `rampart-agent update status --json`, and the id of the last receipt it names. */
async function slots(device: EnrolledDevice) {
  const r = await agent(['--data-dir', device.dataDir, 'update', 'status', '--json']);
  expect(r.code, r.stderr).toBe(0);
  const s = JSON.parse(r.stdout);
  const receiptId = s.last?.receipt ? (JSON.parse(readFileSync(s.last.receipt, 'utf8')).id as string) : null;
  return { ...s, receiptId };
}

/**
 * `rampart-agent update install` of firmware with a reboot hook: it stops at "rebooting", the
 * update pending in slot b; the self-test runs at the next start. The environment of that start.
 */
async function pendingFirmware(device: EnrolledDevice) {
  const dir = join(work, device.id);
  mkdirSync(join(dir, 'hooks'), { recursive: true });
  writeFileSync(join(dir, 'hooks', 'reboot'), `#!/bin/sh\necho "$RAMPART_UPDATE_SLOT" > ${dir}/rebooted\n`);
  chmodSync(join(dir, 'hooks', 'reboot'), 0o755);
  writeFileSync(join(dir, 'fw.bin'), randomBytes(10_000));
  const env = {
    RAMPART_AGENT_UPDATES_HOOKS_DIR: join(dir, 'hooks'),
    RAMPART_AGENT_UPDATES_SELF_TEST_COMMAND: 'test -s fw.bin',
  };
  const installed = await agent(
    [
      '--data-dir',
      device.dataDir,
      'update',
      'install',
      join(dir, 'fw.bin'),
      '--version',
      '2.0.0',
      '--release-counter',
      '4',
      '--kind',
      'firmware',
      '--json',
    ],
    env,
  );
  expect(installed.code, installed.stderr).toBe(0);
  expect(JSON.parse(installed.stdout)).toMatchObject({
    outcome: 'rebooting',
    version: '2.0.0',
    receipt: null,
  });
  expect(readFileSync(join(dir, 'rebooted'), 'utf8').trim()).toBe('b');
  expect((await slots(device)).pending).toMatchObject({ slot: 'b', bootAttempts: 0 });
  return env;
}

const runArgs = (device: EnrolledDevice) => [
  '--data-dir',
  device.dataDir,
  'run',
  '--mqtt-url',
  up.mqtt,
  '--backoff-initial-ms',
  '200',
  '--json',
];

async function stopCleanly(run: ReturnType<typeof start>) {
  run.child.kill('SIGTERM');
  const r = await run.done;
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).toMatch(/SIGTERM: stopping/);
  return r;
}

beforeAll(async () => {
  up = await RampartUp.start();
  work = mkdtempSync(join(tmpdir(), 'agent-daemon-updates-'));
  const r = await upload(
    'name=app&version=1.0.0&model=DW100&kind=application&releaseCounter=1&fileName=app.bin',
    app,
  );
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  release = r.body;
  await until('the release to be published', async () => {
    const l = await up.call('GET', `/api/v1/updates/releases?path=${encodeURIComponent(release.path)}`);
    return l.body.items?.[0]?.state === 'published';
  });
}, 120_000);
afterAll(async () => {
  await up?.close();
  for (const dir of [work, ...devices.map((d) => d.dataDir)])
    if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('rampart-agent run and software updates', () => {
  it('checks the director periodically, installs the assigned release, commits it and reports the receipt', async () => {
    const device = await enroll('AG-UPD-1');
    const assigned = await up.call('PUT', `/api/v1/devices/${device.id}/update-assignment`, {
      path: release.path,
    });
    expect(assigned.status, JSON.stringify(assigned.body)).toBe(200);
    expect((await slots(device)).slots).toEqual({ a: null, b: null });

    const run = start(runArgs(device), {
      RAMPART_AGENT_UPDATES_MODEL: 'DW100',
      RAMPART_AGENT_UPDATES_CHECK_INTERVAL_SECONDS: '1',
    });
    // No command but `run`: the periodic check installs, self-tests and commits the release.
    const audited = await until('the committed receipt on the platform', async () =>
      (await receiptsAudited(device.id)).find((e) => e.details.outcome === 'committed'),
    );
    expect(audited).toMatchObject({
      actor: `device:${device.id}`,
      outcome: 'success',
      details: { version: '1.0.0' },
    });
    expect(run.out.stderr).toMatch(/"update":"installed"/);
    expect(run.out.stderr).toContain(`"target":"${release.path}"`);

    const s = await slots(device);
    expect(s.runningVersion).toBe('1.0.0');
    expect(s.pending).toBeNull();
    expect(s.slots[s.running]).toMatchObject({
      version: '1.0.0',
      sha256: release.sha256,
      status: 'committed',
    });
    expect(s.last).toMatchObject({ outcome: 'committed', version: '1.0.0' });
    expect(readFileSync(join(device.dataDir, 'slots', 'current', 'app-1.0.0.bin')).equals(app)).toBe(true);
    // The receipt the platform stored is the one the installer signed for this decision.
    expect(audited.details.receipt).toBe(s.receiptId);

    // Later checks find the release running: nothing is installed twice.
    await until('a check finding it running', () => run.out.stderr.includes('"update":"up-to-date"'));
    expect(run.out.stderr.match(/"update":"installed"/g)).toHaveLength(1);
    expect(await receiptsAudited(device.id)).toHaveLength(1);
    const r = await stopCleanly(run);
    expect(r.stderr).not.toMatch(/"msg":"update check failed/);
  }, 90_000);

  it('settles an update pending across a reboot at start and sends the receipt of that decision', async () => {
    const device = await enroll('AG-UPD-2');
    const env = await pendingFirmware(device);
    expect(await receiptsAudited(device.id)).toEqual([]);

    // The "reboot": the agent starts (periodic checks off, so only the start-up receipt can arrive).
    const run = start(runArgs(device), {
      ...env,
      RAMPART_AGENT_UPDATES_MODEL: 'DW100',
      RAMPART_AGENT_UPDATES_CHECK_INTERVAL_SECONDS: '0',
    });
    const audited = await until('the committed receipt on the platform', async () =>
      (await receiptsAudited(device.id)).find((e) => e.details.outcome === 'committed'),
    );
    expect(run.out.stderr).toMatch(/"msg":"update check at start: committed, version 2\.0\.0; slot b runs"/);
    const s = await slots(device);
    expect(s.pending).toBeNull();
    expect(s.slots.b).toMatchObject({ version: '2.0.0', status: 'committed' });
    expect(s.last).toMatchObject({ outcome: 'committed', version: '2.0.0', slot: 'b' });
    expect(s.last.detail).toMatch(/self-test passed/);
    expect(audited).toMatchObject({
      actor: `device:${device.id}`,
      outcome: 'success',
      details: { receipt: s.receiptId, version: '2.0.0' },
    });
    const r = await stopCleanly(run);
    expect(r.stderr).not.toMatch(/the receipt could not be sent|the director refused the receipt/);
    expect(r.stderr).not.toMatch(/"msg":"update check: /);
  }, 90_000);

  it('without updates.model, says periodic checks are off and installs nothing', async () => {
    const device = await enroll('AG-UPD-3');
    const assigned = await up.call('PUT', `/api/v1/devices/${device.id}/update-assignment`, {
      path: release.path,
    });
    expect(assigned.status).toBe(200);
    const run = start(runArgs(device), { RAMPART_AGENT_UPDATES_CHECK_INTERVAL_SECONDS: '1' });
    await until('the connection', () => run.out.stderr.includes(`connected to the gateway as ${device.id}`));
    expect(run.out.stderr).toMatch(
      /"level":40,[^\n]*"msg":"periodic update checks are off: set updates.model/,
    );
    // Three check intervals pass: with a model, the first would have installed the release by now.
    await new Promise((r) => setTimeout(r, 3000));
    const s = await slots(device);
    expect(s.slots).toEqual({ a: null, b: null });
    expect(s.last).toBeNull();
    expect(await receiptsAudited(device.id)).toEqual([]);
    const r = await stopCleanly(run);
    expect(r.stderr).not.toMatch(/"msg":"update check/);
  }, 60_000);

  it('keeps a start-up receipt the platform could not take and sends it once the platform is back', async () => {
    const device = await enroll('AG-UPD-4');
    const env = await pendingFirmware(device);
    // The device restarts while the platform is down (or its network is not up yet).
    await up.stop();
    const run = start([...runArgs(device), '--backoff-max-ms', '500'], {
      ...env,
      RAMPART_AGENT_UPDATES_MODEL: 'DW100',
      RAMPART_AGENT_UPDATES_CHECK_INTERVAL_SECONDS: '0',
    });
    await until('the failed delivery', () => run.out.stderr.includes('the receipt could not be sent'));
    expect(run.out.stderr).toMatch(/"msg":"update check at start: committed, version 2\.0\.0/);
    await up.start();
    const audited = await until('the committed receipt on the platform', async () =>
      (await receiptsAudited(device.id)).find((e) => e.details.outcome === 'committed'),
    );
    expect(audited.details.receipt).toBe((await slots(device)).receiptId);
    await until('the delivery log', () =>
      run.out.stderr.includes('update receipt delivered to the platform'),
    );
    await stopCleanly(run);
  }, 120_000);
});
