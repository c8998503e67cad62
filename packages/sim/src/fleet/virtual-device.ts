import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  BIRTH_FILES,
  CommandDispatcher,
  DeviceConnection,
  type EstClient,
  IdentityStore,
  MemoryQueue,
  ShadowSync,
  SoftwareTrustAnchor,
  TpmTrustAnchor,
  enrollDevice,
  identityCredentials,
  measurementStore,
  provisionDevice,
  readBirthIdentity,
  writeBirthIdentity,
  type BirthIdentityInput,
  type ProvisionOutcome,
  type TrustAnchor,
} from '@rampart/agent';
import type { Logger } from '@rampart/shared/logging';
import type { ManifestDevice } from '@rampart/shared/provisioning';
import { shadowTopics } from '@rampart/shared/shadow';
import type { Profile } from './profiles.js';
import { startSoftwareTpm, type SoftwareTpm } from './swtpm.js';
import { DeviceUpdater, SimulatedOutage, type UpdateFaults } from './updates.js';
import { measureSimulatedBoot, type FactoryStation } from './zero-touch.js';

/** What one virtual device has done so far; the fleet adds these up. */
export interface DeviceCounters {
  connects: number;
  /** Connection attempts that failed or sessions the gateway ended. */
  disconnects: number;
  telemetry: number;
  delivered: number;
  dropped: number;
  commands: number;
  deltas: number;
  crashes: number;
  attacks: number;
}

export function zeroCounters(): DeviceCounters {
  return {
    connects: 0,
    disconnects: 0,
    telemetry: 0,
    delivered: 0,
    dropped: 0,
    commands: 0,
    deltas: 0,
    crashes: 0,
    attacks: 0,
  };
}

export interface VirtualDeviceOptions {
  id: string;
  profile: Profile;
  /** This device's directory: its key (software trust anchor) and certificate. */
  dir: string;
  /** The gateway, mqtts://host:port. */
  mqttUrl: string;
  /** The other device ids of the fleet: what a compromised device reaches for. */
  peers?: readonly string[];
  random?: () => number;
  log?: Logger;
  /** Run the agent's update loop: check this often, with these faults injected. */
  updates?: DeviceUpdateOptions;
}

export interface DeviceUpdateOptions {
  /** The EST server (the director is served there). */
  estUrl: string;
  /** The model the releases must name. */
  model: string;
  hardwareRevision?: string;
  /** How often the device checks for an update. */
  everyMs: number;
  faults: UpdateFaults;
  /** How long the device stays down after a simulated power loss or crash. */
  downMs: number;
}

/** The firmware version a virtual device reports. */
export const SIMULATED_FIRMWARE = '1.0.0-sim';

/** The trust anchors a virtual device can be made with. */
export type SimulatedAnchor = 'software' | 'tpm';

/** What the factory recorded for a device it made: its manifest entry and what it leaves on the device. */
export interface ManufacturedDevice {
  entry: ManifestDevice;
  birth: BirthIdentityInput;
}

/** The trust anchor a device's birth identity names (the factory's record), if it has one. */
function madeWith(dir: string): SimulatedAnchor | null {
  try {
    const file = BIRTH_FILES(dir).device;
    if (!existsSync(file)) return null;
    const kind = (JSON.parse(readFileSync(file, 'utf8')) as { trustAnchor?: unknown }).trustAnchor;
    return kind === 'tpm' || kind === 'software' ? kind : null;
  } catch {
    return null;
  }
}

/**
 * One simulated device, built from the agent's own parts: a software trust anchor and identity
 * store in its directory, EST enrollment, and the agent's gateway connection, shadow sync and
 * command dispatcher. It sends telemetry on `devices/{id}/telemetry`, reports its shadow, applies
 * desired `telemetryEveryMs`, and answers `ping`, `reboot` and `status`; its profile adds bursts,
 * crashes or attacks.
 *
 * Made at a simulated factory (zero-touch), it gets a birth identity instead, with its key in the
 * software anchor or in a TPM of its own (swtpm), and provisions itself as the agent does: measured
 * boot, remote attestation, EST with the attestation token. With a TPM, the gateway handshake is
 * signed in the TPM through the agent's TLS tunnel (openssl s_client), one process per connection.
 */
export class VirtualDevice extends EventEmitter<{ counted: [] }> {
  readonly id: string;
  readonly profile: Profile;
  readonly counters: DeviceCounters = zeroCounters();
  private anchor: TrustAnchor;
  private anchorKind: SimulatedAnchor;
  private tpm: SoftwareTpm | null = null;
  private readonly store: IdentityStore;
  private readonly random: () => number;
  private readonly log: Logger | undefined;
  private connection: DeviceConnection | null = null;
  private shadow: ShadowSync | null = null;
  private commands: CommandDispatcher | null = null;
  private readonly timers = new Set<NodeJS.Timeout>();
  private telemetryTimer: NodeJS.Timeout | null = null;
  private telemetryEveryMs: number;
  private seq = 0;
  private bootedAt = 0;
  private running = false;
  /** The agent's update loop, when the fleet runs updates. */
  readonly updater: DeviceUpdater | null;
  /** Update work (start-up check, update checks) runs one at a time, in order. */
  private updateWork: Promise<void> = Promise.resolve();
  private checkQueued = false;

