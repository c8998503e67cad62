import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PkiPeers } from '../../../server/src/test-support/pki.js';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';

const run = promisify(execFile);
const AGENT_BIN = fileURLToPath(new URL('../../../agent/dist/bin/rampart-agent.js', import.meta.url));

describe('rampart enrollment token', { timeout: 90_000 }, () => {
  let t: TestPlatform;
  let peers: PkiPeers;
  let env: Record<string, string>;
  let device: string;
  beforeAll(async () => {
    t = await startTestPlatform('sqlite');
    peers = new PkiPeers(t);
    env = cliEnvFor(t.dataDir);
    device = 'dw-enroll-1';
    await peers.device(device);
  });
  afterAll(async () => {
    await t?.close();
    if (peers) rmSync(peers.dir, { recursive: true, force: true });
  });

  it('create --json returns the token, the EST URL, and a record that list shows without the secret', async () => {
    const r = await runCli(
      ['enrollment', 'token', 'create', '--device', device, '--expires', '2h', '--json'],
      {
        env,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    const created = JSON.parse(r.stdout);
    expect(created).toMatchObject({
      token: expect.any(String),
      deviceId: device,
      state: 'unused',
      estUrl: peers.est,
    });
    expect(Date.parse(created.expiresAt) - Date.now()).toBeGreaterThan(110 * 60_000);

    const list = await runCli(['enrollment', 'token', 'list', '--device', device], { env });
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(created.id);
    expect(list.stdout).toContain('unused');
    expect(list.stdout).not.toContain(created.token);

    const json = await runCli(['enrollment', 'token', 'list', '--json'], { env });
    expect(JSON.parse(json.stdout)).toEqual(
      expect.arrayContaining([expect.objectContaining({ id: created.id, deviceId: device })]),
    );
    expect(json.stdout).not.toContain(created.token);

    const revoked = await runCli(['enrollment', 'token', 'revoke', created.id], { env });
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toContain(`revoked enrollment token ${created.id} of device ${device}`);
    const after = await runCli(['enrollment', 'token', 'list', '--device', device, '--json'], { env });
    expect(JSON.parse(after.stdout).find((x: { id: string }) => x.id === created.id).state).toBe('revoked');
    // The revoked token no longer enrolls.
    const refused = await peers.enroll('revoked', device, created.token);
    expect(refused.status).toBe(401);
  });

  it('prints the token once with examples that enroll a device as they are (curl + openssl, rampart-agent)', async () => {
    for (const id of ['dw-enroll-curl', 'dw-enroll-agent']) await peers.device(id);
    const workDir = mkdtempSync(join(tmpdir(), 'rampart-enroll-example-'));
    try {
      copyFileSync(join(t.dataDir, 'ca.pem'), join(workDir, 'ca.pem'));
      // `rampart-agent` on PATH, as on a device.
      const binDir = join(workDir, 'bin');
      mkdirSync(binDir);
      writeFileSync(
        join(binDir, 'rampart-agent'),
        `#!/bin/sh\nexec "${process.execPath}" "${AGENT_BIN}" "$@"\n`,
      );
      chmodSync(join(binDir, 'rampart-agent'), 0o755);

      for (const [id, pick] of [
        ['dw-enroll-curl', /^ {2}(openssl req .*)\n {2}(curl .*)$/m],
        ['dw-enroll-agent', /^ {2}(RAMPART_AGENT_ENROLLMENT_TOKEN=.* rampart-agent enroll .*)$/m],
      ] as const) {
        const r = await runCli(['enrollment', 'token', 'create', '--device', id], { env });
        expect(r.code, r.stderr).toBe(0);
        const token = /^ {2}(\S+)$/m.exec(r.stdout)?.[1];
        expect(token).toBeTruthy();
        expect(r.stdout).toMatch(new RegExp(`created enrollment token [a-z0-9]{12} for device ${id}`));
        expect(r.stdout).toContain('not shown again');
        expect(r.stdout).toContain(`--est-url ${peers.est} --ca ca.pem --device-id ${id}`);
        const lines = pick.exec(r.stdout);
        expect(lines, r.stdout).toBeTruthy();
        const script = lines!.slice(1).join('\n');
        await run('bash', ['-c', `set -eo pipefail\n${script}`], {
          cwd: workDir,
          env: { PATH: `${binDir}:${process.env.PATH ?? ''}`, HOME: workDir },
        });
      }
      // The curl example left a certificate for the device, chained to the pinned root.
      const subject = await run('openssl', ['x509', '-in', 'device.pem', '-noout', '-subject'], {
        cwd: workDir,
      });
      expect(subject.stdout).toContain('dw-enroll-curl');
      const listed = await runCli(['cert', 'list', '--json'], { env });
      const devices = JSON.parse(listed.stdout).items.map((c: { deviceId: string }) => c.deviceId);
      expect(devices).toContain('dw-enroll-curl');
      expect(devices).toContain('dw-enroll-agent');
      // Both tokens are used up.
      const tokens = await runCli(['enrollment', 'token', 'list', '--json'], { env });
      for (const id of ['dw-enroll-curl', 'dw-enroll-agent'])
        expect(JSON.parse(tokens.stdout).find((x: { deviceId: string }) => x.deviceId === id).state).toBe(
          'used',
        );
    } finally {
      rmSync(workDir, { recursive: true, force: true });
    }
  });

  it('exits 5 for an unknown device or token, and 2 for a bad lifetime', async () => {
    const noDevice = await runCli(['enrollment', 'token', 'create', '--device', 'no-such-device'], { env });
    expect(noDevice.code).toBe(5);
    expect(noDevice.stderr).toContain('rampart device create');
    const noToken = await runCli(['enrollment', 'token', 'revoke', 'zzzzzzzzzzzz'], { env });
    expect(noToken.code).toBe(5);
    const badExpiry = await runCli(
      ['enrollment', 'token', 'create', '--device', device, '--expires', 'soon'],
      {
        env,
      },
    );
    expect(badExpiry.code).toBe(2);
  });
});
