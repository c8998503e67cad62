import { randomBytes } from 'node:crypto';
import type { Insertable, Selectable, Updateable } from 'kysely';
import {
  ATTRIBUTE_NAME_PATTERN,
  ID_PATTERN,
  type Attributes,
  type AttributesPatch,
  type CreateDeviceBody,
  type Device,
  type DeviceList,
  type DeviceStatus,
  type UpdateDeviceBody,
} from '@rampart/shared/api';
import { RampartError, invalid, notFound, type FieldProblem } from '../errors.js';
import type { Executor, SqlDialect } from '../storage/index.js';
import type { DevicesTable } from '../storage/schema.js';
import { isoNow } from '../time.js';
import { compileFleetQuery, type FleetQueryFilter } from './query.js';

/** A condition on the `devices` table, usable as `.where(filter)` (what the fleet query compiler produces). */
export type DeviceFilter = FleetQueryFilter;

/** A device's status changed from `from` to `to`. */
export interface StatusChange {
  deviceId: string;
  from: DeviceStatus;
  to: DeviceStatus;
  at: string;
}

/**
 * Runs inside the transaction that changes a device's status, after the change is written. Later
 * capabilities hook in here (revoke certificates of a disabled device, end its gateway sessions);
 * throwing aborts the change.
 */
export type StatusChangeHook = (db: Executor, change: StatusChange) => Promise<void>;

// ---------------------------------------------------------------------------------------------
// Small helpers shared by the registry services

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** `d-` followed by 20 random lowercase base32 characters (100 bits). */
export function generateDeviceId(): string {
  let out = 'd-';
  for (const b of randomBytes(20)) out += BASE32[b & 31];
  return out;
}

function errorCode(err: unknown): string {
  const e = err as { code?: unknown } | null;
  return typeof e?.code === 'string' ? e.code : '';
}

/** A UNIQUE or PRIMARY KEY constraint failed (SQLite or PostgreSQL). */
export function isUniqueViolation(err: unknown): boolean {
  const code = errorCode(err);
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/** `devices.attributes` is JSON text in SQLite and an already parsed jsonb value in PostgreSQL. */
export function parseAttributes(raw: unknown): Attributes {
  const value = typeof raw === 'string' ? (JSON.parse(raw) as unknown) : raw;
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Attributes) : {};
}

export function toDevice(row: Selectable<DevicesTable>, groups?: string[]): Device {
  return {
    id: row.id,
    model: row.model_id,
    hardwareRevision: row.hardware_revision,
    serial: row.serial,
    attributes: parseAttributes(row.attributes),
    status: row.status as DeviceStatus,
    ...(groups ? { groups } : {}),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    statusChangedAt: row.status_changed_at,
  };
}

const CURSOR_PREFIX = 'k1.';
const ID_RE = new RegExp(ID_PATTERN);
export const ATTRIBUTE_NAME_RE = new RegExp(ATTRIBUTE_NAME_PATTERN);