  constructor(private readonly options: VirtualDeviceOptions) {
    super();
    this.id = options.id;
    this.profile = options.profile;
    this.telemetryEveryMs = options.profile.telemetryEveryMs;
    this.random = options.random ?? Math.random;
    this.log = options.log;
    mkdirSync(join(options.dir, 'identity'), { recursive: true, mode: 0o700 });
    this.anchor = new SoftwareTrustAnchor(join(options.dir, 'identity', 'device-key.pem'));
    this.anchorKind = madeWith(options.dir) ?? 'software';
    this.store = new IdentityStore(options.dir);
    const u = options.updates;
    this.updater = u
      ? new DeviceUpdater({
          deviceId: this.id,
          dir: options.dir,
          estUrl: u.estUrl,
          model: u.model,
          ...(u.hardwareRevision ? { hardwareRevision: u.hardwareRevision } : {}),
          store: this.store,
          anchor: () => this.anchor,
          faults: u.faults,
          random: this.random,
          ...(this.log ? { log: this.log } : {}),
        })
      : null;
  }

  /** Where the device's key lives: what its factory record says, or what `useTpm` chose. */
  get trustAnchor(): SimulatedAnchor {
    return this.anchorKind;
  }

  /** Whether the device was made at the factory for the platform whose root is `rootPem`. */
  hasBirthIdentity(rootPem: string): boolean {
    try {
      return readBirthIdentity(this.options.dir)?.rootPem.trim() === rootPem.trim();
    } catch {
      return false;
    }
  }

  /**
   * Give the device its own TPM: swtpm on `<dir>/swtpm` behind a resource manager (tpm2-abrmd),
   * as a device has its kernel's, so that the agent's TLS tunnel can sign the gateway handshake in
   * it; started now and stopped with the device. Its key blobs live in `<dir>/identity/tpm`; blobs
   * left without the TPM that made them (a deleted state directory) are dropped, since no TPM can
   * load them.
   */
  async useTpm(): Promise<void> {
    if (this.tpm) return;
    const stateDir = join(this.options.dir, 'swtpm');
    const blobs = join(this.options.dir, 'identity', 'tpm');
    if (!existsSync(stateDir)) rmSync(blobs, { recursive: true, force: true });
    this.tpm = await startSoftwareTpm(stateDir, { resourceManager: true });
    this.anchor = new TpmTrustAnchor({ dir: blobs, tcti: this.tpm.tcti });
    this.anchorKind = 'tpm';
  }

  /**
   * The factory's work on this device: the key created in its trust anchor (and for a TPM its
   * attestation key and endorsement key read), a birth certificate issued by the station. Nothing
   * is written to the device until `installBirthIdentity`, once the batch is imported.
   */
  async manufacture(
    station: FactoryStation,
    o: { model: string; hardwareRevision: string | null; batch: string },
  ): Promise<ManufacturedDevice> {
    const spki = (await this.anchor.ensureKey()).export({ type: 'spki', format: 'der' });
    const serial = `SN-${this.id}`;
    const birthCertificate = await station.issueBirthCertificate({ deviceId: this.id, serial, spki });
    let tpm: ManifestDevice['tpm'];
    if (this.anchor instanceof TpmTrustAnchor) {
      const ak = await this.anchor.ensureAttestationKey();
      const ek = await this.anchor.endorsementKeyPublic();
      tpm = { ek: ek.toString('base64'), ak: ak.toString('base64') };
    }
    const provisionedAt = new Date().toISOString();
    const record = {
      deviceId: this.id,
      serial,
      model: o.model,
      hardwareRevision: o.hardwareRevision,
      trustAnchor: this.anchorKind,
    };
    return {
      entry: {
        ...record,
        publicKey: spki.toString('base64'),
        birthCertificate,
        ...(tpm ? { tpm } : {}),
        provisionedAt,
      },
      birth: {
        device: { ...record, batch: o.batch, station: station.name, provisionedAt },
        birthCertificate,
        stationCaCertificate: station.caPem,
        rootCa: station.rootPem,
      },
    };
  }

  /** Leave the factory's birth identity on the device (identity/birth/). */
  installBirthIdentity(made: ManufacturedDevice): void {
    writeBirthIdentity(this.options.dir, made.birth);
  }

