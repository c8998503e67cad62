import type { Executor, Storage } from '../storage/index.js';
import { Devices } from './devices.js';
import { DeviceGroups } from './groups.js';
import { DeviceImporter } from './import.js';
import { DeviceModels } from './models.js';
import { groupsOfDevices } from './query.js';

export type { StatusChange, StatusChangeHook, DeviceFilter } from './devices.js';

/**
 * What a committed registry change may have changed for the policy engine: these devices' model,
 * attributes, group memberships or existence, or (`all`) any device's groups, as when a group's
 * query, parent or existence changes. Deleting a device, group or model also drops its policy
 * attachments.
 */
export type RegistryChange = { devices: readonly string[] } | { all: true };

/**
 * The device registry: device models and their hardware revisions, devices, static and dynamic
 * groups, fleet queries and bulk import. Every service method takes the executor to run on (the
 * database or a transaction), so that a change and its audit entry commit together.
 */
export class FleetRegistry {
  readonly models: DeviceModels;
  readonly devices: Devices;
  readonly groups: DeviceGroups;
  readonly importer: DeviceImporter;

  constructor(readonly storage: Storage) {
    this.models = new DeviceModels();
    this.devices = new Devices(storage.dialect);
    this.groups = new DeviceGroups(storage.dialect, this.devices);
    this.importer = new DeviceImporter();
  }

  private readonly listeners: ((change: RegistryChange) => void)[] = [];

  /** Told after a change to devices or groups has committed (the gateway re-authorizes sessions). */
  onChange(listener: (change: RegistryChange) => void): void {
    this.listeners.push(listener);
  }

  /** Call after a transaction that changed devices, memberships or groups has committed. */
  changed(change: RegistryChange): void {
    for (const l of this.listeners) l(change);
  }

  /**
   * Every static (with ancestors) and dynamic group each device is in now; devices in no group
   * are absent from the map.
   */
  groupsOfMany(db: Executor, deviceIds: readonly string[]): Promise<Map<string, string[]>> {
    return groupsOfDevices(db, this.storage.dialect, deviceIds);
  }

  async countByStatus(): Promise<{ status: string; n: number }[]> {
    const rows = await this.storage.db
      .selectFrom('devices')
      .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
      .groupBy('status')
      .execute();
    return rows.map((r) => ({ status: r.status, n: Number(r.n) }));
  }
}
