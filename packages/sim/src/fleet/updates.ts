import { join } from 'node:path';
import {
  AgentError,
  FileRollbackCounter,
  INSTALL_STEPS,
  Installer,
  UpdateClient,
  mutualTlsIdentity,
  type IdentityStore,
  type InstallRequest,
  type InstallStep,
  type InstallerOptions,
  type TrustAnchor,
  type UpdateResult,
} from '@rampart/agent';
import { createLogger, type Logger } from '@rampart/shared/logging';

/** The update failures a virtual device can be made to have. */
export const UPDATE_FAULTS = ['self-test', 'crash-after-boot', 'power-loss'] as const;
export type UpdateFault = (typeof UPDATE_FAULTS)[number];

/** How often a fault strikes: on a share of installs, and always on the devices named. */
export interface FaultRate {
  /** 0 to 100: the chance that one install has this fault. */
  percent: number;
  /** Devices for which every install has it. */
  devices: string[];
}

export type UpdateFaults = Record<UpdateFault, FaultRate>;

export function noUpdateFaults(): UpdateFaults {
  return {
    'self-test': { percent: 0, devices: [] },
    'crash-after-boot': { percent: 0, devices: [] },
    'power-loss': { percent: 0, devices: [] },
  };
}

/**
 * Parse `--update-faults`: comma-separated `FAULT=P%` (a share of installs) or `FAULT=ID[+ID…]`
 * (every install of those devices), as in `self-test=10%,power-loss=5%,crash-after-boot=sim-0002`.
 * A fault may be named twice, once with a share and once with devices.
 */
export function parseUpdateFaults(text: string): UpdateFaults {
  const faults = noUpdateFaults();
  const seen = new Set<string>();
  for (const part of text.split(',')) {
    const item = part.trim();
    if (!item) continue;
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? '' : item.slice(eq + 1).trim();
    if (!(UPDATE_FAULTS as readonly string[]).includes(name))
      throw new Error(`unknown update fault "${name}"; choose from ${UPDATE_FAULTS.join(', ')}`);
    const rate = faults[name as UpdateFault];
    const percent = /^(\d+(?:\.\d+)?)%$/.exec(value);
    if (percent) {
      const p = Number(percent[1]);
      if (p > 100) throw new Error(`"${item}": a share is at most 100%`);
      if (seen.has(`${name}%`)) throw new Error(`"${name}" has two shares`);
      seen.add(`${name}%`);
      rate.percent = p;
    } else if (/^[A-Za-z0-9][A-Za-z0-9._:-]*(\+[A-Za-z0-9][A-Za-z0-9._:-]*)*$/.test(value)) {
      rate.devices.push(...value.split('+'));
    } else
      throw new Error(
        `"${item}": give a share of installs (${name}=10%) or device ids (${name}=sim-0003+sim-0007)`,
      );
  }
  return faults;
}

/** The faults as text, the way `parseUpdateFaults` reads them ("none" when there are none). */
export function describeUpdateFaults(faults: UpdateFaults): string {
  const parts: string[] = [];
  for (const name of UPDATE_FAULTS) {
    const r = faults[name];
    if (r.percent > 0) parts.push(`${name}=${r.percent}%`);
    if (r.devices.length) parts.push(`${name}=${r.devices.join('+')}`);
  }
  return parts.length ? parts.join(',') : 'none';
}

/** What the update loop of one device (or, added up, of the fleet) has done. */
export interface UpdateCounters {
  /** Update checks that came to an answer (nothing assigned, up to date, or an install). */
  checked: number;
  /** Installs begun: a verified download handed to the installer. Each ends committed, rolled back or interrupted. */
  installed: number;
  committed: number;
  rolledBack: number;
  /** Installs (or start-up checks) cut short by a simulated power loss. */
  interrupted: number;
  /** Checks that failed: refused by the agent's checks, the platform unreachable, a download that failed. */
  failed: number;
}

export function zeroUpdateCounters(): UpdateCounters {
  return { checked: 0, installed: 0, committed: 0, rolledBack: 0, interrupted: 0, failed: 0 };
}

