import type {
  CreateDeviceGroupBody,
  DeviceGroup,
  DeviceList,
  GroupMemberRemoved,
  GroupMembersResult,
  UpdateDeviceGroupBody,
} from '@rampart/shared/api';
import { formatFleetQuery, parseFleetQuery, referencedGroups } from '@rampart/shared/fleet-query';
import { RampartError, invalid, notFound, type FieldProblem } from '../errors.js';
import { chunks, type Executor, type SqlDialect } from '../storage/index.js';
import type { DeviceGroupsTable } from '../storage/schema.js';
import { isoNow } from '../time.js';
import { isUniqueViolation, type Devices, type ListOptions } from './devices.js';
import { compileGroupFilter, validateGroupChange } from './query.js';

type GroupRow = Pick<DeviceGroupsTable, 'id' | 'parent_id' | 'query'>;

export function toGroup(row: DeviceGroupsTable): DeviceGroup {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    kind: row.query === null ? 'static' : 'dynamic',
    parentId: row.parent_id,
    query: row.query,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** Chunk size for `in (...)` lists: well under SQLite's and PostgreSQL's bind parameter limits. */
const IN_CHUNK = 500;

/**
 * Static groups form a hierarchy (a device in a child group is also in its ancestors); dynamic groups
 * are defined by a fleet query and have no members of their own.
 */
export class DeviceGroups {
  constructor(
    private readonly dialect: SqlDialect,
    private readonly devices: Devices,
  ) {}

  async create(db: Executor, body: CreateDeviceGroupBody): Promise<DeviceGroup> {
    const existing = await db
      .selectFrom('device_groups')
      .select('id')
      .where('id', '=', body.id)
      .executeTakeFirst();
    if (existing) throw groupExists(body.id);
    const all = await allGroups(db);
    const parentId = body.parentId ?? null;
    if (parentId !== null) checkParent(all, body.id, parentId);
    const query =
      body.query === undefined ? null : await this.checkQuery(db, all, body.id, body.query, parentId);
    const now = isoNow();
    const row: DeviceGroupsTable = {
      id: body.id,
      name: body.name ?? body.id,
      description: body.description ?? '',
      parent_id: parentId,
      query,
      created_at: now,
      updated_at: now,
    };
    try {
      await db.insertInto('device_groups').values(row).execute();
    } catch (err) {
      if (isUniqueViolation(err)) throw groupExists(body.id);
      throw err;
    }
    return toGroup(row);
  }

  async list(db: Executor): Promise<DeviceGroup[]> {
    const rows = await db.selectFrom('device_groups').selectAll().orderBy('id').execute();
    return rows.map(toGroup);
  }

  async get(db: Executor, id: string): Promise<DeviceGroup> {
    const row = await db.selectFrom('device_groups').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`group ${id}`);
    return toGroup(row);
  }

  async update(
    db: Executor,
    id: string,
    patch: UpdateDeviceGroupBody,
  ): Promise<{ group: DeviceGroup; changed: string[] }> {
    const group = await this.get(db, id);
    const set: Partial<DeviceGroupsTable> = {};
    const changed: string[] = [];
    if (patch.name !== undefined && patch.name !== group.name) {
      set.name = patch.name;
      changed.push('name');
    }
    if (patch.description !== undefined && patch.description !== group.description) {
      set.description = patch.description;
      changed.push('description');
    }
    const needsGraph =
      (patch.parentId !== undefined && patch.parentId !== group.parentId) || patch.query !== undefined;
    const all = needsGraph ? await allGroups(db) : [];
    let parentId = group.parentId;
    if (patch.parentId !== undefined && patch.parentId !== group.parentId) {
      parentId = patch.parentId;
      if (parentId !== null) checkParent(all, id, parentId);
      set.parent_id = parentId;
      changed.push('parentId');
    }
    if (patch.query !== undefined) {
      if (group.kind === 'static') {
        throw new RampartError(
          'CONFLICT',
          `group ${id} is static: its members are listed, not queried; create a dynamic group with this query instead`,
        );
      }
      const query = await this.checkQuery(db, all, id, patch.query, parentId);
      if (query !== group.query) {
        set.query = query;
        changed.push('query');
      }
    } else if (set.parent_id !== undefined) {
      // Moving a group changes what its new ancestors contain: that must not create a cycle either.
      checkCycles(withChange(all, { id, parent_id: parentId, query: group.query }));
    }
    if (changed.length) {
      set.updated_at = isoNow();
      await db.updateTable('device_groups').set(set).where('id', '=', id).execute();
    }
    return { group: await this.get(db, id), changed };
  }

  /** Delete a group. Refused while it has child groups or a dynamic group's query names it. */
  async delete(db: Executor, id: string): Promise<DeviceGroup> {
    const group = await this.get(db, id);
    const all = await allGroups(db);
    const children = all.filter((g) => g.parent_id === id).map((g) => g.id);
    if (children.length) {
      throw new RampartError(
        'CONFLICT',
        `group ${id} has child group${children.length === 1 ? '' : 's'} ${listOf(children)}; ` +
          `delete them or move them elsewhere (PATCH parentId) first`,
      );
    }
    const referrers = all
      .filter((g) => g.query !== null && g.id !== id && referencesOf(g).includes(id))
      .map((g) => g.id);
    if (referrers.length) {
      throw new RampartError(
        'CONFLICT',
        `group ${id} is named in the query of dynamic group${referrers.length === 1 ? '' : 's'} ${listOf(referrers)}; ` +
          `change or delete ${referrers.length === 1 ? 'that group' : 'those groups'} first`,
      );
    }
    await db.deleteFrom('device_group_members').where('group_id', '=', id).execute();
    // Its policy attachments go with it: a later group with the same id must not inherit them.
    await db
      .deleteFrom('policy_attachments')
      .where('target_kind', '=', 'group')
      .where('target_id', '=', id)
      .execute();
    await db.deleteFrom('device_groups').where('id', '=', id).execute();
    return group;
  }

  /** Add devices to a static group; devices already in it are left as they are. */
  async addMembers(db: Executor, id: string, deviceIds: readonly string[]): Promise<GroupMembersResult> {
    const group = await this.get(db, id);
    if (group.kind === 'dynamic') throw dynamicMembership(id);
    const unique = [...new Set(deviceIds)];
    const known = new Set<string>();
    const already = new Set<string>();
    for (const part of chunks(unique, IN_CHUNK)) {
      const [found, members] = await Promise.all([
        db.selectFrom('devices').select('id').where('id', 'in', part).execute(),
        db
          .selectFrom('device_group_members')
          .select('device_id')
          .where('group_id', '=', id)
          .where('device_id', 'in', part)
          .execute(),
      ]);
      for (const r of found) known.add(r.id);
      for (const r of members) already.add(r.device_id);
    }
    const problems: FieldProblem[] = [];
    deviceIds.forEach((d, i) => {
      if (!known.has(d)) problems.push({ field: `deviceIds.${i}`, message: `device ${d} does not exist` });
    });
    if (problems.length) {
      const missing = [...new Set(deviceIds.filter((d) => !known.has(d)))];
      throw new RampartError(
        'VALIDATION',
        `${missing.length} device${missing.length === 1 ? ' does' : 's do'} not exist: ${listOf(missing)}; nothing was added`,
        problems.slice(0, 100),
      );
    }
    const now = isoNow();
    const fresh = unique.filter((d) => !already.has(d));
    for (const part of chunks(fresh, IN_CHUNK)) {
      await db
        .insertInto('device_group_members')
        .values(part.map((d) => ({ group_id: id, device_id: d, added_at: now })))
        .execute();
    }
    if (fresh.length)
      await db.updateTable('device_groups').set({ updated_at: now }).where('id', '=', id).execute();
    return { groupId: id, added: fresh.length, alreadyMembers: already.size };
  }

  async removeMember(db: Executor, id: string, deviceId: string): Promise<GroupMemberRemoved> {
    const group = await this.get(db, id);
    if (group.kind === 'dynamic') throw dynamicMembership(id);
    const result = await db
      .deleteFrom('device_group_members')
      .where('group_id', '=', id)
      .where('device_id', '=', deviceId)
      .executeTakeFirst();
    if (Number(result.numDeletedRows) === 0) {
      const device = await db
        .selectFrom('devices')
        .select('id')
        .where('id', '=', deviceId)
        .executeTakeFirst();
      throw device
        ? notFound(`device ${deviceId} in group ${id} (it is not a direct member)`)
        : notFound(`device ${deviceId}`);
    }
    await db.updateTable('device_groups').set({ updated_at: isoNow() }).where('id', '=', id).execute();
    return { groupId: id, deviceId };
  }

  /**
   * Devices in a group: for a static group its members and the members of every descendant group
   * (dynamic descendants contribute the devices matching their queries); for a dynamic group the
   * devices matching its query. Paginated like the device list.
   */
  async devicesOf(db: Executor, id: string, options: ListOptions): Promise<DeviceList> {
    await this.get(db, id);
    const scope = await compileGroupFilter(db, this.dialect, id);
    return this.devices.list(db, options, scope);
  }

  /**
   * Validate a dynamic group's query: it must parse, name only existing groups, not make any group
   * contain itself, and compile. Returns the query in canonical form, as stored.
   */
  private async checkQuery(
    db: Executor,
    all: GroupRow[],
    id: string,
    text: string,
    parentId: string | null,
  ): Promise<string> {
    const node = parseFleetQuery(text);
    checkCycles(withChange(all, { id, parent_id: parentId, query: formatFleetQuery(node) }));
    const normalized = await validateGroupChange(db, this.dialect, { id, parentId, query: text });
    return normalized ?? formatFleetQuery(node);
  }
}

