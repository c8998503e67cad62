import {
  mergePatch,
  shadowDelta,
  shadowStateProblem,
  type ShadowDocument,
  type ShadowState,
} from '@rampart/shared/shadow';
import { RampartError, notFound } from '../errors.js';
import type { Executor } from '../storage/index.js';
import type { DeviceShadowsTable } from '../storage/schema.js';
import { isoNow } from '../time.js';

export class ShadowVersionConflict extends RampartError {
  constructor(
    readonly expected: number,
    readonly actual: number,
  ) {
    super('CONFLICT', `the shadow is at version ${actual}, not ${expected}; read it again and retry`);
  }
}

function toDocument(deviceId: string, row: DeviceShadowsTable | undefined): ShadowDocument {
  const desired = row ? (JSON.parse(row.desired) as ShadowState) : {};
  const reported = row ? (JSON.parse(row.reported) as ShadowState) : {};
  return {
    deviceId,
    version: row?.version ?? 0,
    state: { desired, reported, delta: shadowDelta(desired, reported) },
    updatedAt: row?.updated_at ?? null,
    desiredUpdatedAt: row?.desired_updated_at ?? null,
    reportedUpdatedAt: row?.reported_updated_at ?? null,
  };
}

/**
 * Device shadows, persisted. The operator writes `desired` (API, CLI), the device writes
 * `reported` (MQTT); both are JSON merge patches, and an update can name the version it expects
 * (optimistic concurrency: a stale one is refused, nothing changes).
 */
export class ShadowService {
  async get(db: Executor, deviceId: string): Promise<ShadowDocument> {
    const device = await db.selectFrom('devices').select('id').where('id', '=', deviceId).executeTakeFirst();
    if (!device) throw notFound(`device ${deviceId}`);
    const row = await db
      .selectFrom('device_shadows')
      .selectAll()
      .where('device_id', '=', deviceId)
      .executeTakeFirst();
    return toDocument(deviceId, row);
  }

  async update(
    db: Executor,
    deviceId: string,
    part: 'desired' | 'reported',
    patch: unknown,
    expectedVersion?: number,
  ): Promise<{ before: ShadowDocument; after: ShadowDocument }> {
    const problem = shadowStateProblem(patch, part);
    if (problem) throw new RampartError('VALIDATION', problem, [{ field: part, message: problem }]);
    const before = await this.get(db, deviceId);
    if (expectedVersion !== undefined && expectedVersion !== before.version)
      throw new ShadowVersionConflict(expectedVersion, before.version);
    const next = mergePatch(before.state[part] as ShadowState, patch as ShadowState);
    const stored = shadowStateProblem(next, part);
    if (stored) throw new RampartError('VALIDATION', stored, [{ field: part, message: stored }]);
    const now = isoNow();
    const desired = part === 'desired' ? next : (before.state.desired as ShadowState);
    const reported = part === 'reported' ? next : (before.state.reported as ShadowState);
    const row: DeviceShadowsTable = {
      device_id: deviceId,
      desired: JSON.stringify(desired),
      reported: JSON.stringify(reported),
      version: before.version + 1,
      updated_at: now,
      desired_updated_at: part === 'desired' ? now : before.desiredUpdatedAt,
      reported_updated_at: part === 'reported' ? now : before.reportedUpdatedAt,
    };
    // The version in the WHERE clause makes concurrent updates safe: only one of two writers wins.
    if (before.version === 0) {
      await db
        .insertInto('device_shadows')
        .values(row)
        .onConflict((oc) => oc.column('device_id').doNothing())
        .execute();
    } else {
      await db
        .updateTable('device_shadows')
        .set(row)
        .where('device_id', '=', deviceId)
        .where('version', '=', before.version)
        .execute();
    }
    const after = await this.get(db, deviceId);
    if (after.version !== before.version + 1 || after.updatedAt !== now)
      throw new ShadowVersionConflict(before.version, after.version);
    return { before, after };
  }
}
