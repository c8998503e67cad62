import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { receiptProblem } from '@rampart/shared/updates';

/** The built entry point (tests run after `tsc -b`, as `npm test` does). */
const BIN = fileURLToPath(new URL('../../dist/bin/rampart-agent.js', import.meta.url));

function agent(args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

let dir: string;
let env: Record<string, string>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'agent-update-cli-'));
  env = { RAMPART_AGENT_DATA_DIR: join(dir, 'data'), RAMPART_AGENT_DEVICE_ID: 'dw-0001' };
  writeFileSync(join(dir, 'app-1.bin'), 'one');
  writeFileSync(join(dir, 'app-2.bin'), 'two');
  writeFileSync(join(dir, 'rootfs.img'), 'os image');
  const hooks = join(dir, 'hooks');
  mkdirSync(hooks);
  writeFileSync(join(hooks, 'reboot'), '#!/bin/sh\nexit 0\n');
  chmodSync(join(hooks, 'reboot'), 0o755);
  expect((await agent(['identity', 'init'], env)).code).toBe(0);
});

describe('rampart-agent update', () => {
  it('has --help with examples on every update command', async () => {
    for (const cmd of [
      ['update'],
      ...['install', 'status', 'commit', 'rollback', 'boot'].map((c) => ['update', c]),
    ]) {
      const r = await agent([...cmd, '--help']);
      expect(r.code, cmd.join(' ')).toBe(0);
      expect(r.stdout, cmd.join(' ')).toMatch(/Examples:\n {2}\$ rampart-agent update/);
    }
  });

  it('installs and commits, shows the slots, and refuses to go back below the counter (exit 4)', async () => {
    const one = await agent(
      ['update', 'install', join(dir, 'app-1.bin'), '--version', '1.0.0', '--release-counter', '3', '--json'],
      env,
    );
    expect(one.code, one.stderr).toBe(0);
    const result = JSON.parse(one.stdout);
    expect(result).toMatchObject({ outcome: 'committed', slot: 'b', running: 'b', version: '1.0.0' });
    const key = (await agent(['identity', 'show', '--json'], env).then((r) => JSON.parse(r.stdout)))
      .publicKeyPem as string;
    const receipt = JSON.parse(readFileSync(result.receipt, 'utf8'));
    expect(receipt.deviceId).toBe('dw-0001');
    expect(receiptProblem(receipt, key)).toBeNull();

    const status = await agent(['update', 'status', '--json'], env);
    expect(JSON.parse(status.stdout)).toMatchObject({ running: 'b', runningVersion: '1.0.0', pending: null });
    const text = await agent(['update', 'status'], env);
    expect(text.stdout).toMatch(/slot b: 1.0.0 \(application, release counter 3, committed\) {2}<- runs/);

    const old = await agent(
      ['update', 'install', join(dir, 'app-2.bin'), '--version', '0.9.0', '--release-counter', '2'],
      env,
    );
    expect(old.code).toBe(4);
    expect(old.stderr).toMatch(
      /release counter 2 of version 0.9.0 is below this device's anti-rollback counter for application \(3/,
    );

    const bad = await agent(
      ['update', 'install', join(dir, 'app-2.bin'), '--version', '2.0.0', '--release-counter', 'x'],
      env,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--release-counter must be a whole number/);
  });

  it('exits 1 when the self-test rolls back, 6 while an update is pending, 5 when nothing is', async () => {
    const failed = await agent(
      ['update', 'install', join(dir, 'app-2.bin'), '--version', '2.0.0', '--release-counter', '4'],
      { ...env, RAMPART_AGENT_UPDATES_SELF_TEST_COMMAND: 'exit 7' },
    );
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(
      /ROLLED BACK version 2.0.0 \(self-test-failed\); slot b runs again\n {2}self-test exited with 7/,
    );

    const hooked = { ...env, RAMPART_AGENT_UPDATES_HOOKS_DIR: join(dir, 'hooks') };
    const os = await agent(
      [
        'update',
        'install',
        join(dir, 'rootfs.img'),
        '--version',
        '2026.11',
        '--release-counter',
        '1',
        '--kind',
        'os',
      ],
      hooked,
    );
    expect(os.code, os.stderr).toBe(0);
    expect(os.stdout).toMatch(/rebooting into slot a/);
    const busy = await agent(
      ['update', 'install', join(dir, 'app-2.bin'), '--version', '2.0.0', '--release-counter', '4'],
      hooked,
    );
    expect(busy.code).toBe(6);
    expect(busy.stderr).toMatch(/still pending in slot a/);
    const commit = await agent(['update', 'commit', '--json'], hooked);
    expect(commit.code, commit.stderr).toBe(0);
    expect(JSON.parse(commit.stdout)).toMatchObject({ outcome: 'committed', running: 'a' });
    const nothing = await agent(['update', 'rollback'], hooked);
    expect(nothing.code).toBe(5);
    expect(nothing.stderr).toMatch(/no update is pending, nothing to roll back/);
    const boot = await agent(['update', 'boot', '--json'], hooked);
    expect(JSON.parse(boot.stdout)).toMatchObject({
      outcome: 'nothing-pending',
      running: 'a',
      version: '2026.11',
    });
  });
});