/** Thrown from an install step: the simulated device lost power or crashed there. */
export class SimulatedOutage extends Error {
  constructor(
    readonly kind: 'power-loss' | 'crash',
    readonly step: InstallStep,
  ) {
    super(`simulated ${kind === 'crash' ? 'crash after boot' : 'power loss'} at ${step}`);
  }
}

export interface DeviceUpdaterOptions {
  deviceId: string;
  /** The device's directory: `slots/` (A/B slots, state, receipts) and `updates/` (pinned roots, metadata, downloads). */
  dir: string;
  /** The EST server's URL: the director is served there. */
  estUrl: string;
  model: string;
  hardwareRevision?: string;
  store: IdentityStore;
  anchor: () => TrustAnchor;
  faults: UpdateFaults;
  /** Starts of a pending slot allowed without a commit (the agent's `updates.maxBootAttempts`). */
  maxBootAttempts?: number;
  random: () => number;
  log?: Logger;
}

/** A release this device rolled back before is assigned again: the device does not retry it. */
class RetryDeclined extends AgentError {}

/** The installer, except that a release this device already rolled back is not installed again. */
class SimInstaller extends Installer {
  override async install(req: InstallRequest): Promise<UpdateResult> {
    const { slots } = this.state();
    const failed = [slots.a, slots.b].find(
      (s) => s?.status === 'failed' && req.sha256 !== undefined && s.sha256 === req.sha256.toLowerCase(),
    );
    if (failed)
      throw new RetryDeclined(
        'UPDATE_REFUSED',
        `version ${failed.version} was rolled back on this device; it is not installed again`,
      );
    return super.install(req);
  }
}

/**
 * The update loop of one virtual device, made of the agent's own parts: the `UpdateClient` (director
 * over mutual TLS, the release repository through tuf-js, chunk-verified download) and the A/B
 * `Installer` in `<dir>/slots/`. Faults are injected through the installer's self-test command and
 * its step callback: a self-test that fails, a crash at every start of the new slot until the
 * crash-loop limit, or a power loss at a random step of the install.
 */
export class DeviceUpdater {
  readonly counters: UpdateCounters = zeroUpdateCounters();
  readonly installer: Installer;
  private readonly client: UpdateClient;
  private readonly selfTest: InstallerOptions['selfTest'] = { timeoutMs: 10_000 };
  private readonly maxBootAttempts: number;
  /** The fault planned for the install under way. */
  private plan: { fault: 'crash-after-boot' } | { fault: 'power-loss'; at: InstallStep } | null = null;
  /** The decision last seen in the slot state, so that each is counted (and its receipt sent) once. */
  private lastDecision: string | null | undefined;
  /** The last receipt the director took. */
  private sentReceipt: string | null = null;

  constructor(private readonly o: DeviceUpdaterOptions) {
    const log = o.log ?? createLogger({ level: 'silent' });
    this.maxBootAttempts = o.maxBootAttempts ?? 3;
    this.installer = new SimInstaller({
      dataDir: o.dir,
      counter: new FileRollbackCounter(join(o.dir, 'slots', 'counters.json')),
      log,
      selfTest: this.selfTest,
      maxBootAttempts: this.maxBootAttempts,
      commitTimeoutMs: 24 * 3600_000,
      signer: async () => {
        const anchor = o.anchor();
        const publicKey = await anchor.publicKey();
        return publicKey ? { deviceId: o.deviceId, publicKey, sign: (d) => anchor.sign(d) } : null;
      },
      onStep: (step) => this.onStep(step),
    });
    this.client = new UpdateClient({
      dataDir: o.dir,
      estUrl: new URL(o.estUrl).origin,
      model: o.model,
      ...(o.hardwareRevision ? { hardwareRevision: o.hardwareRevision } : {}),
      installer: this.installer,
      // The device's anchor as it is at each check (it may be replaced): encrypted releases need its unwrapKey.
      anchor: {
        get kind() {
          return o.anchor().kind;
        },
        get unwrapKey() {
          const anchor = o.anchor();
          return anchor.unwrapKey?.bind(anchor);
        },
      },
      log,
      timeoutMs: 15_000,
      download: { retryDelayMs: 200, maxInterruptions: 3 },
      identity: async () => {
        const m = await mutualTlsIdentity(o.store, o.anchor(), Date.now(), 'the director');
        return {
          deviceId: m.deviceId,
          certPem: o.store.clientCertificatePem(),
          tls: m.tls,
          caPem: m.rootPem,
        };
      },
    });
  }