  /**
   * Zero-touch provisioning, as `rampart-agent provision` does it: boot (a fresh measured boot of
   * the simulated firmware into the TPM's PCRs or the software register), attest with a fresh
   * nonce, enroll with the attestation token. Throws when the verifier issues no token, with what
   * it found.
   */
  async provision(est: EstClient): Promise<ProvisionOutcome> {
    const birth = readBirthIdentity(this.options.dir);
    if (!birth) throw new Error(`${this.id} has no birth identity: it was not made at the factory`);
    const measurements = await this.measuredBoot();
    const outcome = await provisionDevice({
      anchor: this.anchor,
      store: this.store,
      est,
      birth,
      measurements,
    });
    if (outcome.refusal) throw outcome.refusal;
    return outcome;
  }

  private async measuredBoot() {
    rmSync(join(this.options.dir, 'measurements'), { recursive: true, force: true });
    const store = measurementStore(this.options.dir, this.tpm?.tcti ?? null);
    await measureSimulatedBoot(store.register, store.log);
    return store;
  }

  /**
   * Whether the device already holds a certificate that is still valid and chains to `rootPem`
   * (enrolled by an earlier run against the same platform).
   */
  enrolledWith(rootPem: string): boolean {
    try {
      const current = this.store.current();
      return (
        current !== null &&
        current.info.notAfter.getTime() > Date.now() + 60_000 &&
        this.store.rootPem()?.trim() === rootPem.trim()
      );
    } catch {
      return false;
    }
  }

  get online(): boolean {
    return this.connection?.isOnline ?? false;
  }

  /** Enroll over EST with a one-time token, exactly as `rampart-agent enroll` does. */
  async enroll(est: EstClient, rootPem: string, token: string): Promise<void> {
    await enrollDevice({
      anchor: this.anchor,
      store: this.store,
      est,
      rootPem,
      deviceId: this.id,
      credentials: { deviceId: this.id, token },
    });
  }

  /** Boot: connect, sync the shadow, answer commands, send telemetry. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.boot();
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.shutdown();
    await this.updateWork;
    const tpm = this.tpm;
    this.tpm = null;
    await tpm?.stop();
  }

  private boot(): void {
    this.bootedAt = Date.now();
    const connection = new DeviceConnection({
      url: this.options.mqttUrl,
      deviceId: this.id,
      credentials: () => identityCredentials(this.store, this.anchor),
      queue: new MemoryQueue({ maxMessages: 1000, maxBytes: 4 * 1024 * 1024 }),
      keepaliveSeconds: 60,
      // A simulated fleet restarting together should not come back in lockstep either.
      backoff: { initialMs: 1000, maxMs: 30_000 },
      random: this.random,
      ...(this.log ? { log: this.log } : {}),
    });
    connection.on('online', () => this.count('connects'));
    connection.on('offline', () => this.count('disconnects'));
    connection.on('delivered', () => this.count('delivered'));
    connection.on('dropped', (e) => this.count('dropped', e.messages.length));
    this.connection = connection;

    this.shadow = new ShadowSync(connection, {
      onDelta: (delta) => {
        this.count('deltas');
        const every = delta.telemetryEveryMs;
        if (typeof every === 'number' && Number.isInteger(every) && every >= 10 && every <= 3_600_000) {
          this.telemetryEveryMs = every;
          this.scheduleTelemetry();
          return { telemetryEveryMs: every };
        }
        // Values a device does not know are acknowledged as they are, as a real one might.
        return delta;
      },
      ...(this.log ? { log: this.log } : {}),
    });
    this.shadow.on('synced', () => void this.reportState());

    this.commands = new CommandDispatcher(connection, this.log ? { log: this.log } : {})
      .handle('ping', () => {
        this.count('commands');
        return { pong: true, uptimeMs: Date.now() - this.bootedAt };
      })
      .handle('status', () => {
        this.count('commands');
        return { profile: this.profile.name, telemetryEveryMs: this.telemetryEveryMs, sent: this.seq };
      })
      .handle('reboot', () => {
        this.count('commands');
        // Answer first, then go down cleanly and come back.
        this.after(200, () => void this.restart(false, 1000));
        return { rebooting: true };
      });

    connection.start();
    this.scheduleTelemetry();
    const { burst, crash, attackEveryMs } = this.profile;
    if (burst) this.every(burst.everyMs, () => this.burst(burst.messages));
    if (attackEveryMs) this.every(attackEveryMs, () => void this.attack());
    if (crash) this.after(-Math.log(1 - this.random()) * crash.meanUptimeMs, () => void this.crash());
    const updates = this.options.updates;
    if (this.updater && updates) {
      const updater = this.updater;
      this.updateStep(() => updater.boot());
      this.every(updates.everyMs, () => {
        // A check still waiting its turn is enough; checks do not pile up behind a slow one.
        if (this.checkQueued) return;
        this.checkQueued = true;
        this.updateStep(() => {
          this.checkQueued = false;
          return updater.check();
        });
      });
    }
  }

  /**
   * Run one piece of update work after the others. A simulated power loss or crash in it takes the
   * device down (abruptly, like `crash`), and its start-up check settles the slots when it comes back.
   */
  private updateStep(work: () => Promise<void>): void {
    this.updateWork = this.updateWork.then(async () => {
      if (!this.running) return;
      try {
        await work();
        this.emit('counted');
        void this.reportState();
      } catch (err) {
        if (!(err instanceof SimulatedOutage)) {
          this.log?.warn({ err }, `update work failed: ${(err as Error).message}`);
          return;
        }
        this.log?.info({ step: err.step }, err.message);
        if (err.kind === 'crash') this.count('crashes');
        else this.emit('counted');
        await this.restart(true, this.options.updates!.downMs);
      }
    });
  }

