import { createHash, type KeyObject } from 'node:crypto';
import {
  closeSync,
  existsSync,
  createReadStream,
  fsyncSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import type { Logger } from '@rampart/shared/logging';
import { signDocument } from '@rampart/shared/provisioning';
import {
  RECEIPT_TYPE,
  type RollbackReason,
  type SignedUpdateReceipt,
  type UpdateReceipt,
} from '@rampart/shared/updates';
import { AgentError } from '../errors.js';
import { writeFileAtomic } from '../identity/files.js';
import type { RollbackCounter } from './counter.js';
import { Hooks, describeResult, runProcess } from './hooks.js';
import {
  SlotStateFile,
  UPDATE_KINDS,
  otherSlot,
  runningSlot,
  type Finishing,
  type ReleaseInfo,
  type Slot,
  type SlotsState,
  type UpdateKind,
} from './state.js';

/**
 * The points of an install where a test can make the process kill itself (SIGKILL), to show that a
 * power cut at any of them leaves the device running the old slot or the new one, never neither.
 * In the order an install passes them.
 */
export const INSTALL_STEPS = [
  'install-recorded',
  'slot-cleared',
  'copy-half',
  'copied',
  'install-hook',
  'installed',
  'activated',
  'activate-hook',
  'restarting',
  'self-test',
  'decided',
  'finish-hook',
  'counter-advanced',
  'receipt-written',
  'done',
] as const;
export type InstallStep = (typeof INSTALL_STEPS)[number];

/** The environment variable that names the step to die at (fault injection for power-loss tests). */
export const KILL_AT_ENV = 'RAMPART_AGENT_UPDATE_KILL_AT';

/** Signs receipts with the device key in the trust anchor. */
export interface ReceiptSigner {
  deviceId: string;
  publicKey: KeyObject;
  sign(data: Uint8Array): Promise<Buffer>;
}

export interface InstallerOptions {
  /** `<dataDir>/slots` holds the two slot directories, the state file, `current` and the receipts. */
  dataDir: string;
  counter: RollbackCounter;
  log: Logger;
  /** The self-test: a shell command (none: starting is the test) and its time limit. */
  selfTest: { command?: string; timeoutMs: number };
  maxBootAttempts: number;
  commitTimeoutMs: number;
  hooksDir?: string;
  /** Who signs receipts; null when the device has no key or id yet (no receipt is written then). */
  signer: () => Promise<ReceiptSigner | null>;
  /** Fault injection: SIGKILL this process on reaching this step. */
  killAt?: string;
  /**
   * Called at every step, before `killAt` is looked at; whatever it throws ends the install (or the
   * start-up check) right there, as a power cut would, for simulations that run many devices in
   * one process.
   */
  onStep?: (step: InstallStep) => void;
  now?: () => Date;
}

/** What came of an install, a start-up check, a commit or a rollback. */
export interface UpdateResult {
  outcome: 'committed' | 'rolled-back' | 'rebooting' | 'nothing-pending';
  reason?: RollbackReason;
  detail: string;
  /** The slot the release went into (the pending one). */
  slot: Slot;
  /** The slot that runs now. */
  running: Slot;
  version: string | null;
  receipt: string | null;
}

export interface InstallRequest {
  file: string;
  version: string;
  kind: UpdateKind;
  releaseCounter: number;
  /** The SHA-256 the artifact must have (from its verified target); checked before anything changes. */
  sha256?: string;
  /** The file name inside the slot (default: the artifact's own). */
  name?: string;
}

const SLOT_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$/;
const RESERVED = new Set(['release.json']);

async function sha256File(file: string): Promise<{ sha256: string; length: number }> {
  const hash = createHash('sha256');
  let length = 0;
  const stream = createReadStream(file);
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    length += chunk.length;
  }
  return { sha256: hash.digest('hex'), length };
}

/**
 * Installs verified artifacts into the inactive slot of an A/B pair and sees each through: written,
 * activated on trial ("try once"), restarted, self-tested, then committed — or rolled back on a failed
 * self-test, a crash loop or a time-out. `<dataDir>/slots/state.json` says which slot runs; every
 * change of it is one atomic write, so a power cut at any moment leaves the old slot or the new one
 * running, and `boot()` (at every start) finishes or abandons whatever was under way.
 */