/** Cursors are opaque to clients: the last id of the page, wrapped so that it is not mistaken for an id. */
export function encodeCursor(lastId: string): string {
  return CURSOR_PREFIX + Buffer.from(lastId, 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string): string {
  const id = cursor.startsWith(CURSOR_PREFIX)
    ? Buffer.from(cursor.slice(CURSOR_PREFIX.length), 'base64url').toString('utf8')
    : '';
  if (!ID_RE.test(id)) {
    throw invalid(
      'query.cursor',
      'is not a cursor returned by this API; pass the nextCursor of the previous page',
    );
  }
  return id;
}

export interface ListOptions {
  query?: string | undefined;
  limit: number;
  cursor?: string | undefined;
  count?: boolean | undefined;
}

export function serialConflict(model: string, serial: string, holder: string): RampartError {
  return new RampartError(
    'CONFLICT',
    `device model ${model} already has a device with serial ${serial} (${holder}); serials are unique per model`,
  );
}

export function deviceExists(id: string): RampartError {
  return new RampartError(
    'CONFLICT',
    `device ${id} already exists; choose another id, or omit it to have one generated`,
  );
}

// ---------------------------------------------------------------------------------------------

export interface DeviceUpdateResult {
  device: Device;
  /** Names of the fields that changed. */
  changed: string[];
  /** Set when the status changed. */
  status: StatusChange | null;
}

/** Devices: create, read, list by fleet query, update, change status, delete. */
export class Devices {
  private readonly hooks: StatusChangeHook[] = [];

  constructor(private readonly dialect: SqlDialect) {}

  /** Register a hook that runs on every status change (see {@link StatusChangeHook}). */
  onStatusChange(hook: StatusChangeHook): void {
    this.hooks.push(hook);
  }

  async create(db: Executor, body: CreateDeviceBody): Promise<Device> {
    await checkModelAndRevision(db, body.model, body.hardwareRevision ?? null, 'hardwareRevision');
    const groups = [...new Set(body.groups ?? [])];
    if (groups.length) await checkStaticGroups(db, groups, body.groups ?? []);
    const id = body.id ?? generateDeviceId();
    if (body.id) {
      const existing = await db.selectFrom('devices').select('id').where('id', '=', id).executeTakeFirst();
      if (existing) throw deviceExists(id);
    }
    if (body.serial) {
      const holder = await serialHolder(db, body.model, body.serial);
      if (holder) throw serialConflict(body.model, body.serial, holder);
    }
    const now = isoNow();
    const row: Insertable<DevicesTable> = {
      id,
      model_id: body.model,
      hardware_revision: body.hardwareRevision ?? null,
      serial: body.serial ?? null,
      attributes: JSON.stringify(body.attributes ?? {}),
      status: body.status ?? 'pending',
      created_at: now,
      updated_at: now,
      status_changed_at: now,
    };
    try {
      await db.insertInto('devices').values(row).execute();
    } catch (err) {
      // Registered by a concurrent request between the checks above and this insert.
      if (isUniqueViolation(err)) {
        if (!body.serial) throw deviceExists(id);
        if (body.id === undefined) throw serialConflict(body.model, body.serial, 'another device');
        throw new RampartError(
          'CONFLICT',
          `device ${id}, or serial ${body.serial} of device model ${body.model}, was registered meanwhile; choose another`,
        );
      }
      throw err;
    }
    if (groups.length) {
      await db
        .insertInto('device_group_members')
        .values(groups.map((g) => ({ group_id: g, device_id: id, added_at: now })))
        .execute();
    }
    return toDevice({ ...row, attributes: body.attributes ?? {} } as Selectable<DevicesTable>, groups.sort());
  }

  /** One device, with the static groups it is a direct member of. */
  async get(db: Executor, id: string): Promise<Device> {
    const row = await db.selectFrom('devices').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`device ${id}`);
    const groups = await db
      .selectFrom('device_group_members')
      .select('group_id')
      .where('device_id', '=', id)
      .orderBy('group_id')
      .execute();
    return toDevice(
      row,
      groups.map((g) => g.group_id),
    );
  }

  /** Devices matching an optional fleet query, ordered by id, one page at a time. */
  async list(db: Executor, options: ListOptions, scope?: DeviceFilter): Promise<DeviceList> {
    const filters: DeviceFilter[] = scope ? [scope] : [];
    if (options.query !== undefined && options.query.trim() !== '') {
      filters.push(await compileFleetQuery(db, this.dialect, options.query));
    }
    const where: DeviceFilter = (eb) => eb.and(filters.map((f) => f(eb)));
    const after = options.cursor ? decodeCursor(options.cursor) : null;
    let q = db.selectFrom('devices').selectAll();
    if (filters.length) q = q.where(where);
    if (after !== null) q = q.where('id', '>', after);
    const rows = await q
      .orderBy('id')
      .limit(options.limit + 1)
      .execute();
    const page = rows.slice(0, options.limit);
    const last = page[page.length - 1];
    const result: DeviceList = {
      items: page.map((r) => toDevice(r)),
      nextCursor: rows.length > options.limit && last ? encodeCursor(last.id) : null,
    };
    if (options.count) {
      let c = db.selectFrom('devices').select((eb) => eb.fn.countAll<number>().as('n'));
      if (filters.length) c = c.where(where);
      result.total = Number((await c.executeTakeFirstOrThrow()).n);
    }
    return result;
  }

  async update(db: Executor, id: string, patch: UpdateDeviceBody): Promise<DeviceUpdateResult> {
    const row = await db.selectFrom('devices').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`device ${id}`);
    const set: Updateable<DevicesTable> = {};
    const changed: string[] = [];

    if (patch.hardwareRevision !== undefined && patch.hardwareRevision !== row.hardware_revision) {
      if (patch.hardwareRevision !== null) {
        await checkModelAndRevision(db, row.model_id, patch.hardwareRevision, 'hardwareRevision');
      }
      set.hardware_revision = patch.hardwareRevision;
      changed.push('hardwareRevision');
    }
    if (patch.serial !== undefined && patch.serial !== row.serial) {
      if (patch.serial !== null) {
        const holder = await serialHolder(db, row.model_id, patch.serial);
        if (holder && holder !== id) throw serialConflict(row.model_id, patch.serial, holder);
      }
      set.serial = patch.serial;
      changed.push('serial');
    }
    if (patch.attributes !== undefined) {
      const current = parseAttributes(row.attributes);
      const merged = mergeAttributes(current, patch.attributes);
      if (JSON.stringify(merged) !== JSON.stringify(current)) {
        set.attributes = JSON.stringify(merged);
        changed.push('attributes');
      }
    }
    if (changed.length) {
      set.updated_at = isoNow();
      try {
        await db.updateTable('devices').set(set).where('id', '=', id).execute();
      } catch (err) {
        if (isUniqueViolation(err) && patch.serial)
          throw serialConflict(row.model_id, patch.serial, 'another device');
        throw err;
      }
    }
    let status: StatusChange | null = null;
    if (patch.status !== undefined) {
      status = await this.setDeviceStatus(db, id, patch.status);
      if (status) changed.push('status');
    }
    return { device: await this.get(db, id), changed, status };
  }

  /**
   * The one place where a device's status changes. `statusChangedAt` moves only when the status
   * really changes; hooks registered with {@link onStatusChange} run in the same transaction.
   * Returns null when the device already had that status.
   */
  async setDeviceStatus(db: Executor, id: string, to: DeviceStatus): Promise<StatusChange | null> {
    const row = await db.selectFrom('devices').select('status').where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`device ${id}`);
    const from = row.status as DeviceStatus;
    if (from === to) return null;
    const at = isoNow();
    await db
      .updateTable('devices')
      .set({ status: to, status_changed_at: at, updated_at: at })
      .where('id', '=', id)
      .execute();
    const change: StatusChange = { deviceId: id, from, to, at };
    for (const hook of this.hooks) await hook(db, change);
    return change;
  }

  /** Delete a device; its group memberships go with it. Status hooks see it leave as `disabled`. */
  async delete(db: Executor, id: string): Promise<Device> {
    const device = await this.get(db, id);
    // A deleted device must not keep working: the hooks (certificate revocation, later session
    // teardown) run as for disabling it, inside the same transaction.
    if (device.status !== 'disabled') {
      const change: StatusChange = { deviceId: id, from: device.status, to: 'disabled', at: isoNow() };
      for (const hook of this.hooks) await hook(db, change);
    }
    await db.deleteFrom('device_group_members').where('device_id', '=', id).execute();
    // Its policy attachments go with it: a later device with the same id must not inherit them.
    await db
      .deleteFrom('policy_attachments')
      .where('target_kind', '=', 'device')
      .where('target_id', '=', id)
      .execute();
    await db.deleteFrom('devices').where('id', '=', id).execute();
    return device;
  }
}

