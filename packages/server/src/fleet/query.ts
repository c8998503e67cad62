import { sql, type Expression, type ExpressionBuilder, type RawBuilder, type SqlBool } from 'kysely';
import { SharedError } from '@rampart/shared/errors';
import {
  formatFleetQuery,
  isAttributeName,
  MAX_QUERY_LENGTH,
  normalizeTimestamp,
  parseFleetQuery,
  referencedGroups,
  TIME_FIELDS,
  type CompareOperator,
  type ConditionNode,
  type DeviceFieldName,
  type FleetQueryNode,
  type FleetQueryValue,
} from '@rampart/shared/fleet-query';
import { RampartError } from '../errors.js';
import type { Database, Executor, SqlDialect } from '../storage/index.js';
import { attributeStringExpression, attributeTextExpression } from './attribute-indexes.js';

/** A compiled fleet query: `db.selectFrom('devices').selectAll().where(filter)`. */
export type FleetQueryFilter = (eb: ExpressionBuilder<Database, 'devices'>) => Expression<SqlBool>;

/** Most conditions (and group ids) one query may expand to once dynamic groups are inlined. */
export const MAX_EXPANDED_CONDITIONS = 10_000;

type Sql = RawBuilder<SqlBool>;

interface GroupRow {
  id: string;
  parentId: string | null;
  query: string | FleetQueryNode | null;
}

const COLUMNS: Record<DeviceFieldName, string> = {
  id: 'devices.id',
  model: 'devices.model_id',
  hardwareRevision: 'devices.hardware_revision',
  serial: 'devices.serial',
  status: 'devices.status',
  createdAt: 'devices.created_at',
  updatedAt: 'devices.updated_at',
  statusChangedAt: 'devices.status_changed_at',
};
const NULLABLE: readonly DeviceFieldName[] = ['hardwareRevision', 'serial'];

function queryInvalid(message: string): RampartError {
  return new RampartError('QUERY_INVALID', message, [{ field: 'query', message }]);
}

function parse(query: string | FleetQueryNode): FleetQueryNode {
  return typeof query === 'string' ? parseFleetQuery(query) : query;
}

async function loadGroups(db: Executor): Promise<Map<string, GroupRow>> {
  const rows = await db.selectFrom('device_groups').select(['id', 'parent_id', 'query']).execute();
  return new Map(rows.map((r) => [r.id, { id: r.id, parentId: r.parent_id, query: r.query }]));
}

/**
 * Compile a fleet query (text or parsed) into a filter on `devices`. Every value is a bound
 * parameter. Group references are resolved now: the whole group table is read once, static groups
 * become their ids and those of their descendants, dynamic groups are inlined.
 *
 * Throws SharedError QUERY_SYNTAX for a syntax error in `query`, RampartError QUERY_INVALID for an
 * unknown group, a cycle between dynamic groups or a broken stored group query.
 */
export async function compileFleetQuery(
  db: Executor,
  dialect: SqlDialect,
  query: string | FleetQueryNode,
): Promise<FleetQueryFilter> {
  const node = parse(query);
  const groups = referencedGroups(node).length > 0 ? await loadGroups(db) : new Map<string, GroupRow>();
  const expression = new Compiler(dialect, groups).compile(node);
  return () => expression;
}

/** The devices of group `groupId` (static: members of it and of its descendants; dynamic: its query). */
export async function compileGroupFilter(
  db: Executor,
  dialect: SqlDialect,
  groupId: string,
): Promise<FleetQueryFilter> {
  return compileFleetQuery(db, dialect, {
    type: 'compare',
    field: { kind: 'group' },
    op: '=',
    value: groupId,
  });
}

export interface GroupChange {
  id: string;
  /** The parent after the change; omitted: unchanged. */
  parentId?: string | null;
  /** The query after the change (null: static); omitted: unchanged. */
  query?: string | null;
  /** The group is about to be deleted. */
  delete?: boolean;
}

/**
 * Check, before writing it, that a change to a group keeps every dynamic group valid: its query
 * names only existing groups and no dynamic group depends on itself (directly, through other dynamic
 * groups or through a static ancestor that contains it). Returns the canonical form of the new
 * query (store that), or null for a static group. Throws QUERY_SYNTAX / QUERY_INVALID, and
 * CONFLICT when a group to delete is named in a dynamic group's query.
 */
