import { join } from 'node:path';
import { EstClient } from '@rampart/agent';
import type { Logger } from '@rampart/shared/logging';
import type { AttestationStatus } from '@rampart/shared/provisioning';
import {
  PROFILES,
  PROFILE_NAMES,
  assignProfiles,
  spedUp,
  type ProfileName,
  type ProfileShare,
} from './profiles.js';
import {
  VirtualDevice,
  zeroCounters,
  type DeviceCounters,
  type ManufacturedDevice,
  type SimulatedAnchor,
} from './virtual-device.js';
import {
  batchName,
  signedManifest,
  simulatedReferenceValues,
  type Factory,
  type FactoryStation,
} from './zero-touch.js';
import { zeroUpdateCounters, type UpdateCounters, type UpdateFaults } from './updates.js';

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

/**
 * Zero-touch provisioning: the simulator first acts as the factory (station, birth certificates,
 * signed manifest, reference values), then every device provisions itself through remote
 * attestation instead of a one-time token.
 */
export interface ZeroTouchOptions {
  factory: Factory;
  /** How many devices get a TPM of their own (swtpm): the first ones. Default 0. */
  tpmDevices?: number;
  /** The hardware revision the factory records. Default null. */
  hardwareRevision?: string | null;
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
  /** One-time enrollment tokens; required unless `zeroTouch` is given. */
  provisioner?: Provisioner;
  /** Provision zero-touch instead of with enrollment tokens. */
  zeroTouch?: ZeroTouchOptions;
  /** Every profile period divided by this (default 1): 10 makes a minute's events happen in 6 s. */
  speed?: number;
  /** Enrollments in parallel. Default 8. */
  concurrency?: number;
  random?: () => number;
  log?: Logger;
  /** Run the agent's update loop on every device. */
  updates?: FleetUpdateOptions;
}

export interface FleetUpdateOptions {
  /** How often each device checks for an update (divided by `speed`). */
  everyMs: number;
  faults: UpdateFaults;
}

export interface ProvisionResult {
  enrolled: number;
  /** Devices that already held a certificate from this platform (an earlier run). */
  reused: number;
  /** With zero-touch provisioning: what the factory made and how the devices fared. */
  zeroTouch?: ZeroTouchResult;
}

export interface ZeroTouchResult {
  station: string;
  /** The batch this run imported, or null when the factory had no device to make. */
  batch: string | null;
  /** Devices given a birth identity by this run. */
  manufactured: number;
  /** Devices that attested and got their certificate in this run, by trust anchor. */
  provisioned: { software: number; tpm: number };
  /** The verifier's results for them. */
  attestation: Record<AttestationStatus, number>;
}

