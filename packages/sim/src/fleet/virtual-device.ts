import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  CommandDispatcher,
  DeviceConnection,
  type EstClient,
  IdentityStore,
  MemoryQueue,
  ShadowSync,
  SoftwareTrustAnchor,
  enrollDevice,
  identityCredentials,
} from '@rampart/agent';
import type { Logger } from '@rampart/shared/logging';
import { shadowTopics } from '@rampart/shared/shadow';
import type { Profile } from './profiles.js';

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
}

/** The firmware version a virtual device reports. */
export const SIMULATED_FIRMWARE = '1.0.0-sim';

/**
 * One simulated device, built from the agent's own parts: a software trust anchor and identity
 * store in its directory, EST enrollment, and the agent's gateway connection, shadow sync and
 * command dispatcher. It sends telemetry on `devices/{id}/telemetry`, reports its shadow, applies
 * desired `telemetryEveryMs`, and answers `ping`, `reboot` and `status`; its profile adds bursts,
 * crashes or attacks.
 */
export class VirtualDevice extends EventEmitter<{ counted: [] }> {
  readonly id: string;
  readonly profile: Profile;
  readonly counters: DeviceCounters = zeroCounters();
  private readonly anchor: SoftwareTrustAnchor;
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

  constructor(private readonly options: VirtualDeviceOptions) {
    super();
    this.id = options.id;
    this.profile = options.profile;
    this.telemetryEveryMs = options.profile.telemetryEveryMs;
    this.random = options.random ?? Math.random;
    this.log = options.log;
    mkdirSync(join(options.dir, 'identity'), { recursive: true, mode: 0o700 });
    this.anchor = new SoftwareTrustAnchor(join(options.dir, 'identity', 'device-key.pem'));
    this.store = new IdentityStore(options.dir);
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
        firmware: SIMULATED_FIRMWARE,
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
