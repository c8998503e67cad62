import type { Storage } from '../storage/index.js';

/**
 * The device registry: device models and their hardware revisions, devices, static and dynamic
 * groups, fleet queries and bulk import.
 */
export class FleetRegistry {
  constructor(readonly storage: Storage) {}

  async countByStatus(): Promise<{ status: string; n: number }[]> {
    const rows = await this.storage.db
      .selectFrom('devices')
      .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
      .groupBy('status')
      .execute();
    return rows.map((r) => ({ status: r.status, n: Number(r.n) }));
  }
}