  private async shutdown(abrupt = false): Promise<void> {
    if (this.telemetryTimer) clearInterval(this.telemetryTimer);
    this.telemetryTimer = null;
    this.shadow?.stop();
    this.commands?.stop();
    const connection = this.connection;
    this.connection = this.shadow = this.commands = null;
    if (connection) await (abrupt ? connection.abort() : connection.stop());
  }

  private async restart(abrupt: boolean, downMs: number): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.shutdown(abrupt);
    if (!this.running) return;
    this.after(downMs, () => {
      if (this.running) this.boot();
    });
  }

  /** Power cut: the socket goes away without an MQTT DISCONNECT; unsent telemetry is lost. */
  private async crash(): Promise<void> {
    const crash = this.profile.crash!;
    this.count('crashes');
    const [min, max] = crash.downMs;
    await this.restart(true, min + this.random() * (max - min));
  }

  private scheduleTelemetry(): void {
    if (this.telemetryTimer) clearInterval(this.telemetryTimer);
    this.telemetryTimer = setInterval(() => this.sendTelemetry(), this.telemetryEveryMs);
    this.telemetryTimer.unref();
  }

  private sendTelemetry(): void {
    const connection = this.connection;
    if (!connection) return;
    const body = {
      seq: ++this.seq,
      at: new Date().toISOString(),
      temperature: Math.round((20 + this.random() * 10) * 10) / 10,
      battery: Math.max(0, 100 - Math.floor(this.seq / 100)),
      pad: '',
    };
    const bare = JSON.stringify(body).length;
    body.pad = 'x'.repeat(Math.max(0, this.profile.telemetryBytes - bare));
    try {
      connection.publish(`devices/${this.id}/telemetry`, JSON.stringify(body), { qos: 1 });
      this.count('telemetry');
    } catch (err) {
      this.log?.debug({ err }, 'telemetry not queued');
    }
  }

  private burst(messages: number): void {
    for (let i = 0; i < messages; i++) this.sendTelemetry();
  }

  private async reportState(): Promise<void> {
    try {
      await this.shadow?.report({
        firmware: this.updater?.runningVersion() ?? SIMULATED_FIRMWARE,
        profile: this.profile.name,
        telemetryEveryMs: this.telemetryEveryMs,
      });
    } catch (err) {
      this.log?.debug({ err }, 'shadow report not stored');
    }
  }

  /**
   * One thing the device's policy forbids, picked at random: publishing into another device's
   * namespace (the gateway closes the connection), subscribing to every topic (refused with 0x80),
   * or writing its own desired state (refused with 403).
   */
  private async attack(): Promise<void> {
    const connection = this.connection;
    if (!connection?.isOnline) return;
    this.count('attacks');
    const peers = (this.options.peers ?? []).filter((p) => p !== this.id);
    const victim = peers.length ? peers[Math.floor(this.random() * peers.length)]! : 'some-other-device';
    const kind = Math.floor(this.random() * 3);
    try {
      if (kind === 0) {
        await connection.publishNow(`devices/${victim}/commands`, '{"name":"unlock"}', 1);
      } else if (kind === 1) {
        const off = connection.subscribe('#', () => {});
        this.after(2000, off);
      } else {
        await connection.publishNow(
          shadowTopics(this.id).update,
          JSON.stringify({ state: { desired: { unlocked: true } } }),
          1,
        );
      }
    } catch {
      // Refused: the gateway closed the connection; the agent's connection comes back by itself.
    }
  }

  private count(key: keyof DeviceCounters, n = 1): void {
    this.counters[key] += n;
    this.emit('counted');
  }

  private after(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  private every(ms: number, fn: () => void): void {
    // Spread the first occurrence so that a fleet does not act in step.
    this.after(ms * (0.5 + this.random()), () => {
      fn();
      if (this.running) this.every(ms, fn);
    });
  }
}
