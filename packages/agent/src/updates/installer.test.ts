import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { receiptProblem, type SignedUpdateReceipt } from '@rampart/shared/updates';
import { updateStartupCheck } from '../daemon.js';
import { AgentError } from '../errors.js';
import { createLogger } from '@rampart/shared/logging';
import { Writable } from 'node:stream';
import { hook, runningRelease, sha256, testDevice } from './test-support/slots.js';

const readJson = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as SignedUpdateReceipt;

/** An installed and committed first release, so that later installs have an old slot to fall back to. */
async function withV1(overrides = {}) {
  const device = await testDevice();
  const r = await device.installer(overrides).install({
    file: device.artifact('app.bin', 'release one'),
    version: '1.0.0',
    kind: 'application',
    releaseCounter: 1,
  });
  expect(r.outcome).toBe('committed');
  return device;
}

async function expectAgentError(p: Promise<unknown>, code: string, message: RegExp) {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentError);
  expect((err as AgentError).code).toBe(code);
  expect((err as AgentError).message).toMatch(message);
}

describe('A/B installer', () => {
  it('installs into the inactive slot, self-tests, commits, advances the counter and signs a receipt', async () => {
    const device = await withV1();
    const file = device.artifact('app-2.bin', 'release two');
    const installer = device.installer({
      // The self-test runs inside the new slot and sees what it is testing.
      selfTest: {
        command: 'test "$(cat app.bin)" = "release two" && test "$RAMPART_UPDATE_VERSION" = 2.0.0',
        timeoutMs: 5000,
      },
    });
    const r = await installer.install({
      file,
      name: 'app.bin',
      version: '2.0.0',
      kind: 'application',
      releaseCounter: 2,
    });
    expect(r).toMatchObject({ outcome: 'committed', slot: 'a', running: 'a', version: '2.0.0' });
    expect(runningRelease(device.dataDir)).toMatchObject({
      slot: 'a',
      link: 'a',
      release: { version: '2.0.0' },
    });
    // The old release stays in the other slot, for the next rollback.
    expect(readFileSync(join(installer.dir, 'b', 'app.bin'), 'utf8')).toBe('release one');
    expect(await device.counter.read('application')).toBe(2n);
    const state = installer.state();
    expect(state).toMatchObject({ active: 'a', pending: null, install: null, finishing: null });
    expect(state.slots.a).toMatchObject({ status: 'committed', sha256: sha256('release two') });

    const receipt = readJson(r.receipt!);
    expect(receipt).toMatchObject({
      deviceId: 'dev-1',
      outcome: 'committed',
      slot: 'a',
      runningSlot: 'a',
      runningVersion: '2.0.0',
      bootAttempts: 1,
      counter: '2',
      counterStore: 'file',
      release: { version: '2.0.0', releaseCounter: 2, sha256: sha256('release two'), kind: 'application' },
    });
    expect(receipt.reason).toBeUndefined();
    expect(receiptProblem(receipt, device.publicKey)).toBeNull();
    // Any edit breaks it; another key's receipt is not this device's.
    expect(
      receiptProblem({ ...receipt, outcome: 'rolled-back', reason: 'timeout' }, device.publicKey),
    ).toMatch(/changed after it was signed/);
    expect(receiptProblem({ ...receipt, counter: '9' }, device.publicKey)).toMatch(
      /changed after it was signed/,
    );
    const other = await testDevice();
    expect(receiptProblem(receipt, other.publicKey)).toMatch(/signed by key/);
    expect(receiptProblem({ ...receipt, extra: 1 }, device.publicKey)).toMatch(
      /not an update receipt: extra/,
    );
  });

  it('rolls back when the self-test fails: the old slot runs, the counter stays, the receipt says why', async () => {
    const device = await withV1();
    const installer = device.installer({
      selfTest: { command: 'echo "health check: no answer on :8080" >&2; exit 3', timeoutMs: 5000 },
    });
    const r = await installer.install({
      file: device.artifact('app.bin', 'release two'),
      version: '2.0.0',
      kind: 'application',
      releaseCounter: 2,
    });
    expect(r).toMatchObject({ outcome: 'rolled-back', reason: 'self-test-failed', slot: 'a', running: 'b' });
    expect(r.detail).toBe('self-test exited with 3: health check: no answer on :8080');
    expect(runningRelease(device.dataDir)).toMatchObject({
      slot: 'b',
      link: 'b',
      release: { version: '1.0.0' },
    });
    expect(await device.counter.read('application')).toBe(1n);
    expect(installer.state().slots.a?.status).toBe('failed');
    const receipt = readJson(r.receipt!);
    expect(receipt).toMatchObject({
      outcome: 'rolled-back',
      reason: 'self-test-failed',
      slot: 'a',
      runningSlot: 'b',
      runningVersion: '1.0.0',
      counter: '1',
    });
    expect(receiptProblem(receipt, device.publicKey)).toBeNull();
  });

  it('rolls back a self-test that hangs past its time limit, killing it', async () => {
    const device = await withV1();
    const marker = join(device.dataDir, 'still-running');
    const installer = device.installer({ selfTest: { command: `sleep 3; touch ${marker}`, timeoutMs: 300 } });
    const started = Date.now();
    const r = await installer.install({
      file: device.artifact('app.bin', 'two'),
      version: '2.0.0',
      kind: 'application',
      releaseCounter: 2,
    });
    expect(Date.now() - started).toBeLessThan(2500);
    expect(r).toMatchObject({ outcome: 'rolled-back', reason: 'self-test-failed', running: 'b' });
    expect(r.detail).toMatch(/^self-test did not finish within 300 ms and was killed$/);
    await new Promise((res) => setTimeout(res, 3200));
    expect(existsSync(marker)).toBe(false); // the whole process group was killed
  });

  it('rolls back a slot not committed before its deadline, at the next start', async () => {
    const device = await withV1();
    const hooks = join(device.dataDir, 'hooks');
    hook(hooks, 'reboot', 'exit 0');
    const r = await device.installer({ hooksDir: hooks, commitTimeoutMs: 60_000 }).install({
      file: device.artifact('rootfs.img', 'os two'),
      version: '2026.11',
      kind: 'os',
      releaseCounter: 2,
    });
    expect(r).toMatchObject({ outcome: 'rebooting', slot: 'a', running: 'a' });
    expect(runningRelease(device.dataDir).slot).toBe('a');
    // The device comes back two minutes later, past the deadline.
    const later = device.installer({ hooksDir: hooks, now: () => new Date(Date.now() + 120_000) });
    const boot = await later.boot();
    expect(boot).toMatchObject({ outcome: 'rolled-back', reason: 'timeout', running: 'b' });
    expect(runningRelease(device.dataDir)).toMatchObject({ slot: 'b', link: 'b' });
    expect(await device.counter.read('os')).toBe(0n);
  });

  it('after a reboot hook, the next start self-tests and commits; too many starts roll back', async () => {
    const device = await withV1();
    const hooks = join(device.dataDir, 'hooks');
    hook(hooks, 'reboot', 'exit 0');
    const installer = device.installer({ hooksDir: hooks });
    await installer.install({
      file: device.artifact('rootfs.img', 'os two'),
      version: '2.0',
      kind: 'os',
      releaseCounter: 4,
    });
    const boot = await installer.boot();
    expect(boot).toMatchObject({ outcome: 'committed', running: 'a', version: '2.0' });
    expect(readJson(boot.receipt!).bootAttempts).toBe(1);
    expect(await device.counter.read('os')).toBe(4n);
    expect(await installer.boot()).toMatchObject({
      outcome: 'nothing-pending',
      running: 'a',
      version: '2.0',
    });

    // A release whose starts never reach a commit: the state counts every start.
    await installer.install({
      file: device.artifact('rootfs.img', 'os three'),
      version: '3.0',
      kind: 'os',
      releaseCounter: 5,
    });
    const state = installer.state();
    state.pending!.bootAttempts = 3; // three starts already died before their self-test finished
    installer.stateFile.write(state);
    const fourth = await installer.boot();
    expect(fourth).toMatchObject({
      outcome: 'rolled-back',
      reason: 'crash-loop',
      running: 'a',
      version: '3.0',
    });
    expect(fourth.detail).toMatch(/started 3 times without being committed \(at most 3\)/);
  });

  it('believes the bootloader: when the booted hook names the old slot, the update is rolled back', async () => {
    const device = await withV1();
    const hooks = join(device.dataDir, 'hooks');
    hook(hooks, 'reboot', 'exit 0');
    hook(hooks, 'booted', 'echo "$RAMPART_UPDATE_PREVIOUS_SLOT"');
    const installer = device.installer({ hooksDir: hooks });
    await installer.install({
      file: device.artifact('rootfs.img', 'os two'),
      version: '2.0',
      kind: 'os',
      releaseCounter: 2,
    });
    const boot = await installer.boot();
    expect(boot).toMatchObject({ outcome: 'rolled-back', reason: 'bootloader', running: 'b' });
  });

  it('calls the bootloader hooks at each step with the slot and release, and rolls back through them', async () => {
    const device = await withV1();
    const hooks = join(device.dataDir, 'hooks');
    const calls = join(device.dataDir, 'calls');
    for (const step of ['install', 'activate', 'restart', 'commit', 'rollback'])
      hook(
        hooks,
        step,
        `echo "$RAMPART_UPDATE_STEP $RAMPART_UPDATE_SLOT $RAMPART_UPDATE_VERSION $RAMPART_UPDATE_RELEASE_COUNTER" >> ${calls}`,
      );
    const installer = device.installer({ hooksDir: hooks });
    await installer.install({
      file: device.artifact('app.bin', 'two'),
      version: '2.0.0',
      kind: 'application',
      releaseCounter: 2,
    });
    expect(readFileSync(calls, 'utf8').trim().split('\n')).toEqual([
      'install a 2.0.0 2',
      'activate a 2.0.0 2',
      'restart a 2.0.0 2',
      'commit a 2.0.0 2',
    ]);
    writeFileSync(calls, '');
    const failing = device.installer({ hooksDir: hooks, selfTest: { command: 'false', timeoutMs: 5000 } });
    await failing.install({
      file: device.artifact('app.bin', 'three'),
      version: '3.0.0',
      kind: 'application',
      releaseCounter: 3,
    });
    expect(readFileSync(calls, 'utf8').trim().split('\n').at(-1)).toBe('rollback b 3.0.0 3');
  });

  it('abandons an install whose hook fails: the slot is cleared and the device keeps its slot', async () => {
    const device = await withV1();
    const hooks = join(device.dataDir, 'hooks');
    hook(hooks, 'install', 'echo "fw_setenv: cannot write /dev/mtd1" >&2; exit 1');
    const installer = device.installer({ hooksDir: hooks });
    await expectAgentError(
      installer.install({
        file: device.artifact('app.bin', 'two'),
        version: '2.0.0',
        kind: 'application',
        releaseCounter: 2,
      }),
      'UPDATE_FAILED',
      /install hook exited with 1: fw_setenv: cannot write \/dev\/mtd1; slot a was cleared/,
    );
    expect(existsSync(join(installer.dir, 'a'))).toBe(false);
    expect(installer.state()).toMatchObject({
      active: 'b',
      pending: null,
      install: null,
      slots: { a: null },
    });
    expect(runningRelease(device.dataDir).release.version).toBe('1.0.0');
  });

  it('refuses a release below the anti-rollback counter, and a wrong hash, changing nothing', async () => {
    const device = await withV1();
    await device.counter.advance('application', 5n);
    const installer = device.installer();
    const before = readFileSync(installer.stateFile.file, 'utf8');
    const listing = readdirSync(installer.dir).sort();
    await expectAgentError(
      installer.install({
        file: device.artifact('old.bin', 'old but signed'),
        version: '0.9.0',
        kind: 'application',
        releaseCounter: 4,
      }),
      'UPDATE_REFUSED',
      /release counter 4 of version 0.9.0 is below this device's anti-rollback counter for application \(5, in a file: weaker\)/,
    );
    await expectAgentError(
      installer.install({
        file: device.artifact('new.bin', 'bit-flipped'),
        version: '6.0.0',
        kind: 'application',
        releaseCounter: 6,
        sha256: sha256('the real release'),
      }),
      'UPDATE_REFUSED',
      /has SHA-256 .* not the .* it must have/,
    );
    expect(readFileSync(installer.stateFile.file, 'utf8')).toBe(before);
    expect(readdirSync(installer.dir).sort()).toEqual(listing);
    // Equal to the counter is allowed (a re-install of the current release).
    const same = await installer.install({
      file: device.artifact('app.bin', 'five'),
      version: '5.0.0',
      kind: 'application',
      releaseCounter: 5,
    });
    expect(same.outcome).toBe('committed');
  });

  it('refuses a second install while one is pending; commit and rollback by hand settle it', async () => {
    const device = await withV1();
    const hooks = join(device.dataDir, 'hooks');
    hook(hooks, 'reboot', 'exit 0');
    const installer = device.installer({ hooksDir: hooks });
    await installer.install({
      file: device.artifact('rootfs.img', 'os two'),
      version: '2.0',
      kind: 'os',
      releaseCounter: 2,
    });
    await expectAgentError(
      installer.install({
        file: device.artifact('rootfs.img', 'os three'),
        version: '3.0',
        kind: 'os',
        releaseCounter: 3,
      }),
      'UPDATE_CONFLICT',
      /version 2.0 is still pending in slot a/,
    );
    const committed = await installer.commit();
    expect(committed).toMatchObject({
      outcome: 'committed',
      running: 'a',
      detail: 'committed by the operator',
    });
    expect(await device.counter.read('os')).toBe(2n);
    await expectAgentError(
      installer.commit(),
      'UPDATE_NOT_PENDING',
      /no update is pending, nothing to commit; slot a runs version 2.0/,
    );

    await installer.install({
      file: device.artifact('rootfs.img', 'os three'),
      version: '3.0',
      kind: 'os',
      releaseCounter: 3,
    });
    const rolled = await installer.rollbackPending();
    expect(rolled).toMatchObject({ outcome: 'rolled-back', reason: 'operator', running: 'a' });
    await expectAgentError(installer.rollbackPending(), 'UPDATE_NOT_PENDING', /nothing to roll back/);
  });

  it('writes no receipt when the device has no identity yet, and says so', async () => {
    const device = await testDevice();
    const r = await device.installer({ signer: async () => null }).install({
      file: device.artifact('app.bin', 'one'),
      version: '1.0.0',
      kind: 'application',
      releaseCounter: 1,
    });
    expect(r).toMatchObject({ outcome: 'committed', receipt: null });
    expect(existsSync(join(device.dataDir, 'slots', 'receipts'))).toBe(false);
  });

  it('refuses a damaged state file instead of guessing which slot runs', async () => {
    const device = await withV1();
    const installer = device.installer();
    writeFileSync(installer.stateFile.file, '{"format":1,"active":"c"');
    await expectAgentError(installer.boot(), 'UPDATE_STATE', /is not JSON/);
    writeFileSync(installer.stateFile.file, JSON.stringify({ format: 2 }));
    await expectAgentError(installer.boot(), 'UPDATE_STATE', /format 2 is not 1/);
  });

  it('runs at the start of rampart-agent run: settles the pending slot, and a failure is logged, not fatal', async () => {
    const device = await withV1();
    const hooks = join(device.dataDir, 'hooks');
    hook(hooks, 'reboot', 'exit 0');
    const installer = device.installer({ hooksDir: hooks });
    await installer.install({
      file: device.artifact('rootfs.img', 'os two'),
      version: '2.0',
      kind: 'os',
      releaseCounter: 2,
    });
    const lines: string[] = [];
    const log = createLogger({
      level: 'info',
      destination: new Writable({
        write(chunk: Buffer, _enc, done) {
          lines.push(chunk.toString());
          done();
        },
      }),
    });
    const result = await updateStartupCheck(installer, log);
    expect(result).toMatchObject({ outcome: 'committed', running: 'a' });
    expect(lines.join('')).toMatch(/update check at start: committed, version 2.0; slot a runs/);
    writeFileSync(installer.stateFile.file, 'garbage');
    expect(await updateStartupCheck(installer, log)).toBeNull();
    expect(lines.join('')).toMatch(/update check at start failed: the slot state file .* is not JSON/);
  });

  it('leaves a device that never installed an update alone at start-up', async () => {
    const device = await testDevice();
    const installer = device.installer();
    expect(await installer.boot()).toMatchObject({ outcome: 'nothing-pending', running: 'a', version: null });
    expect(existsSync(installer.dir)).toBe(false);
  });
});