export class Installer {
  readonly dir: string;
  readonly stateFile: SlotStateFile;
  readonly hooks: Hooks;
  private readonly o: InstallerOptions;
  private readonly now: () => Date;

  constructor(options: InstallerOptions) {
    this.o = options;
    this.dir = join(options.dataDir, 'slots');
    this.stateFile = new SlotStateFile(this.dir);
    this.hooks = new Hooks(options.hooksDir);
    this.now = options.now ?? (() => new Date());
  }

  slotDir(slot: Slot): string {
    return join(this.dir, slot);
  }

  /** The symbolic link `<dataDir>/slots/current`, pointing at the slot that runs. */
  get currentLink(): string {
    return join(this.dir, 'current');
  }

  state(): SlotsState {
    return this.stateFile.read();
  }

  /** Install `req.file` into the inactive slot and see it through to a commit or a rollback. */
  async install(req: InstallRequest): Promise<UpdateResult> {
    const log = this.o.log;
    if (!(UPDATE_KINDS as readonly string[]).includes(req.kind))
      throw new AgentError('USAGE', `the kind must be one of ${UPDATE_KINDS.join(', ')} (got "${req.kind}")`);
    if (!Number.isSafeInteger(req.releaseCounter) || req.releaseCounter < 0)
      throw new AgentError(
        'USAGE',
        `the release counter must be a whole number ≥ 0 (got ${req.releaseCounter})`,
      );
    const name = req.name ?? basename(req.file);
    if (!SLOT_FILE_NAME.test(name) || RESERVED.has(name))
      throw new AgentError(
        'USAGE',
        `"${name}" cannot be a file name in a slot: use letters, digits, . _ + -`,
      );
    await this.settle();
    let state = this.state();
    if (state.pending)
      throw new AgentError(
        'UPDATE_CONFLICT',
        `version ${state.pending.release.version} is still pending in slot ${state.pending.slot}: ` +
          'wait for its self-test, or settle it with rampart-agent update commit (or rollback)',
      );
    let measured: { sha256: string; length: number };
    try {
      measured = await sha256File(req.file);
    } catch (err) {
      throw new AgentError(
        'USAGE',
        `cannot read the artifact ${req.file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
    if (req.sha256 !== undefined && req.sha256.toLowerCase() !== measured.sha256)
      throw new AgentError(
        'UPDATE_REFUSED',
        `the artifact ${req.file} has SHA-256 ${measured.sha256}, not the ${req.sha256} it must have: it is damaged or not the release; nothing was changed`,
      );
    const stored = await this.o.counter.read(req.kind);
    if (BigInt(req.releaseCounter) < stored)
      throw new AgentError(
        'UPDATE_REFUSED',
        `release counter ${req.releaseCounter} of version ${req.version} is below this device's anti-rollback counter for ${req.kind} (${stored}, ` +
          `${this.o.counter.store === 'tpm' ? 'in the TPM' : 'in a file: weaker'}): the device does not go back to a replaced release; nothing was changed`,
      );
    const release: ReleaseInfo = {
      name,
      version: req.version,
      kind: req.kind,
      releaseCounter: req.releaseCounter,
      sha256: measured.sha256,
      length: measured.length,
    };
    const slot = otherSlot(state.active);
    const dir = this.slotDir(slot);

    // 1. Record the install before the slot is touched: a power cut from here on leaves a record
    //    that boot() turns into a clean slate.
    state.install = { slot, release, startedAt: this.now().toISOString() };
    state.slots[slot] = null;
    this.write(state);
    this.step('install-recorded');
    log.info(
      { slot, version: release.version, kind: release.kind },
      `installing ${release.version} into slot ${slot}`,
    );

    // 2. Clear the inactive slot and write the artifact into it, flushed.
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    this.step('slot-cleared');
    const copied = await this.copy(req.file, join(dir, name), release.length);
    if (copied !== release.sha256) {
      this.abandon(state, slot);
      throw new AgentError(
        'UPDATE_REFUSED',
        `the artifact ${req.file} changed while it was being installed; slot ${slot} was cleared and nothing else changed`,
      );
    }
    this.step('copied');

    // 3. The bootloader's part (write a partition, say), then the release record in the slot.
    const env = this.env(slot, release, state.active);
    const hook = await this.hooks.run('install', { ...env, RAMPART_UPDATE_ARTIFACT: join(dir, name) });
    this.step('install-hook');
    if (hook && hook.code !== 0) {
      this.abandon(state, slot);
      throw new AgentError(
        'UPDATE_FAILED',
        `the install hook ${this.hooks.describe(hook)}; slot ${slot} was cleared, the device keeps running slot ${state.active}`,
      );
    }
    writeFileAtomic(join(dir, 'release.json'), JSON.stringify(release, null, 2) + '\n', 0o644);
    this.step('installed');

    // 4. Activate on trial, in the same write that closes the install record: from here on the new
    //    slot is the one that runs, and there is no moment where it is whole but neither.
    const activatedAt = this.now();
    state = this.state();
    state.install = null;
    state.slots[slot] = { ...release, status: 'pending', installedAt: activatedAt.toISOString() };
    state.pending = {
      slot,
      release,
      activatedAt: activatedAt.toISOString(),
      deadline: new Date(activatedAt.getTime() + this.o.commitTimeoutMs).toISOString(),
      bootAttempts: 0,
    };
    this.write(state);
    this.linkCurrent(slot);
    this.step('activated');
    log.info(
      { slot, version: release.version, deadline: state.pending.deadline },
      `slot ${slot} activated on trial: it must pass its self-test before ${state.pending.deadline}`,
    );
    const activate = await this.hooks.run('activate', env);
    this.step('activate-hook');
    if (activate && activate.code !== 0)
      return this.rollback('self-test-failed', `the activate hook ${this.hooks.describe(activate)}`);

    // 5. Restart into it, counted as a start of the pending slot.
    return this.start(true);
  }

  /**
   * The start-up check, at every start of the agent (`rampart-agent run`, `rampart-agent update boot`):
   * finish or abandon what a power cut interrupted; then, when a slot is on trial, count this start,
   * roll back on a crash loop or a passed deadline, else run the self-test and commit or roll back.
   */
  async boot(): Promise<UpdateResult> {
    await this.settle();
    const state = this.state();
    if (!state.pending) {
      const running = state.active;
      return {
        outcome: 'nothing-pending',
        detail: 'no update is pending',
        slot: running,
        running,
        version: state.slots[running]?.version ?? null,
        receipt: null,
      };
    }
    const booted = await this.hooks.run(
      'booted',
      this.env(state.pending.slot, state.pending.release, state.active),
    );
    if (booted) {
      const said = booted.stdout.trim();
      if (booted.code !== 0 || (said !== 'a' && said !== 'b'))
        this.o.log.warn(
          `the booted hook ${this.hooks.describe(booted)} and did not print a or b; assuming slot ${state.pending.slot} booted`,
        );
      else if (said !== state.pending.slot)
        return this.rollback(
          'bootloader',
          `the bootloader booted slot ${said}, not the pending slot ${state.pending.slot}: it gave up on it`,
        );
    }
    return this.start(false);
  }

  /** Commit the pending slot without a self-test (the operator vouches for it). */
  async commit(): Promise<UpdateResult> {
    await this.settle();
    const state = this.state();
    if (!state.pending) throw this.notPending('commit');
    return this.decide({ outcome: 'committed', detail: 'committed by the operator' });
  }

  /** Roll the pending slot back (the operator decided). */
  async rollbackPending(): Promise<UpdateResult> {
    await this.settle();
    const state = this.state();
    if (!state.pending) throw this.notPending('roll back');
    return this.rollback('operator', 'rolled back by the operator');
  }

  private notPending(what: string): AgentError {
    const state = this.state();
    return new AgentError(
      'UPDATE_NOT_PENDING',
      `no update is pending, nothing to ${what}; slot ${state.active} runs${state.slots[state.active] ? ` version ${state.slots[state.active]!.version}` : ''}`,
    );
  }

  /** One start of the pending slot: counted first, then checked, restarted and self-tested. */
  private async start(afterInstall: boolean): Promise<UpdateResult> {
    const log = this.o.log;
    const state = this.state();
    const pending = state.pending!;
    const env = this.env(pending.slot, pending.release, state.active);
    const reboots = pending.release.kind === 'os' || pending.release.kind === 'firmware';
    if (afterInstall && reboots && this.hooks.has('reboot')) {
      // The reboot hook restarts the device; boot() counts that start and runs the self-test.
      log.info(
        { slot: pending.slot },
        `rebooting into slot ${pending.slot}; the self-test runs at the next start`,
      );
      const r = await this.hooks.run('reboot', env);
      if (r && r.code !== 0)
        return this.rollback('self-test-failed', `the reboot hook ${this.hooks.describe(r)}`);
      return {
        outcome: 'rebooting',
        detail: `rebooting into slot ${pending.slot}`,
        slot: pending.slot,
        running: pending.slot,
        version: pending.release.version,
        receipt: null,
      };
    }
    pending.bootAttempts += 1;
    this.write(state);
    this.step('restarting');
    if (pending.bootAttempts > this.o.maxBootAttempts)
      return this.rollback(
        'crash-loop',
        `slot ${pending.slot} started ${pending.bootAttempts - 1} times without being committed (at most ${this.o.maxBootAttempts})`,
      );
    if (this.now().getTime() > Date.parse(pending.deadline))
      return this.rollback(
        'timeout',
        `slot ${pending.slot} was not committed before its deadline ${pending.deadline}`,
      );
    if (afterInstall) {
      const restartStep = reboots ? 'reboot' : 'restart';
      const r = await this.hooks.run(restartStep, env);
      if (r && r.code !== 0)
        return this.rollback('self-test-failed', `the ${restartStep} hook ${this.hooks.describe(r)}`);
      if (!r)
        log.info(
          reboots
            ? `no reboot hook: slot ${pending.slot} is taken as booted (directory slots)`
            : `no restart hook: the application starts from ${this.currentLink} at its next start`,
        );
    }
    log.info(
      { slot: pending.slot, attempt: pending.bootAttempts },
      `self-test of slot ${pending.slot} (start ${pending.bootAttempts} of at most ${this.o.maxBootAttempts})`,
    );
    const test = await this.selfTest(pending.slot, env);
    if (!test.ok) return this.rollback('self-test-failed', test.detail);
    return this.decide({ outcome: 'committed', detail: test.detail });
  }

  private async selfTest(slot: Slot, env: Record<string, string>): Promise<{ ok: boolean; detail: string }> {
    const { command, timeoutMs } = this.o.selfTest;
    if (!command) {
      this.step('self-test');
      return { ok: true, detail: 'started (no self-test configured)' };
    }
    const running = runProcess('/bin/sh', ['-c', command], { env, timeoutMs, cwd: this.slotDir(slot) });
    this.step('self-test');
    const r = await running;
    if (r.code === 0 && !r.timedOut) return { ok: true, detail: `self-test passed in ${r.durationMs} ms` };
    return { ok: false, detail: `self-test ${describeResult(r, timeoutMs)}` };
  }

  private rollback(reason: RollbackReason, detail: string): Promise<UpdateResult> {
    return this.decide({ outcome: 'rolled-back', reason, detail });
  }

  /** Record the decision (one atomic write: from here on the decided slot runs), then finish it. */
  private async decide(d: {
    outcome: Finishing['outcome'];
    reason?: RollbackReason;
    detail: string;
  }): Promise<UpdateResult> {
    const state = this.state();
    const pending = state.pending!;
    const slot = pending.slot;
    state.finishing = {
      outcome: d.outcome,
      ...(d.reason ? { reason: d.reason } : {}),
      detail: d.detail,
      slot,
      release: pending.release,
      bootAttempts: pending.bootAttempts,
      hookDone: false,
      counterDone: d.outcome !== 'committed',
      at: this.now().toISOString(),
    };
    state.pending = null;
    if (d.outcome === 'committed') {
      state.active = slot;
      state.slots[slot] = { ...state.slots[slot]!, status: 'committed' };
    } else state.slots[slot] = { ...state.slots[slot]!, status: 'failed' };
    this.write(state);
    this.linkCurrent(state.active);
    if (d.outcome === 'committed')
      this.o.log.info(
        { slot, version: pending.release.version },
        `committed version ${pending.release.version} in slot ${slot}: ${d.detail}`,
      );
    else
      this.o.log.warn(
        { slot, version: pending.release.version, reason: d.reason },
        `rolled back version ${pending.release.version} (${d.reason}): ${d.detail}; slot ${state.active} runs again`,
      );
    this.step('decided');
    return this.finish();
  }

  /** The work after a decision, each part recorded: the hook, the counter, the signed receipt. */
  private async finish(): Promise<UpdateResult> {
    let state = this.state();
    const f = state.finishing!;
    const env = this.env(f.slot, f.release, otherSlot(f.slot));
    if (!f.hookDone) {
      const r = await this.hooks.run(f.outcome === 'committed' ? 'commit' : 'rollback', env);
      if (r && r.code !== 0)
        // The decision stands; the hook runs again at the next start.
        throw new AgentError(
          'UPDATE_FAILED',
          `the ${f.outcome === 'committed' ? 'commit' : 'rollback'} hook ${this.hooks.describe(r)}; it runs again at the next start (rampart-agent update boot)`,
        );
      f.hookDone = true;
      this.write(state);
      this.step('finish-hook');
    }
    if (!f.counterDone) {
      await this.o.counter.advance(f.release.kind, BigInt(f.release.releaseCounter));
      f.counterDone = true;
      this.write(state);
      this.step('counter-advanced');
    }
    const receipt = await this.writeReceipt(state, f);
    this.step('receipt-written');
    state = this.state();
    state.last = {
      outcome: f.outcome,
      ...(f.reason ? { reason: f.reason } : {}),
      detail: f.detail,
      slot: f.slot,
      version: f.release.version,
      at: f.at,
      receipt,
    };
    state.finishing = null;
    this.write(state);
    this.step('done');
    return {
      outcome: f.outcome,
      ...(f.reason ? { reason: f.reason } : {}),
      detail: f.detail,
      slot: f.slot,
      running: state.active,
      version: f.release.version,
      receipt,
    };
  }

  private async writeReceipt(state: SlotsState, f: Finishing): Promise<string | null> {
    const signer = await this.o.signer();
    if (!signer) {
      this.o.log.warn(
        'no signed receipt: the device has no identity key or device id yet (rampart-agent enroll or provision first)',
      );
      return null;
    }
    const counter = await this.o.counter.read(f.release.kind);
    // The same decision always gets the same id: a receipt signed again after a power cut replaces the first.
    const id = createHash('sha256')
      .update(`${signer.deviceId}\n${f.slot}\n${f.release.sha256}\n${f.at}\n${f.outcome}`)
      .digest('hex')
      .slice(0, 32);
    const running = state.active;
    const document: UpdateReceipt = {
      type: RECEIPT_TYPE,
      version: 1,
      id,
      deviceId: signer.deviceId,
      outcome: f.outcome,
      ...(f.reason ? { reason: f.reason } : {}),
      detail: f.detail.slice(0, 2000),
      release: {
        name: f.release.name,
        version: f.release.version,
        kind: f.release.kind,
        releaseCounter: f.release.releaseCounter,
        sha256: f.release.sha256,
        length: f.release.length,
      },
      slot: f.slot,
      runningSlot: running,
      runningVersion: state.slots[running]?.version ?? null,
      bootAttempts: f.bootAttempts,
      counter: counter.toString(),
      counterStore: this.o.counter.store,
      at: f.at,
    };
    const signed: SignedUpdateReceipt = await signDocument(document, signer);
    const dir = join(this.dir, 'receipts');
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    const file = join(dir, `${f.at.replace(/[:.]/g, '-')}-${id}.json`);
    writeFileAtomic(file, JSON.stringify(signed, null, 2) + '\n', 0o644);
    this.o.log.info({ receipt: file, outcome: f.outcome }, `signed receipt: ${file}`);
    return file;
  }

  /**
   * Put things right after a restart: an install that was cut short is abandoned (its slot cleared;
   * the device never ran it), a decision whose follow-up was cut short is finished, and `current`
   * points at the slot that runs.
   */
  async settle(): Promise<void> {
    // A device that never installed an update has nothing to put right, and gets no slots directory.
    if (!existsSync(this.stateFile.file)) return;
    const state = this.state();
    if (state.install) {
      const { slot, release } = state.install;
      this.o.log.warn(
        { slot, version: release.version },
        `the install of ${release.version} into slot ${slot} was interrupted (a restart or power cut); abandoned: slot ${slot} cleared, slot ${state.active} runs — install it again`,
      );
      this.abandon(state, slot);
    }
    if (this.state().finishing) await this.finish();
    this.linkCurrent(runningSlot(this.state()));
  }

  private abandon(state: SlotsState, slot: Slot): void {
    rmSync(this.slotDir(slot), { recursive: true, force: true });
    state.install = null;
    state.slots[slot] = null;
    this.write(state);
  }

  private async copy(from: string, to: string, length: number): Promise<string> {
    const hash = createHash('sha256');
    const fd = openSync(to, 'w', 0o644);
    let written = 0;
    let halfDone = false;
    try {
      const stream = createReadStream(from, { highWaterMark: 1024 * 1024 });
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        let off = 0;
        // Write the first half and the rest separately, so that a test can die between them.
        while (off < chunk.length) {
          const half = Math.floor(length / 2);
          const end =
            !halfDone && written < half ? Math.min(chunk.length, off + (half - written)) : chunk.length;
          writeSync(fd, chunk, off, end - off);
          hash.update(chunk.subarray(off, end));
          written += end - off;
          off = end;
          if (!halfDone && written >= half) {
            halfDone = true;
            fsyncSync(fd);
            this.step('copy-half');
          }
        }
      }
      if (!halfDone) this.step('copy-half');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    this.fsyncDir(join(to, '..'));
    return hash.digest('hex');
  }

  private fsyncDir(dir: string): void {
    try {
      const fd = openSync(dir, 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    } catch {
      // Not every file system lets a directory be flushed.
    }
  }

  /** Point `current` at `slot`: a new link renamed over the old one, so it always points somewhere. */
  private linkCurrent(slot: Slot): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    const tmp = join(this.dir, `.current.tmp-${process.pid}`);
    rmSync(tmp, { force: true });
    symlinkSync(slot, tmp);
    renameSync(tmp, this.currentLink);
    this.fsyncDir(this.dir);
  }

  private write(state: SlotsState): void {
    this.stateFile.write(state);
  }

  private env(slot: Slot, release: ReleaseInfo, previous: Slot): Record<string, string> {
    return {
      RAMPART_UPDATE_SLOT: slot,
      RAMPART_UPDATE_SLOT_DIR: this.slotDir(slot),
      RAMPART_UPDATE_PREVIOUS_SLOT: previous,
      RAMPART_UPDATE_PREVIOUS_SLOT_DIR: this.slotDir(previous),
      RAMPART_UPDATE_VERSION: release.version,
      RAMPART_UPDATE_KIND: release.kind,
      RAMPART_UPDATE_RELEASE_COUNTER: String(release.releaseCounter),
      RAMPART_UPDATE_SHA256: release.sha256,
      RAMPART_UPDATE_FILE: join(this.slotDir(slot), release.name),
    };
  }

  /** Fault injection: die here, as a power cut would, when asked to. */
  private step(step: InstallStep): void {
    this.o.onStep?.(step);
    if (this.o.killAt === step) process.kill(process.pid, 'SIGKILL');
  }
}
