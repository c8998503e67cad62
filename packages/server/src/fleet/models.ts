import type {
  CreateDeviceModelBody,
  CreateHardwareRevisionBody,
  DeviceModel,
  HardwareRevision,
  UpdateDeviceModelBody,
} from '@rampart/shared/api';
import { RampartError, notFound } from '../errors.js';
import type { Selectable } from 'kysely';
import type { Executor } from '../storage/index.js';
import type { DeviceModelsTable, HardwareRevisionsTable } from '../storage/schema.js';
import { isoNow } from '../time.js';
import { isUniqueViolation } from './devices.js';

function toRevision(row: HardwareRevisionsTable): HardwareRevision {
  return { revision: row.revision, description: row.description, createdAt: row.created_at };
}

function toModel(row: Selectable<DeviceModelsTable>, revisions: HardwareRevisionsTable[]): DeviceModel {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    hardwareRevisions: revisions.map(toRevision),
    encryptUpdates: Number(row.encrypt_updates) === 1,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

function duplicateRevisions(revisions: readonly { revision: string }[]): string[] {
  const seen = new Set<string>();
  const dup = new Set<string>();
  for (const r of revisions) (seen.has(r.revision) ? dup : seen).add(r.revision);
  return [...dup];
}

/** Device models and their hardware revisions. */
export class DeviceModels {
  async create(db: Executor, body: CreateDeviceModelBody): Promise<DeviceModel> {
    const revisions = body.hardwareRevisions ?? [];
    const dups = duplicateRevisions(revisions);
    if (dups.length) {
      throw new RampartError(
        'VALIDATION',
        `hardware revision ${dups.join(', ')} is listed more than once`,
        revisions.flatMap((r, i) =>
          revisions.findIndex((x) => x.revision === r.revision) < i
            ? [{ field: `hardwareRevisions.${i}.revision`, message: 'is a duplicate' }]
            : [],
        ),
      );
    }
    const existing = await db
      .selectFrom('device_models')
      .select('id')
      .where('id', '=', body.id)
      .executeTakeFirst();
    if (existing) throw conflictModelExists(body.id);
    const now = isoNow();
    const row: Selectable<DeviceModelsTable> = {
      id: body.id,
      name: body.name ?? body.id,
      description: body.description ?? '',
      encrypt_updates: body.encryptUpdates ? 1 : 0,
      created_at: now,
      updated_at: now,
    };
    try {
      await db.insertInto('device_models').values(row).execute();
    } catch (err) {
      if (isUniqueViolation(err)) throw conflictModelExists(body.id);
      throw err;
    }
    const revRows: HardwareRevisionsTable[] = revisions.map((r) => ({
      model_id: body.id,
      revision: r.revision,
      description: r.description ?? '',
      created_at: now,
    }));
    if (revRows.length) await db.insertInto('hardware_revisions').values(revRows).execute();
    return toModel(row, revRows);
  }

  async list(db: Executor): Promise<DeviceModel[]> {
    const [models, revisions] = await Promise.all([
      db.selectFrom('device_models').selectAll().orderBy('id').execute(),
      db
        .selectFrom('hardware_revisions')
        .selectAll()
        .orderBy('model_id')
        .orderBy('created_at')
        .orderBy('revision')
        .execute(),
    ]);
    const byModel = new Map<string, HardwareRevisionsTable[]>();
    for (const r of revisions) {
      const list = byModel.get(r.model_id) ?? [];
      list.push(r);
      byModel.set(r.model_id, list);
    }
    return models.map((m) => toModel(m, byModel.get(m.id) ?? []));
  }

  async get(db: Executor, id: string): Promise<DeviceModel> {
    const row = await db.selectFrom('device_models').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`device model ${id}`);
    const revisions = await db
      .selectFrom('hardware_revisions')
      .selectAll()
      .where('model_id', '=', id)
      .orderBy('created_at')
      .orderBy('revision')
      .execute();
    return toModel(row, revisions);
  }

  async update(db: Executor, id: string, patch: UpdateDeviceModelBody): Promise<DeviceModel> {
    await this.get(db, id);
    await db
      .updateTable('device_models')
      .set({
        ...(patch.name !== undefined ? { name: patch.name } : {}),
        ...(patch.description !== undefined ? { description: patch.description } : {}),
        ...(patch.encryptUpdates !== undefined ? { encrypt_updates: patch.encryptUpdates ? 1 : 0 } : {}),
        updated_at: isoNow(),
      })
      .where('id', '=', id)
      .execute();
    return this.get(db, id);
  }

  /** Delete a model and its hardware revisions; refused while any device is of this model. */
  async delete(db: Executor, id: string): Promise<DeviceModel> {
    const model = await this.get(db, id);
    const used = await countDevices(db, id);
    if (used > 0) {
      throw new RampartError(
        'CONFLICT',
        `device model ${id} is used by ${used} device${used === 1 ? '' : 's'}; delete those devices first ` +
          `(rampart device list --query 'model = "${id}"')`,
      );
    }
    await db.deleteFrom('hardware_revisions').where('model_id', '=', id).execute();
    // Its policy attachments go with it: a later model with the same id must not inherit them.
    await db
      .deleteFrom('policy_attachments')
      .where('target_kind', '=', 'model')
      .where('target_id', '=', id)
      .execute();
    await db.deleteFrom('device_models').where('id', '=', id).execute();
    return model;
  }

  async addRevision(db: Executor, modelId: string, body: CreateHardwareRevisionBody): Promise<DeviceModel> {
    const model = await this.get(db, modelId);
    if (model.hardwareRevisions.some((r) => r.revision === body.revision)) {
      throw conflictRevisionExists(modelId, body.revision);
    }
    const now = isoNow();
    try {
      await db
        .insertInto('hardware_revisions')
        .values({
          model_id: modelId,
          revision: body.revision,
          description: body.description ?? '',
          created_at: now,
        })
        .execute();
    } catch (err) {
      if (isUniqueViolation(err)) throw conflictRevisionExists(modelId, body.revision);
      throw err;
    }
    await db.updateTable('device_models').set({ updated_at: now }).where('id', '=', modelId).execute();
    return this.get(db, modelId);
  }

  /** Remove a hardware revision; refused while any device has it. */
  async removeRevision(db: Executor, modelId: string, revision: string): Promise<DeviceModel> {
    const model = await this.get(db, modelId);
    if (!model.hardwareRevisions.some((r) => r.revision === revision)) {
      throw notFound(`hardware revision ${revision} of device model ${modelId}`);
    }
    const used = await countDevices(db, modelId, revision);
    if (used > 0) {
      throw new RampartError(
        'CONFLICT',
        `hardware revision ${revision} of device model ${modelId} is used by ${used} device${used === 1 ? '' : 's'}; ` +
          `move them to another revision or delete them first`,
      );
    }
    await db
      .deleteFrom('hardware_revisions')
      .where('model_id', '=', modelId)
      .where('revision', '=', revision)
      .execute();
    await db.updateTable('device_models').set({ updated_at: isoNow() }).where('id', '=', modelId).execute();
    return this.get(db, modelId);
  }
}

async function countDevices(db: Executor, modelId: string, revision?: string): Promise<number> {
  let q = db
    .selectFrom('devices')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('model_id', '=', modelId);
  if (revision !== undefined) q = q.where('hardware_revision', '=', revision);
  return Number((await q.executeTakeFirstOrThrow()).n);
}

function conflictModelExists(id: string): RampartError {
  return new RampartError(
    'CONFLICT',
    `device model ${id} already exists; choose another id or change it with PATCH /api/v1/device-models/${id}`,
  );
}

function conflictRevisionExists(modelId: string, revision: string): RampartError {
  return new RampartError('CONFLICT', `device model ${modelId} already has hardware revision ${revision}`);
}