function groupExists(id: string): RampartError {
  return new RampartError(
    'CONFLICT',
    `group ${id} already exists; choose another id or change it with PATCH`,
  );
}

function dynamicMembership(id: string): RampartError {
  return new RampartError(
    'CONFLICT',
    `group ${id} is dynamic: its members are the devices matching its query; change the query, or use a static group`,
  );
}

function listOf(ids: readonly string[], max = 10): string {
  return ids.length <= max ? ids.join(', ') : `${ids.slice(0, max).join(', ')} and ${ids.length - max} more`;
}

async function allGroups(db: Executor): Promise<GroupRow[]> {
  return db.selectFrom('device_groups').select(['id', 'parent_id', 'query']).execute();
}

function withChange(all: GroupRow[], changed: GroupRow): GroupRow[] {
  return [...all.filter((g) => g.id !== changed.id), changed];
}

const queryRefs = new WeakMap<GroupRow, string[]>();
function referencesOf(g: GroupRow): string[] {
  if (g.query === null) return [];
  let refs = queryRefs.get(g);
  if (!refs) {
    refs = referencedGroups(parseFleetQuery(g.query));
    queryRefs.set(g, refs);
  }
  return refs;
}

/** The parent must exist, be static and not be the group itself or one of its descendants. */
function checkParent(all: GroupRow[], id: string, parentId: string): void {
  const parent = all.find((g) => g.id === parentId);
  if (!parent) {
    throw invalid('parentId', `names group ${parentId}, which does not exist`);
  }
  if (parent.query !== null) {
    throw new RampartError(
      'CONFLICT',
      `group ${parentId} is dynamic and cannot have child groups; choose a static parent group`,
    );
  }
  if (parentId === id || descendantsOf(all, id).some((g) => g.id === parentId)) {
    throw new RampartError(
      'CONFLICT',
      `group ${parentId} is ${parentId === id ? 'the group itself' : `a descendant of ${id}`}; a group cannot be its own ancestor`,
    );
  }
}