export async function validateGroupChange(
  db: Executor,
  dialect: SqlDialect,
  change: GroupChange,
): Promise<string | null> {
  const groups = await loadGroups(db);
  if (change.delete) {
    groups.delete(change.id);
    for (const g of groups.values()) {
      if (g.query === null) continue;
      let node: FleetQueryNode;
      try {
        node = parse(g.query);
      } catch {
        continue;
      }
      if (referencedGroups(node).includes(change.id)) {
        throw new RampartError(
          'CONFLICT',
          `group "${change.id}" is named in the query of dynamic group "${g.id}"; change that query first`,
        );
      }
    }
    return null;
  }
  const current = groups.get(change.id);
  const query =
    change.query === undefined
      ? (current?.query ?? null)
      : change.query === null
        ? null
        : parse(change.query);
  groups.set(change.id, {
    id: change.id,
    parentId: change.parentId === undefined ? (current?.parentId ?? null) : change.parentId,
    query,
  });
  // Expanding the changed group walks every edge that a new cycle would have to use.
  new Compiler(dialect, groups).compileGroups([change.id]);
  if (query === null) return null;
  const canonical = formatFleetQuery(parse(query));
  // The stored form must parse again: spacing and escapes can make it longer than what was sent.
  if (canonical.length > MAX_QUERY_LENGTH) {
    throw queryInvalid(
      `query is too long once normalized: ${canonical.length} characters, at most ${MAX_QUERY_LENGTH}`,
    );
  }
  return canonical;
}

/** Dynamic groups evaluated per statement by {@link groupsOfDevices}: well under SQLite's column limit. */
const MEMBERSHIP_CHUNK = 100;
/** Devices per statement: well under the bind parameter limits of SQLite and PostgreSQL. */
const DEVICE_CHUNK = 500;

/**
 * Every group device `deviceId` is in, by the same rules as the `group = "G"` condition: the static
 * groups it was added to, every dynamic group whose query it matches now, and the ancestors of
 * both. A dynamic group whose query does not compile (broken, or part of a cycle) is left out:
 * queries are checked when they are written.
 */
export async function groupsOfDevice(db: Executor, dialect: SqlDialect, deviceId: string): Promise<string[]> {
  return (await groupsOfDevices(db, dialect, [deviceId])).get(deviceId) ?? [];
}

/** {@link groupsOfDevice} for many devices at once: a few statements per 500 devices. */
export async function groupsOfDevices(
  db: Executor,
  dialect: SqlDialect,
  deviceIds: readonly string[],
): Promise<Map<string, string[]>> {
  const result = new Map<string, string[]>();
  const groups = await loadGroups(db);
  if (groups.size === 0) return result;
  const dynamic: { id: string; expression: Sql }[] = [];
  for (const g of groups.values()) {
    if (g.query === null) continue;
    try {
      dynamic.push({ id: g.id, expression: new Compiler(dialect, groups).compileGroups([g.id]) });
    } catch (err) {
      if (!(err instanceof RampartError)) throw err;
    }
  }
  const sets = new Map<string, Set<string>>();
  // A group's members are also in every ancestor (a dynamic group may sit under a static one).
  const add = (deviceId: string, groupId: string) => {
    let out = sets.get(deviceId);
    if (!out) sets.set(deviceId, (out = new Set()));
    for (
      let g = groups.get(groupId);
      g && !out.has(g.id);
      g = g.parentId ? groups.get(g.parentId) : undefined
    )
      out.add(g.id);
  };
  for (let c = 0; c < deviceIds.length; c += DEVICE_CHUNK) {
    const ids = deviceIds.slice(c, c + DEVICE_CHUNK);
    const direct = await db
      .selectFrom('device_group_members')
      .select(['device_id', 'group_id'])
      .where('device_id', 'in', ids)
      .execute();
    for (const { device_id, group_id } of direct) add(device_id, group_id);
    for (let i = 0; i < dynamic.length; i += MEMBERSHIP_CHUNK) {
      const chunk = dynamic.slice(i, i + MEMBERSHIP_CHUNK);
      const rows = await db
        .selectFrom('devices')
        .where('devices.id', 'in', ids)
        .select([
          'devices.id',
          ...chunk.map((d, j) => sql<number>`case when ${d.expression} then 1 else 0 end`.as(`g${j}`)),
        ])
        .execute();
      for (const row of rows) {
        const values = row as Record<string, unknown>;
        chunk.forEach((d, j) => {
          if (Number(values[`g${j}`]) === 1) add(row.id, d.id);
        });
      }
    }
  }
  for (const [id, out] of sets) result.set(id, [...out].sort());
  return result;
}

