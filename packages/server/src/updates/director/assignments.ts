import type { Db, Tx } from '../../storage/index.js';
import { isoNow } from '../../time.js';

/** What one device must install: a target path of the release repository, and the deployment that asked for it. */
export interface Assignment {
  path: string;
  deploymentId: string | null;
}

/** Where the director learns what each device must install. */
export interface DirectorAssignments {
  forDevice(db: Db | Tx, deviceId: string): Promise<Assignment | null>;
}

/** Assign `path` to the device (replacing any earlier assignment). */
export async function assign(
  db: Db | Tx,
  deviceId: string,
  path: string,
  deploymentId: string | null,
  actor: string,
): Promise<void> {
  const row = { target_path: path, deployment_id: deploymentId, assigned_at: isoNow(), assigned_by: actor };
  await db
    .insertInto('update_assignments')
    .values({ device_id: deviceId, ...row })
    .onConflict((oc) => oc.column('device_id').doUpdateSet(row))
    .execute();
}

/**
 * Clear the device's assignment; with `deploymentId`, only when that deployment made it (so that a
 * deployment ending does not clear what a later one assigned).
 */
export async function unassign(db: Db | Tx, deviceId: string, deploymentId?: string): Promise<void> {
  let q = db.deleteFrom('update_assignments').where('device_id', '=', deviceId);
  if (deploymentId !== undefined) q = q.where('deployment_id', '=', deploymentId);
  await q.execute();
}

/** The assignments table as the director's source. */
export const tableAssignments: DirectorAssignments = {
  async forDevice(db, deviceId) {
    const row = await db
      .selectFrom('update_assignments')
      .select(['target_path', 'deployment_id'])
      .where('device_id', '=', deviceId)
      .executeTakeFirst();
    return row ? { path: row.target_path, deploymentId: row.deployment_id } : null;
  },
};