export interface FleetStats {
  devices: number;
  online: number;
  byProfile: Partial<Record<ProfileName, { devices: number; online: number }>>;
  /** Devices by trust anchor. */
  byTrustAnchor: Partial<Record<SimulatedAnchor, { devices: number; online: number }>>;
  totals: DeviceCounters;
  /** What the devices' update loops did, added up; null when the fleet does not run updates. */
  updates: UpdateCounters | null;
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
    if (!options.provisioner && !options.zeroTouch)
      throw new Error('the fleet needs a provisioner (enrollment tokens) or zero-touch options');
    const tpm = options.zeroTouch?.tpmDevices ?? 0;
    if (!Number.isInteger(tpm) || tpm < 0 || tpm > options.count)
      throw new Error(`TPM devices must be between 0 and the fleet's ${options.count} devices (got ${tpm})`);
    this.options = options;
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    const ids = fleetDeviceIds(prefix, options.count);
    const profiles = assignProfiles(options.count, options.mix);
    const speed = options.speed ?? 1;
    const u = options.updates;
    if (u && !(u.everyMs > 0)) throw new Error(`the update period must be above 0 (got ${u.everyMs})`);
    const hardwareRevision = options.zeroTouch?.hardwareRevision;
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
          ...(u
            ? {
                updates: {
                  estUrl: options.estUrl,
                  model: options.model ?? DEFAULT_MODEL,
                  ...(hardwareRevision ? { hardwareRevision } : {}),
                  everyMs: Math.max(10, u.everyMs / speed),
                  faults: u.faults,
                  downMs: Math.max(10, 2000 / speed),
                },
              }
            : {}),
        }),
    );
  }

  /** Whether the devices are provisioned zero-touch (rather than with enrollment tokens). */
  get zeroTouch(): boolean {
    return this.options.zeroTouch !== undefined;
  }

  /**
   * Register and enroll every device that has no certificate from this platform yet (zero-touch:
   * make and provision it). Reports progress after each device; the first failure stops it and is
   * thrown, naming the device.
   */
  async provision(onProgress?: (done: number, total: number) => void): Promise<ProvisionResult> {
    const { rootPem } = this.options;
    const pending = this.devices.filter((d) => !d.enrolledWith(rootPem));
    const reused = this.devices.length - pending.length;
    onProgress?.(reused, this.devices.length);
    // A TPM for every device made with one, and for those the factory makes now with one.
    const tpmIds = new Set(this.devices.slice(0, this.options.zeroTouch?.tpmDevices ?? 0).map((d) => d.id));
    const withTpm = this.devices.filter(
      (d) =>
        d.trustAnchor === 'tpm' ||
        (this.options.zeroTouch && tpmIds.has(d.id) && pending.includes(d) && !d.hasBirthIdentity(rootPem)),
    );
    await this.inParallel(withTpm, 4, 'starting the TPM of', (d) => d.useTpm());
    if (this.options.zeroTouch) {
      const zeroTouch = await this.provisionZeroTouch(this.options.zeroTouch, pending, reused, onProgress);
      return { enrolled: pending.length, reused, zeroTouch };
    }
    if (pending.length === 0) return { enrolled: 0, reused };
    const provisioner = this.options.provisioner!;
    await provisioner.register(
      pending.map((d) => d.id),
      this.options.model ?? DEFAULT_MODEL,
    );
    const est = new EstClient({ url: this.options.estUrl, caPem: rootPem });
    let done = reused;
    await this.inParallel(pending, this.options.concurrency ?? 8, 'enrolling', async (device) => {
      await device.enroll(est, rootPem, await provisioner.enrollmentToken(device.id));
      onProgress?.(++done, this.devices.length);
    });
    return { enrolled: pending.length, reused };
  }

  /**
   * The factory makes the devices that have no birth identity for this platform yet (the first
   * `tpmDevices` of the fleet with a TPM each, started by `provision`), signs their manifest and
   * imports it; then every pending device boots, attests and enrolls with its attestation token. A
   * device keeps the trust anchor it was made with.
   */
  private async provisionZeroTouch(
    o: ZeroTouchOptions,
    pending: readonly VirtualDevice[],
    reused: number,
    onProgress?: (done: number, total: number) => void,
  ): Promise<ZeroTouchResult> {
    const { rootPem } = this.options;
    const model = this.options.model ?? DEFAULT_MODEL;
    const result: ZeroTouchResult = {
      station: '',
      batch: null,
      manufactured: 0,
      provisioned: { software: 0, tpm: 0 },
      attestation: { affirming: 0, warning: 0, contraindicated: 0 },
    };
    const station: FactoryStation = await o.factory.open(model, simulatedReferenceValues());
    result.station = station.name;
    if (pending.length === 0) return result;
    if (station.rootPem.trim() !== rootPem.trim())
      throw new Error(
        `station ${station.name} was registered under another root CA than the one the devices pin; ` +
          "pass the platform's ca.pem (--ca) of this platform",
      );

    const toMake = pending.filter((d) => !d.hasBirthIdentity(rootPem));

    if (toMake.length) {
      const createdAt = new Date();
      const batch = batchName(this.options.prefix ?? DEFAULT_PREFIX, createdAt);
      const records: ManufacturedDevice[] = new Array<ManufacturedDevice>(toMake.length);
      const index = new Map(toMake.map((d, i) => [d, i]));
      await this.inParallel(toMake, this.options.concurrency ?? 8, 'manufacturing', async (d) => {
        records[index.get(d)!] = await d.manufacture(station, {
          model,
          hardwareRevision: o.hardwareRevision ?? null,
          batch,
        });
      });
      await o.factory.importBatch(
        await signedManifest(
          station,
          batch,
          records.map((r) => r.entry),
          createdAt,
        ),
      );
      toMake.forEach((d, i) => d.installBirthIdentity(records[i]!));
      result.batch = batch;
      result.manufactured = toMake.length;
    }

    const est = new EstClient({
      url: this.options.estUrl,
      caPem: rootPem,
      keepAliveConnections: this.options.concurrency ?? 8,
    });
    let done = reused;
    try {
      await this.inParallel(pending, this.options.concurrency ?? 8, 'provisioning', async (device) => {
        const outcome = await device.provision(est);
        result.provisioned[device.trustAnchor]++;
        result.attestation[outcome.attestation.status]++;
        onProgress?.(++done, this.devices.length);
      });
    } finally {
      est.close();
    }
    return result;
  }

  /** Run `fn` for every device, `concurrency` at a time; the first failure is thrown, naming the device. */
  private async inParallel(
    devices: readonly VirtualDevice[],
    concurrency: number,
    what: string,
    fn: (device: VirtualDevice) => Promise<void>,
  ): Promise<void> {
    let next = 0;
    let failed = false;
    const lane = async () => {
      while (next < devices.length && !failed) {
        const device = devices[next++]!;
        try {
          await fn(device);
        } catch (err) {
          failed = true;
          throw new Error(`${what} ${device.id} failed: ${(err as Error).message}`, { cause: err });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, devices.length) }, lane));
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
    const byTrustAnchor: FleetStats['byTrustAnchor'] = {};
    let online = 0;
    for (const d of this.devices) {
      for (const k of Object.keys(totals) as (keyof DeviceCounters)[]) totals[k] += d.counters[k];
      const p = (byProfile[d.profile.name] ??= { devices: 0, online: 0 });
      const a = (byTrustAnchor[d.trustAnchor] ??= { devices: 0, online: 0 });
      p.devices++;
      a.devices++;
      if (d.online) {
        p.online++;
        a.online++;
        online++;
      }
    }
    const ordered: FleetStats['byProfile'] = {};
    for (const name of PROFILE_NAMES) if (byProfile[name]) ordered[name] = byProfile[name];
    let updates: UpdateCounters | null = null;
    if (this.options.updates) {
      updates = zeroUpdateCounters();
      for (const d of this.devices)
        if (d.updater)
          for (const k of Object.keys(updates) as (keyof UpdateCounters)[])
            updates[k] += d.updater.counters[k];
    }
    return { devices: this.devices.length, online, byProfile: ordered, byTrustAnchor, totals, updates };
  }

  async stop(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.stop()));
  }
}
