import { join } from 'node:path';
import { EstClient } from '@rampart/agent';
import type { Logger } from '@rampart/shared/logging';
import {
  PROFILES,
  PROFILE_NAMES,
  assignProfiles,
  spedUp,
  type ProfileName,
  type ProfileShare,
} from './profiles.js';
import { VirtualDevice, zeroCounters, type DeviceCounters } from './virtual-device.js';

/**
 * How the simulator gets its devices into the registry and their one-time enrollment tokens: the
 * management API in `rampart sim`, the platform itself in `rampart up --demo`. The simulator itself
 * only speaks the device protocols (EST and MQTT).
 */
export interface Provisioner {
  /** Make sure these devices exist (as model `model`), creating the missing ones. */
  register(deviceIds: readonly string[], model: string): Promise<void>;
  /** A one-time enrollment token for the device. */
  enrollmentToken(deviceId: string): Promise<string>;
}

export interface FleetOptions {
  count: number;
  /** Device ids are `<prefix>-0001`, `<prefix>-0002`, … */
  prefix?: string;
  /** The device model they are registered as. */
  model?: string;
  mix: readonly ProfileShare[];
  /** Where the devices keep their keys and certificates (one directory each), so a restart reuses them. */
  dir: string;
  /** The platform's EST server (https://host:port) and gateway (mqtts://host:port). */
  estUrl: string;
  mqttUrl: string;
  /** Rampart's root CA (PEM), pinned by every device. */
  rootPem: string;
  provisioner: Provisioner;
  /** Every profile period divided by this (default 1): 10 makes a minute's events happen in 6 s. */
  speed?: number;
  /** Enrollments in parallel. Default 8. */
  concurrency?: number;
  random?: () => number;
  log?: Logger;
}

export interface ProvisionResult {
  enrolled: number;
  /** Devices that already held a certificate from this platform (an earlier run). */
  reused: number;
}

export interface FleetStats {
  devices: number;
  online: number;
  byProfile: Partial<Record<ProfileName, { devices: number; online: number }>>;
  totals: DeviceCounters;
}

export const DEFAULT_PREFIX = 'sim';
export const DEFAULT_MODEL = 'SIM-1';

/** `sim-0001` … : zero-padded to the width of the largest number, at least 4 digits. */
export function fleetDeviceIds(prefix: string, count: number): string[] {
  const width = Math.max(4, String(count).length);
  return Array.from({ length: count }, (_, i) => `${prefix}-${String(i + 1).padStart(width, '0')}`);
}

/**
 * A fleet of virtual devices in one process: each with its own key and certificate, enrolled
 * through EST, connected over mutual-TLS MQTT by the agent's connection manager.
 */
export class FleetSimulator {
  readonly devices: VirtualDevice[];
  private readonly options: FleetOptions;

  constructor(options: FleetOptions) {
    if (!Number.isInteger(options.count) || options.count < 1)
      throw new Error(`the fleet needs at least one device (got ${options.count})`);
    this.options = options;
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    const ids = fleetDeviceIds(prefix, options.count);
    const profiles = assignProfiles(options.count, options.mix);
    this.devices = ids.map(
      (id, i) =>
        new VirtualDevice({
          id,
          profile: spedUp(PROFILES[profiles[i]!], options.speed ?? 1),
          dir: join(options.dir, id),
          mqttUrl: options.mqttUrl,
          peers: ids,
          ...(options.random ? { random: options.random } : {}),
          ...(options.log ? { log: options.log } : {}),
        }),
    );
  }

  /**
   * Register and enroll every device that has no certificate from this platform yet. Reports
   * progress after each device; the first failure stops it and is thrown, naming the device.
   */
  async provision(onProgress?: (done: number, total: number) => void): Promise<ProvisionResult> {
    const { provisioner, rootPem } = this.options;
    const pending = this.devices.filter((d) => !d.enrolledWith(rootPem));
    const reused = this.devices.length - pending.length;
    let done = reused;
    onProgress?.(done, this.devices.length);
    if (pending.length === 0) return { enrolled: 0, reused };
    await provisioner.register(
      pending.map((d) => d.id),
      this.options.model ?? DEFAULT_MODEL,
    );
    const est = new EstClient({ url: this.options.estUrl, caPem: rootPem });
    let next = 0;
    const worker = async () => {
      while (next < pending.length) {
        const device = pending[next++]!;
        try {
          await device.enroll(est, rootPem, await provisioner.enrollmentToken(device.id));
        } catch (err) {
          throw new Error(`enrolling ${device.id} failed: ${(err as Error).message}`, { cause: err });
        }
        onProgress?.(++done, this.devices.length);
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(this.options.concurrency ?? 8, pending.length) }, () => worker()),
    );
    return { enrolled: pending.length, reused };
  }

  /** Boot every device, spread over `rampMs` so that the gateway is not hit by all at once. */
  start(rampMs = Math.min(10_000, this.devices.length * 5)): void {
    this.devices.forEach((d, i) => {
      const at = (rampMs * i) / this.devices.length;
      if (at === 0) d.start();
      else setTimeout(() => d.start(), at).unref();
    });
  }

  stats(): FleetStats {
    const totals = zeroCounters();
    const byProfile: FleetStats['byProfile'] = {};
    let online = 0;
    for (const d of this.devices) {
      for (const k of Object.keys(totals) as (keyof DeviceCounters)[]) totals[k] += d.counters[k];
      const p = (byProfile[d.profile.name] ??= { devices: 0, online: 0 });
      p.devices++;
      if (d.online) {
        p.online++;
        online++;
      }
    }
    const ordered: FleetStats['byProfile'] = {};
    for (const name of PROFILE_NAMES) if (byProfile[name]) ordered[name] = byProfile[name];
    return { devices: this.devices.length, online, byProfile: ordered, totals };
  }

  async stop(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.stop()));
  }
}
