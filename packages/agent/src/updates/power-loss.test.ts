import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { receiptProblem } from '@rampart/shared/updates';
import { INSTALL_STEPS, KILL_AT_ENV } from './installer.js';
import { runningRelease, testDevice } from './test-support/slots.js';

/**
 * Power loss at every step of an install: a child process runs the (built) installer and kills
 * itself with SIGKILL at step k; then the device "restarts" (the start-up check in a new process),
 * and must run the old release or the new one — whole — never neither, with the interrupted install
 * either finished or cleanly abandoned. Tests run after `tsc -b`, as `npm test` does.
 */
const DIST = fileURLToPath(new URL('../../dist/', import.meta.url));
const SHARED_DIST = fileURLToPath(new URL('../../../shared/dist/', import.meta.url));
const url = (file: string) => pathToFileURL(file).href;

let driver: string;

beforeAll(() => {
  const dir = mkdtempSync(join(tmpdir(), 'rampart-update-driver-'));
  driver = join(dir, 'driver.mjs');
  writeFileSync(
    driver,
    `
import { join } from 'node:path';
import { Installer } from ${JSON.stringify(url(join(DIST, 'updates/installer.js')))};
import { FileRollbackCounter } from ${JSON.stringify(url(join(DIST, 'updates/counter.js')))};
import { SoftwareTrustAnchor } from ${JSON.stringify(url(join(DIST, 'trust-anchor/software.js')))};
import { createLogger } from ${JSON.stringify(url(join(SHARED_DIST, 'logging/index.js')))};
const e = process.env;
const anchor = new SoftwareTrustAnchor(join(e.DATA_DIR, 'identity', 'device-key.pem'));
const publicKey = await anchor.publicKey();
const installer = new Installer({
  dataDir: e.DATA_DIR,
  counter: new FileRollbackCounter(join(e.DATA_DIR, 'slots', 'counters.json')),
  log: createLogger({ level: 'silent' }),
  selfTest: { command: e.SELF_TEST || undefined, timeoutMs: 5000 },
  maxBootAttempts: 3,
  commitTimeoutMs: 600000,
  signer: async () => ({ deviceId: 'dev-1', publicKey, sign: (d) => anchor.sign(d) }),
  killAt: e.${KILL_AT_ENV},
});
const result = e.ACTION === 'install'
  ? await installer.install({ file: e.FILE, name: 'app.bin', version: e.VERSION, kind: 'application', releaseCounter: Number(e.COUNTER) })
  : await installer.boot();
process.stdout.write(JSON.stringify(result));
`,
  );
});

function child(
  env: Record<string, string>,
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [driver], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.once('error', reject);
    p.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

describe('power loss during an install (SIGKILL at every step)', () => {
  it('names every step, in order', () => {
    expect(INSTALL_STEPS[0]).toBe('install-recorded');
    expect(INSTALL_STEPS.at(-1)).toBe('done');
    expect(new Set(INSTALL_STEPS).size).toBe(INSTALL_STEPS.length);
  });

  it.each(INSTALL_STEPS.map((s) => [s]))(
    'killed at %s: the device runs the old or the new release, and the restart settles it',
    async (step) => {
      const device = await testDevice('rampart-power-');
      // Release one, committed, is what runs before the update.
      await device.installer().install({
        file: device.artifact('one.bin', 'release one '.repeat(1000)),
        name: 'app.bin',
        version: '1.0.0',
        kind: 'application',
        releaseCounter: 1,
      });
      const two = device.artifact('two.bin', 'release two '.repeat(1000));
      const env = { DATA_DIR: device.dataDir, FILE: two, VERSION: '2.0.0', COUNTER: '2', SELF_TEST: 'true' };

      const killed = await child({ ...env, ACTION: 'install', [KILL_AT_ENV]: step });
      expect(killed.signal, killed.stderr).toBe('SIGKILL');
      // At the moment power went: one whole release is the one to run.
      expect(['1.0.0', '2.0.0']).toContain(runningRelease(device.dataDir).release.version);

      // The restart: the start-up check finishes or abandons what was under way.
      const boot = await child({ ...env, ACTION: 'boot' });
      expect(boot.code, boot.stderr).toBe(0);
      const after = runningRelease(device.dataDir);
      expect(after.link).toBe(after.slot);
      const state = device.installer().state();
      expect(state).toMatchObject({ pending: null, install: null, finishing: null });

      if (after.release.version === '2.0.0') {
        // Committed: the counter moved and the signed receipt is there.
        expect(await device.counter.read('application')).toBe(2n);
        expect(state.last).toMatchObject({ outcome: 'committed', version: '2.0.0' });
        const receipt = JSON.parse(readFileSync(state.last!.receipt!, 'utf8'));
        expect(receiptProblem(receipt, device.publicKey)).toBeNull();
        expect(receipt).toMatchObject({ outcome: 'committed', runningVersion: '2.0.0' });
        // A receipt signed again after the cut replaces the first: one per decision.
        const receipts = readdirSync(join(device.dataDir, 'slots', 'receipts'));
        expect(
          receipts.filter(
            (f) =>
              JSON.parse(readFileSync(join(device.dataDir, 'slots', 'receipts', f), 'utf8')).release
                .version === '2.0.0',
          ),
        ).toHaveLength(1);
      } else {
        // Abandoned before the new slot ever ran: nothing half-installed is left, and installing again works.
        expect(await device.counter.read('application')).toBe(1n);
        expect(existsSync(join(device.dataDir, 'slots', 'a', 'app.bin'))).toBe(false);
        const again = await child({ ...env, ACTION: 'install' });
        expect(again.code, again.stderr).toBe(0);
        expect(JSON.parse(again.stdout)).toMatchObject({ outcome: 'committed', version: '2.0.0' });
        expect(runningRelease(device.dataDir).release.version).toBe('2.0.0');
      }
      // Once the new slot was activated, the kill is a start of it: it is never abandoned silently.
      const activatedAt = INSTALL_STEPS.indexOf('activated');
      if (INSTALL_STEPS.indexOf(step) >= activatedAt) expect(after.release.version).toBe('2.0.0');
    },
  );

  it('a release that kills the device at every start is rolled back after three starts (crash loop)', async () => {
    const device = await testDevice('rampart-crash-');
    await device.installer().install({
      file: device.artifact('one.bin', 'release one'),
      name: 'app.bin',
      version: '1.0.0',
      kind: 'application',
      releaseCounter: 1,
    });
    // The self-test takes the agent down with it, as a crashing release would: SIGKILL of its parent.
    const env = {
      DATA_DIR: device.dataDir,
      FILE: device.artifact('two.bin', 'release two'),
      VERSION: '2.0.0',
      COUNTER: '2',
      SELF_TEST: 'kill -KILL $PPID; sleep 5',
    };
    const first = await child({ ...env, ACTION: 'install' });
    expect(first.signal).toBe('SIGKILL');
    for (const start of [2, 3]) {
      const r = await child({ ...env, ACTION: 'boot' });
      expect(r.signal, `start ${start}`).toBe('SIGKILL');
      expect(device.installer().state().pending?.bootAttempts).toBe(start);
    }
    const fourth = await child({ ...env, ACTION: 'boot' });
    expect(fourth.code, fourth.stderr).toBe(0);
    expect(JSON.parse(fourth.stdout)).toMatchObject({
      outcome: 'rolled-back',
      reason: 'crash-loop',
      running: 'b',
    });
    expect(runningRelease(device.dataDir)).toMatchObject({
      slot: 'b',
      link: 'b',
      release: { version: '1.0.0' },
    });
    expect(await device.counter.read('application')).toBe(1n);
  });
});
