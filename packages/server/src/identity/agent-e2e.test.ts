import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';

/**
 * The device agent against the real platform: the built `rampart-agent` runs as a separate process,
 * as on a device, enrolls over EST with a one-time token and renews over mutual TLS.
 */
const AGENT = fileURLToPath(new URL('../../../agent/bin/rampart-agent.js', import.meta.url));
const exec = promisify(execFile);

async function agent(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await exec(process.execPath, [AGENT, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), ...env },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

let tp: TestPlatform;
let peers: PkiPeers;
let deviceDir: string;

beforeAll(async () => {
  tp = await startTestPlatform('sqlite');
  peers = new PkiPeers(tp);
  await peers.device('AGENT-0001');
  deviceDir = mkdtempSync(join(tmpdir(), 'rampart-device-'));
}, 60_000);
afterAll(async () => {
  await tp?.close();
});

describe('rampart-agent against the platform', () => {
  it('enrolls with a one-time token and the pinned root, and the platform records the certificate', async () => {
    const token = await peers.token('AGENT-0001');
    const r = await agent(
      [
        'enroll',
        '--data-dir',
        deviceDir,
        '--est-url',
        peers.est,
        '--ca',
        peers.rootCa,
        '--device-id',
        'AGENT-0001',
        '--json',
      ],
      { RAMPART_AGENT_ENROLLMENT_TOKEN: token },
    );
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { certificate: { serial: string } };
    const record = await tp.call('GET', `/api/v1/certificates/${out.certificate.serial}`);
    expect(record.status).toBe(200);
    expect(record.body).toMatchObject({
      deviceId: 'AGENT-0001',
      state: 'valid',
      enrollmentPolicy: 'one-time-token',
    });
    const device = await tp.call('GET', '/api/v1/devices/AGENT-0001');
    expect(device.body.status).toBe('active');

    // The token is spent: a second enrollment with it is refused with the server's reason.
    const again = await agent(
      [
        'enroll',
        '--data-dir',
        mkdtempSync(join(tmpdir(), 'rampart-device-')),
        '--est-url',
        peers.est,
        '--ca',
        peers.rootCa,
        '--device-id',
        'AGENT-0001',
      ],
      { RAMPART_AGENT_ENROLLMENT_TOKEN: token },
    );
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(/already used/);
  });

  it('renews over mutual TLS with its current certificate; the platform records the lineage', async () => {
    const before = JSON.parse(
      (await agent(['identity', 'show', '--data-dir', deviceDir, '--json'])).stdout,
    ) as {
      certificate: { serial: string };
    };
    const r = await agent(['renew', '--data-dir', deviceDir, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const renewed = JSON.parse(r.stdout) as { certificate: { serial: string }; previousSerial: string };
    expect(renewed.previousSerial).toBe(before.certificate.serial);
    expect(renewed.certificate.serial).not.toBe(before.certificate.serial);
    const record = await tp.call('GET', `/api/v1/certificates/${renewed.certificate.serial}`);
    expect(record.body).toMatchObject({
      renewedFrom: before.certificate.serial,
      enrollmentPolicy: 'current-certificate',
    });
    const old = await tp.call('GET', `/api/v1/certificates/${before.certificate.serial}`);
    expect(old.body).toMatchObject({ state: 'revoked', revocationReason: 'superseded' });
  });

  it('cannot renew once its certificate is revoked, and says to enroll again', async () => {
    const shown = JSON.parse(
      (await agent(['identity', 'show', '--data-dir', deviceDir, '--json'])).stdout,
    ) as {
      certificate: { serial: string };
    };
    const revoked = await tp.call('POST', `/api/v1/certificates/${shown.certificate.serial}/revoke`, {
      body: { reason: 'keyCompromise' },
    });
    expect(revoked.status).toBe(200);
    const r = await agent(['renew', '--data-dir', deviceDir]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/revoked/);
  });
});