class Compiler {
  private readonly children = new Map<string, string[]>();
  private readonly expanded = new Map<string, { expression: Sql; size: number }>();
  /** Dynamic groups being expanded, to detect cycles. */
  private readonly expanding = new Set<string>();
  /** The chain of groups that led to the one being expanded, for the message about a cycle. */
  private readonly path: string[] = [];
  private size = 0;

  constructor(
    private readonly dialect: SqlDialect,
    private readonly groups: Map<string, GroupRow>,
  ) {
    for (const g of groups.values()) {
      if (g.parentId === null) continue;
      const list = this.children.get(g.parentId);
      if (list) list.push(g.id);
      else this.children.set(g.parentId, [g.id]);
    }
  }

  compile(node: FleetQueryNode): Sql {
    switch (node.type) {
      case 'and':
        return sql<SqlBool>`(${sql.join(
          node.operands.map((o) => this.compile(o)),
          sql` and `,
        )})`;
      case 'or':
        return or(node.operands.map((o) => this.compile(o)));
      case 'not':
        return not(this.compile(node.operand));
      default:
        this.grow(1);
        return this.condition(node);
    }
  }

  private condition(node: ConditionNode): Sql {
    const field = node.field;
    if (field.kind === 'group') {
      if (node.type === 'compare' && (node.op === '=' || node.op === '!=')) {
        const e = this.compileGroups([String(node.value)]);
        return node.op === '!=' ? not(e) : e;
      }
      if (node.type === 'in') {
        const e = this.compileGroups(node.values.map(String));
        return node.negated ? not(e) : e;
      }
      throw queryInvalid(`group supports only =, !=, in and not in`);
    }
    if (field.kind === 'attribute') return this.attributeCondition(field.name, node);
    return this.deviceCondition(field.name, node);
  }

  private deviceCondition(name: DeviceFieldName, node: ConditionNode): Sql {
    const column = sql.ref(COLUMNS[name]);
    const isTime = TIME_FIELDS.includes(name);
    const value = (v: FleetQueryValue): string => {
      if (typeof v !== 'string') throw queryInvalid(`${name} compares with quoted text values`);
      if (!isTime) return v;
      const t = normalizeTimestamp(v);
      if (t === null) throw queryInvalid(`${name} compares with an ISO-8601 date or time (got "${v}")`);
      return t;
    };
    const nullable = NULLABLE.includes(name);
    switch (node.type) {
      case 'compare': {
        if (node.op === '=') return sql`${column} = ${value(node.value)}`;
        if (node.op === '!=') {
          return nullable
            ? not(sql`${column} = ${value(node.value)}`)
            : sql`${column} <> ${value(node.value)}`;
        }
        // Order text by code point, as SQLite does, whatever the PostgreSQL database's collation.
        // Times are stored in one fixed format, which every collation orders the same; leaving them
        // alone keeps their indexes usable.
        const left = this.dialect === 'postgres' && !isTime ? sql`${column} collate "C"` : column;
        return sql`${left} ${sql.raw(node.op)} ${value(node.value)}`;
      }
      case 'in': {
        this.grow(node.values.length);
        const e = sql<SqlBool>`${column} in (${sql.join(node.values.map(value))})`;
        return node.negated ? not(e) : e;
      }
      case 'like': {
        const e = this.like(column, node.pattern);
        return node.negated ? not(e) : e;
      }
      case 'exists':
        return node.negated ? sql`${column} is null` : sql`${column} is not null`;
    }
  }