/** RFC 7396 merge patch over a flat attribute map: `null` removes, anything else sets. */
export function mergeAttributes(current: Attributes, patch: AttributesPatch): Attributes {
  const out: Attributes = { ...current };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  const n = Object.keys(out).length;
  if (n > 64) {
    throw invalid('attributes', `would leave the device with ${n} attributes; at most 64 are allowed`);
  }
  return out;
}

async function serialHolder(db: Executor, model: string, serial: string): Promise<string | null> {
  const row = await db
    .selectFrom('devices')
    .select('id')
    .where('model_id', '=', model)
    .where('serial', '=', serial)
    .executeTakeFirst();
  return row?.id ?? null;
}

/** The model must exist and the revision, when given, must be one of its hardware revisions. */
async function checkModelAndRevision(
  db: Executor,
  model: string,
  revision: string | null,
  revisionField: string,
): Promise<void> {
  const found = await db.selectFrom('device_models').select('id').where('id', '=', model).executeTakeFirst();
  if (!found) {
    throw new RampartError(
      'VALIDATION',
      `device model ${model} does not exist; create it first (rampart model create ${model})`,
      [{ field: 'model', message: `device model ${model} does not exist` }],
    );
  }
  if (revision === null) return;
  const rev = await db
    .selectFrom('hardware_revisions')
    .select('revision')
    .where('model_id', '=', model)
    .where('revision', '=', revision)
    .executeTakeFirst();
  if (!rev) {
    throw new RampartError(
      'VALIDATION',
      `device model ${model} has no hardware revision ${revision}; add it first (rampart model revision add ${model} ${revision})`,
      [{ field: revisionField, message: `is not a hardware revision of device model ${model}` }],
    );
  }
}

/** Every group must exist and be static (dynamic groups have no members of their own). */
async function checkStaticGroups(db: Executor, unique: string[], listed: string[]): Promise<void> {
  const rows = await db
    .selectFrom('device_groups')
    .select(['id', 'query'])
    .where('id', 'in', unique)
    .execute();
  const byId = new Map(rows.map((r) => [r.id, r]));
  const problems: FieldProblem[] = [];
  listed.forEach((g, i) => {
    const row = byId.get(g);
    if (!row) problems.push({ field: `groups.${i}`, message: `group ${g} does not exist` });
    else if (row.query !== null)
      problems.push({
        field: `groups.${i}`,
        message: `group ${g} is dynamic; devices cannot be added to it`,
      });
  });
  if (problems.length) {
    throw new RampartError('VALIDATION', problems.map((p) => p.message).join('; '), problems);
  }
}