/** The group and every group below it. */
function descendantsOf(all: GroupRow[], id: string): GroupRow[] {
  const children = new Map<string, GroupRow[]>();
  for (const g of all) {
    if (g.parent_id === null) continue;
    const list = children.get(g.parent_id) ?? [];
    list.push(g);
    children.set(g.parent_id, list);
  }
  const root = all.find((g) => g.id === id);
  if (!root) return [];
  const out: GroupRow[] = [];
  const seen = new Set<string>();
  const stack = [root];
  while (stack.length) {
    const g = stack.pop()!;
    if (seen.has(g.id)) continue;
    seen.add(g.id);
    out.push(g);
    stack.push(...(children.get(g.id) ?? []));
  }
  return out;
}

/**
 * What a group's membership depends on: its child groups (members of descendants are members) and,
 * for a dynamic group, the groups its query names. A cycle would make membership undefined.
 */
function checkCycles(all: GroupRow[]): void {
  const deps = new Map<string, string[]>();
  for (const g of all) deps.set(g.id, [...referencesOf(g)]);
  for (const g of all) if (g.parent_id !== null) deps.get(g.parent_id)?.push(g.id);
  const state = new Map<string, 'visiting' | 'done'>();
  const path: string[] = [];
  const visit = (id: string): string[] | null => {
    const s = state.get(id);
    if (s === 'done') return null;
    if (s === 'visiting') return [...path.slice(path.indexOf(id)), id];
    state.set(id, 'visiting');
    path.push(id);
    for (const d of deps.get(id) ?? []) {
      const cycle = visit(d);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(id, 'done');
    return null;
  };
  for (const g of all) {
    const cycle = visit(g.id);
    if (cycle) {
      throw new RampartError(
        'CONFLICT',
        `this would make group membership circular (${cycle.join(' → ')}); a group cannot contain itself`,
      );
    }
  }
}