  /**
   * Attribute values keep their JSON type: a string matches only strings, a number only numbers, a
   * boolean only booleans; a missing attribute matches no comparison (and so every negated one).
   */
  private attributeCondition(name: string, node: ConditionNode): Sql {
    if (!isAttributeName(name)) throw queryInvalid(`invalid attribute name "${name}"`);
    const a = new AttributeSql(this.dialect, name);
    switch (node.type) {
      case 'compare': {
        if (node.op === '!=') return not(a.compare('=', node.value));
        return a.compare(node.op, node.value);
      }
      case 'in': {
        this.grow(node.values.length);
        const e = a.in(node.values);
        return node.negated ? not(e) : e;
      }
      case 'like': {
        const e = sql<SqlBool>`(${a.isString()} and ${this.like(a.text, node.pattern)})`;
        return node.negated ? not(e) : e;
      }
      case 'exists':
        return node.negated ? sql`${a.json} is null` : sql`${a.json} is not null`;
    }
  }

  /**
   * `like` takes a glob (`*`, `?`, `\` escapes the next character) and is case-sensitive in both
   * databases. PostgreSQL: LIKE with `%`, `_` and `\` escaped. SQLite's LIKE ignores ASCII case, so
   * SQLite uses GLOB, whose own special characters are escaped as bracket expressions.
   */
  private like(expression: RawBuilder<unknown>, glob: string): Sql {
    let pattern = '';
    for (let i = 0; i < glob.length; i++) {
      let c = glob[i]!;
      let literal = false;
      if (c === '\\' && i + 1 < glob.length) {
        c = glob[++i]!;
        literal = true;
      }
      if (this.dialect === 'postgres') {
        if (!literal && c === '*') pattern += '%';
        else if (!literal && c === '?') pattern += '_';
        else pattern += c === '%' || c === '_' || c === '\\' ? `\\${c}` : c;
      } else if (literal || c === '[') {
        pattern += c === '*' || c === '?' || c === '[' ? `[${c}]` : c;
      } else {
        pattern += c;
      }
    }
    return this.dialect === 'postgres'
      ? sql`${expression} like ${pattern} escape ${'\\'}`
      : sql`${expression} glob ${pattern}`;
  }

  /** Devices in any of `ids`: members of the static groups in their subtrees, or matching their dynamic groups. */
  compileGroups(ids: string[]): Sql {
    const staticIds = new Set<string>();
    const dynamic: Sql[] = [];
    for (const id of ids) {
      const root = this.groups.get(id);
      if (!root) throw queryInvalid(`unknown group "${id}"`);
      this.path.push(id);
      for (const g of this.subtree(root)) {
        if (g.query === null) {
          staticIds.add(g.id);
          continue;
        }
        if (g !== root) this.path.push(g.id);
        dynamic.push(this.expandDynamic(g));
        if (g !== root) this.path.pop();
      }
      this.path.pop();
    }
    const parts: Sql[] = [];
    if (staticIds.size > 0) {
      this.grow(staticIds.size);
      parts.push(
        sql`${sql.ref('devices.id')} in (select device_id from device_group_members where group_id in (${sql.join(
          [...staticIds],
        )}))`,
      );
    }
    return or([...parts, ...dynamic]);
  }

  private subtree(root: GroupRow): GroupRow[] {
    const seen = new Set<string>([root.id]);
    const out: GroupRow[] = [root];
    for (let i = 0; i < out.length; i++) {
      for (const childId of this.children.get(out[i]!.id) ?? []) {
        const child = this.groups.get(childId);
        if (child && !seen.has(childId)) {
          seen.add(childId);
          out.push(child);
        }
      }
    }
    return out;
  }

  private expandDynamic(group: GroupRow): Sql {
    const done = this.expanded.get(group.id);
    if (done) {
      this.grow(done.size);
      return done.expression;
    }
    if (this.expanding.has(group.id)) {
      const path = this.path.slice(this.path.indexOf(group.id)).join(' -> ');
      throw queryInvalid(`dynamic group "${group.id}" depends on itself: ${path}`);
    }
    let node: FleetQueryNode;
    try {
      node = parse(group.query!);
    } catch (err) {
      if (err instanceof SharedError) {
        throw queryInvalid(`the query of dynamic group "${group.id}" is invalid: ${err.message}`);
      }
      throw err;
    }
    this.expanding.add(group.id);
    const before = this.size;
    const expression = this.compile(node);
    this.expanding.delete(group.id);
    this.expanded.set(group.id, { expression, size: this.size - before });
    return expression;
  }

  private grow(n: number): void {
    this.size += n;
    if (this.size > MAX_EXPANDED_CONDITIONS) {
      throw queryInvalid(
        `query is too large once its groups are expanded (more than ${MAX_EXPANDED_CONDITIONS} conditions and group ids)`,
      );
    }
  }
}