  /** The version the device runs: the pending slot's while on trial, else the committed one's. */
  runningVersion(): string | null {
    try {
      const s = this.installer.state();
      return s.slots[s.pending?.slot ?? s.active]?.version ?? null;
    } catch {
      return null;
    }
  }

  /**
   * The start-up check, at every boot of the device: finish or abandon what an outage cut short,
   * count this start of a slot on trial, self-test it and commit or roll back. A crash planned for
   * the new slot strikes again here. Throws `SimulatedOutage` when the device goes down again.
   */
  async boot(): Promise<void> {
    if (this.lastDecision === undefined) this.lastDecision = this.decisionKey();
    try {
      await this.installer.boot();
    } finally {
      await this.settleDecision();
    }
  }

  /** One update cycle. Throws `SimulatedOutage` when the device lost power or crashed in it. */
  async check(): Promise<void> {
    if (this.lastDecision === undefined) this.lastDecision = this.decisionKey();
    this.planFaults();
    const installsBefore = this.counters.installed;
    try {
      const r = await this.client.check();
      this.counters.checked++;
      if (r.receiptSent && r.result?.receipt) this.sentReceipt = r.result.receipt;
    } catch (err) {
      if (err instanceof SimulatedOutage || err instanceof RetryDeclined) {
        this.counters.checked++;
        if (err instanceof SimulatedOutage) throw err;
        return;
      }
      if (this.counters.installed === installsBefore) this.counters.failed++;
      this.o.log?.debug({ err }, `update check failed: ${(err as Error).message}`);
    } finally {
      await this.settleDecision();
    }
  }

  /** Count a new decision in the slot state once, and make sure its signed receipt reaches the director. */
  private async settleDecision(): Promise<void> {
    let last;
    try {
      last = this.installer.state().last;
    } catch {
      return;
    }
    const key = this.decisionKey();
    if (!last || key === this.lastDecision) return;
    this.lastDecision = key;
    if (last.outcome === 'committed') this.counters.committed++;
    else this.counters.rolledBack++;
    this.plan = null;
    if (
      last.receipt &&
      last.receipt !== this.sentReceipt &&
      (await this.client.sendReceipt(last.receipt)) === 'delivered'
    )
      this.sentReceipt = last.receipt;
  }

  private decisionKey(): string | null {
    try {
      const last = this.installer.state().last;
      return last ? `${last.at} ${last.outcome} ${last.slot} ${last.receipt ?? ''}` : null;
    } catch {
      return null;
    }
  }

  /** Decide now which fault, if any, the next install will have (at most one). */
  private planFaults(): void {
    const strikes = (fault: UpdateFault): boolean => {
      const r = this.o.faults[fault];
      return r.devices.includes(this.o.deviceId) || (r.percent > 0 && this.o.random() * 100 < r.percent);
    };
    this.selfTest.command = undefined;
    this.plan = null;
    if (strikes('power-loss')) {
      const at = INSTALL_STEPS[Math.floor(this.o.random() * INSTALL_STEPS.length)]!;
      this.plan = { fault: 'power-loss', at };
    } else if (strikes('crash-after-boot')) this.plan = { fault: 'crash-after-boot' };
    else if (strikes('self-test'))
      this.selfTest.command =
        'echo "simulated self-test failure: the application did not answer" >&2; exit 1';
  }

  private onStep(step: InstallStep): void {
    if (step === 'install-recorded') this.counters.installed++;
    const plan = this.plan;
    if (!plan) return;
    if (plan.fault === 'power-loss' && plan.at === step) {
      // One cut per install: the restart then settles it.
      this.plan = null;
      this.counters.interrupted++;
      throw new SimulatedOutage('power-loss', step);
    }
    if (plan.fault === 'crash-after-boot' && step === 'restarting') {
      // The new slot crashes at every start until the installer sees a crash loop and rolls back.
      const pending = this.installer.state().pending;
      if (pending && pending.bootAttempts <= this.maxBootAttempts) throw new SimulatedOutage('crash', step);
    }
  }
}
