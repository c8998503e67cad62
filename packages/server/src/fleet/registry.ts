import type { Storage } from '../storage/index.js';
import { Devices } from './devices.js';
import { DeviceGroups } from './groups.js';
import { DeviceImporter } from './import.js';
import { DeviceModels } from './models.js';

export type { StatusChange, StatusChangeHook, DeviceFilter } from './devices.js';

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

  async countByStatus(): Promise<{ status: string; n: number }[]> {
    const rows = await this.storage.db
      .selectFrom('devices')
      .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
      .groupBy('status')
      .execute();
    return rows.map((r) => ({ status: r.status, n: Number(r.n) }));
  }
}