/** SQL for one attribute: its text (the indexed expression), its JSON value and its JSON type. */
class AttributeSql {
  readonly text: RawBuilder<unknown>;
  /** The indexed expression: the value when it is a JSON string, else NULL. */
  readonly string: RawBuilder<unknown>;
  readonly json: RawBuilder<unknown>;
  private readonly type: RawBuilder<unknown>;

  constructor(
    private readonly dialect: SqlDialect,
    name: string,
  ) {
    this.text = attributeTextExpression(dialect, name);
    this.string = attributeStringExpression(dialect, name);
    if (dialect === 'sqlite') {
      this.type = sql`json_type(${sql.ref('devices.attributes')}, ${sql.lit(`$.${name}`)})`;
      this.json = this.type;
    } else {
      this.json = sql`(${sql.ref('devices.attributes')}->${sql.lit(name)})`;
      this.type = sql`jsonb_typeof(${this.json})`;
    }
  }

  isString(): Sql {
    return this.dialect === 'sqlite' ? sql`${this.type} = 'text'` : sql`${this.type} = 'string'`;
  }

  private isNumber(): Sql {
    return this.dialect === 'sqlite'
      ? sql`${this.type} in ('integer', 'real')`
      : sql`${this.type} = 'number'`;
  }

  /** The value as a number, NULL for any other type (never a cast error on PostgreSQL). */
  private number(): RawBuilder<unknown> {
    return this.dialect === 'sqlite'
      ? this.text
      : sql`(case when ${this.isNumber()} then (${this.text})::numeric end)`;
  }

  private numberParam(v: number): RawBuilder<unknown> {
    return this.dialect === 'sqlite' ? sql`${v}` : sql`cast(${v} as numeric)`;
  }

  compare(op: Exclude<CompareOperator, '!='>, v: FleetQueryValue): Sql {
    const o = sql.raw(op);
    if (typeof v === 'string') {
      // The indexed expression is NULL for anything but a JSON string, so it alone is exact.
      if (op === '=') return sql`${this.string} = ${v}`;
      const left = this.dialect === 'postgres' ? sql`${this.text} collate "C"` : this.text;
      return sql`(${this.isString()} and ${left} ${o} ${v})`;
    }
    if (typeof v === 'number') {
      return this.dialect === 'sqlite'
        ? sql`(${this.isNumber()} and ${this.text} ${o} ${v})`
        : sql`${this.number()} ${o} ${this.numberParam(v)}`;
    }
    if (op !== '=') throw queryInvalid('true and false compare only with = and !=');
    return this.boolean([v]);
  }

  in(values: FleetQueryValue[]): Sql {
    const strings = values.filter((v): v is string => typeof v === 'string');
    const numbers = values.filter((v): v is number => typeof v === 'number');
    const booleans = values.filter((v): v is boolean => typeof v === 'boolean');
    const parts: Sql[] = [];
    if (strings.length > 0) {
      parts.push(sql<SqlBool>`${this.string} in (${sql.join(strings)})`);
    }
    if (numbers.length > 0) {
      parts.push(
        this.dialect === 'sqlite'
          ? sql`(${this.isNumber()} and ${this.text} in (${sql.join(numbers)}))`
          : sql`${this.number()} in (${sql.join(numbers.map((n) => this.numberParam(n)))})`,
      );
    }
    if (booleans.length > 0) parts.push(this.boolean(booleans));
    return or(parts);
  }

  private boolean(values: boolean[]): Sql {
    const params = sql.join([...new Set(values)].map(String));
    return this.dialect === 'sqlite'
      ? sql`${this.type} in (${params})`
      : sql`(${this.type} = 'boolean' and ${this.text} in (${params}))`;
  }
}

function or(parts: Sql[]): Sql {
  if (parts.length === 1) return parts[0]!;
  return sql<SqlBool>`(${sql.join(parts, sql` or `)})`;
}

/**
 * Negation that treats "unknown" as false: a comparison with a missing attribute or a NULL column is
 * NULL in SQL, and `not NULL` is NULL again, which would make `not (x = 1)` skip devices without `x`.
 * `is not true` makes every negated condition the exact complement of the condition.
 */
function not(e: Sql): Sql {
  return sql<SqlBool>`(${e}) is not true`;
}
