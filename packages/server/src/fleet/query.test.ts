import { CompiledQuery, sql } from 'kysely';
import { beforeAll, describe, expect, it } from 'vitest';
import { SharedError } from '@rampart/shared/errors';
import type { FleetQueryNode } from '@rampart/shared/fleet-query';
import { RampartError } from '../errors.js';
import type { Storage } from '../storage/index.js';
import { DIALECTS, useTestStorage } from '../test-support/databases.js';
import {
  attributeIndexName,
  createAttributeIndex,
  dropAttributeIndex,
  listAttributeIndexes,
} from './attribute-indexes.js';
import {
  compileFleetQuery,
  compileGroupFilter,
  groupsOfDevice,
  groupsOfDevices,
  validateGroupChange,
} from './query.js';

const T0 = '2024-01-01T00:00:00.000Z';

interface DeviceSeed {
  id: string;
  model: string;
  rev: string | null;
  serial: string | null;
  status: string;
  created: string;
  attributes: Record<string, string | number | boolean>;
}

const DEVICES: DeviceSeed[] = [
  {
    id: 'd1',
    model: 'DW100',
    rev: 'A',
    serial: 'SN%1',
    status: 'active',
    created: '2024-01-10T00:00:00.000Z',
    attributes: { region: 'eu', battery: 80, beta: true, fw: '1.2.0', flag: false, path: 'a*b' },
  },
  {
    id: 'd2',
    model: 'DW100',
    rev: 'B',
    serial: 'SN_2',
    status: 'active',
    created: '2024-03-01T12:00:00.000Z',
    attributes: { region: 'us', battery: 15.5, beta: false, fw: '1.10.0', flag: true, path: 'axb' },
  },
  {
    id: 'd3',
    model: 'DW200',
    rev: 'A',
    serial: 'SNx3',
    status: 'pending',
    created: '2024-05-01T00:00:00.000Z',
    attributes: { region: 'eu', battery: '80', flag: 1, path: '[x]' },
  },
  {
    id: 'd4',
    model: 'DW200',
    rev: null,
    serial: null,
    status: 'disabled',
    created: '2024-06-15T08:30:00.000Z',
    attributes: {},
  },
  {
    id: 'd5',
    model: 'DW100',
    rev: null,
    serial: 'SNab',
    status: 'quarantined',
    created: '2025-01-01T00:00:00.000Z',
    attributes: { region: 'EU', beta: 'true', flag: '1', 'fw-version': 'x', battery: -3 },
  },
  {
    id: 'd6',
    model: 'DW200',
    rev: 'A',
    serial: 'SNZ9',
    status: 'active',
    created: '2025-02-01T00:00:00.000Z',
    attributes: { Region: 'eu', battery: 1e3 },
  },
];
const ALL = DEVICES.map((d) => d.id);

/** id, parent, query (null: static), direct static members */
const GROUPS: [string, string | null, string | null, string[]][] = [
  ['eu', null, null, ['d1']],
  ['eu-north', 'eu', null, ['d3']],
  ['eu-active', 'eu', 'attributes.region = "eu" and status = "active"', []],
  ['low-battery', null, 'attributes.battery < 20', []],
  ['lab', null, 'group = "low-battery" or serial = "SNab"', []],
  ['us', null, null, ['d2']],
  ['empty', null, null, []],
  ['c1', null, 'group = "c2"', []],
  ['c2', null, 'group = "c3" or model = "DW100"', []],
  ['c3', null, 'group = "c1"', []],
  ['self', null, null, ['d4']],
  ['self-dyn', 'self', 'group = "self"', []],
  ['broken', null, 'model =', []],
];

async function seed(storage: Storage): Promise<void> {
  const { db } = storage;
  await db
    .insertInto('device_models')
    .values(
      ['DW100', 'DW200'].map((id) => ({ id, name: id, description: '', created_at: T0, updated_at: T0 })),
    )
    .execute();
  await db
    .insertInto('hardware_revisions')
    .values([
      { model_id: 'DW100', revision: 'A', description: '', created_at: T0 },
      { model_id: 'DW100', revision: 'B', description: '', created_at: T0 },
      { model_id: 'DW200', revision: 'A', description: '', created_at: T0 },
    ])
    .execute();
  await db
    .insertInto('devices')
    .values(
      DEVICES.map((d) => ({
        id: d.id,
        model_id: d.model,
        hardware_revision: d.rev,
        serial: d.serial,
        attributes: JSON.stringify(d.attributes),
        status: d.status,
        created_at: d.created,
        updated_at: d.created,
        status_changed_at: d.created,
      })),
    )
    .execute();
  for (const [id, parent, query, members] of GROUPS) {
    await db
      .insertInto('device_groups')
      .values({ id, name: id, description: '', parent_id: parent, query, created_at: T0, updated_at: T0 })
      .execute();
    for (const device of members) {
      await db
        .insertInto('device_group_members')
        .values({ group_id: id, device_id: device, added_at: T0 })
        .execute();
    }
  }
}

describe.each(DIALECTS)('fleet queries on %s', (dialect) => {
  const t = useTestStorage(dialect);
  let storage: Storage;

  beforeAll(async () => {
    storage = t.storage;
    await seed(storage);
  });

  async function ids(query: string | FleetQueryNode): Promise<string[]> {
    const filter = await compileFleetQuery(storage.db, storage.dialect, query);
    const rows = await storage.db.selectFrom('devices').select('id').where(filter).orderBy('id').execute();
    return rows.map((r) => r.id);
  }

  async function refusal(query: string | FleetQueryNode): Promise<RampartError> {
    const err = await compileFleetQuery(storage.db, storage.dialect, query).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RampartError);
    expect((err as RampartError).code).toBe('QUERY_INVALID');
    expect((err as RampartError).errors).toEqual([{ field: 'query', message: (err as Error).message }]);
    return err as RampartError;
  }

  const without = (...excluded: string[]) => ALL.filter((id) => !excluded.includes(id));

  it('runs the documented example', async () => {
    expect(await ids('model = "DW100" and attributes.region = "eu" and status = "active"')).toEqual(['d1']);
  });

  it.each([
    ['id = "d2"', ['d2']],
    ['id in ("d1", "d3", "nope")', ['d1', 'd3']],
    ['id != "d2"', without('d2')],
    ['model = "DW200"', ['d3', 'd4', 'd6']],
    ['model not in ("DW200")', ['d1', 'd2', 'd5']],
    ['hardwareRevision = "A"', ['d1', 'd3', 'd6']],
    ['hardwareRevision != "A"', ['d2', 'd4', 'd5']],
    ['hardwareRevision exists', ['d1', 'd2', 'd3', 'd6']],
    ['hardwareRevision not exists', ['d4', 'd5']],
    ['serial not exists', ['d4']],
    ['serial not in ("SN%1")', without('d1')],
    ['status = "active"', ['d1', 'd2', 'd6']],
    ['status != "active"', ['d3', 'd4', 'd5']],
    ['status in ("pending", "disabled")', ['d3', 'd4']],
    ['status not in ("pending", "disabled")', ['d1', 'd2', 'd5', 'd6']],
  ])('device fields: %s', async (query, expected) => {
    expect(await ids(query)).toEqual(expected);
  });

  it.each([
    // Text orders by code point in both databases: "Z" sorts before "a".
    ['serial < "SNa"', ['d1', 'd2', 'd6']],
    ['serial >= "SNa"', ['d3', 'd5']],
    ['id > "d4"', ['d5', 'd6']],
    ['id <= "d2"', ['d1', 'd2']],
    ['createdAt >= "2024-03-01T12:00:00Z"', ['d2', 'd3', 'd4', 'd5', 'd6']],
    ['createdAt > "2024-03-01T12:00:00Z"', ['d3', 'd4', 'd5', 'd6']],
    ['createdAt < "2024-03-01T13:00+01:00"', ['d1']],
    ['createdAt <= "2024-03-01 12:00"', ['d1', 'd2']],
    ['createdAt = "2024-05-01"', ['d3']],
    ['createdAt in ("2024-05-01", "2025-01-01T00:00:00.000Z")', ['d3', 'd5']],
    ['createdAt >= "2025-01-01" or updatedAt < "2024-02-01"', ['d1', 'd5', 'd6']],
    ['statusChangedAt < "2024-06-15T08:30:00.001Z" and statusChangedAt > "2024-06-15T08:29:59.999Z"', ['d4']],
    ['createdAt like "2024-0*"', ['d1', 'd2', 'd3', 'd4']],
  ])('ordering and times: %s', async (query, expected) => {
    expect(await ids(query)).toEqual(expected);
  });

  it.each([
    ['attributes.region = "eu"', ['d1', 'd3']],
    ['attributes.Region = "eu"', ['d6']],
    ['attributes.region in ("eu", "EU")', ['d1', 'd3', 'd5']],
    ['attributes.region != "eu"', ['d2', 'd4', 'd5', 'd6']],
    ['not attributes.region = "eu"', ['d2', 'd4', 'd5', 'd6']],
    ['attributes.region not in ("eu", "us")', ['d4', 'd5', 'd6']],
    ['attributes.region exists', ['d1', 'd2', 'd3', 'd5']],
    ['attributes.region not exists', ['d4', 'd6']],
    ['attributes.fw-version = "x"', ['d5']],
    // Numbers match numbers only; strings match strings only.
    ['attributes.battery = 80', ['d1']],
    ['attributes.battery = "80"', ['d3']],
    ['attributes.battery = 80.0', ['d1']],
    ['attributes.battery > 50', ['d1', 'd6']],
    ['attributes.battery >= 15.5', ['d1', 'd2', 'd6']],
    ['attributes.battery < 20', ['d2', 'd5']],
    ['attributes.battery <= -3', ['d5']],
    ['attributes.battery > -10 and attributes.battery < 1000', ['d1', 'd2', 'd5']],
    ['attributes.battery = 1000', ['d6']],
    ['attributes.battery != 80', without('d1')],
    ['attributes.battery in (80, 15.5, "80")', ['d1', 'd2', 'd3']],
    ['attributes.battery not in (80, -3)', ['d2', 'd3', 'd4', 'd6']],
    ['attributes.battery > "7"', ['d3']],
    ['attributes.region > 5', []],
    // Text comparison, not version comparison: "1.10.0" < "1.2".
    ['attributes.fw > "1.2"', ['d1']],
    ['attributes.fw < "1.2"', ['d2']],
    // Booleans match booleans only: not 1, not "true".
    ['attributes.flag = true', ['d2']],
    ['attributes.flag = false', ['d1']],
    ['attributes.flag = 1', ['d3']],
    ['attributes.flag = "1"', ['d5']],
    ['attributes.flag in (1, true)', ['d2', 'd3']],
    ['attributes.flag in (true, false)', ['d1', 'd2']],
    ['attributes.flag != 1', without('d3')],
    ['attributes.flag != true', without('d2')],
    ['attributes.beta = true', ['d1']],
    ['attributes.beta = "true"', ['d5']],
    ['attributes.beta not in (true, "true")', ['d2', 'd3', 'd4', 'd6']],
    ['attributes.nothing = 1 or attributes.nothing != 1', ALL],
    ['attributes.nothing exists', []],
  ])('attributes: %s', async (query, expected) => {
    expect(await ids(query)).toEqual(expected);
  });

  it.each([
    ['model like "DW*"', ALL],
    ['model like "dw*"', []],
    ['model like "DW?00"', ALL],
    ['model like "DW1"', []],
    ['model like "*1*"', ['d1', 'd2', 'd5']],
    // `%` and `_` in the data are ordinary characters.
    ['serial like "SN%*"', ['d1']],
    ['serial like "SN_?"', ['d2']],
    ['serial like "SN?3"', ['d3']],
    ['serial like "SN??"', ['d1', 'd2', 'd3', 'd5', 'd6']],
    ['serial like "*"', ['d1', 'd2', 'd3', 'd5', 'd6']],
    ['serial not like "SN%*"', without('d1')],
    ['serial like "%"', []],
    ['serial like "SN_"', []],
    // `\` makes `*` and `?` literal; `[` is literal too.
    ['attributes.path like "a\\\\*b"', ['d1']],
    ['attributes.path like "a*b"', ['d1', 'd2']],
    ['attributes.path like "[x]"', ['d3']],
    ['attributes.path like "[*"', ['d3']],
    ['attributes.path like "a?b"', ['d1', 'd2']],
    ['attributes.battery like "8*"', ['d3']],
    ['attributes.region like "E*"', ['d5']],
    ['attributes.region not like "e*"', without('d1', 'd3')],
  ])('like: %s', async (query, expected) => {
    expect(await ids(query)).toEqual(expected);
  });

  it.each([
    ['not (model = "DW100" or status = "pending")', ['d4', 'd6']],
    ['model = "DW100" and not (attributes.region = "eu")', ['d2', 'd5']],
    ['status = "active" or status = "pending" and model = "DW100"', ['d1', 'd2', 'd6']],
    ['(status = "active" or status = "pending") and model = "DW100"', ['d1', 'd2']],
    ['not not attributes.region = "eu"', ['d1', 'd3']],
    ['not (attributes.battery > 50 or attributes.region = "us")', ['d3', 'd4', 'd5']],
  ])('boolean logic: %s', async (query, expected) => {
    expect(await ids(query)).toEqual(expected);
  });

  it.each([
    // eu: its members (d1), members of static child eu-north (d3), dynamic child eu-active (d1).
    ['group = "eu"', ['d1', 'd3']],
    ['group = "eu-north"', ['d3']],
    ['group = "eu-active"', ['d1']],
    ['group != "eu"', ['d2', 'd4', 'd5', 'd6']],
    ['group = "low-battery"', ['d2', 'd5']],
    // lab inlines low-battery.
    ['group = "lab"', ['d2', 'd5']],
    ['group in ("us", "eu-north")', ['d2', 'd3']],
    ['group in ("eu", "lab")', ['d1', 'd2', 'd3', 'd5']],
    ['group not in ("eu", "lab")', ['d4', 'd6']],
    ['group = "empty"', []],
    ['group != "empty"', ALL],
    ['group = "eu" and group = "lab"', []],
    ['group = "eu" and not group = "eu-north"', ['d1']],
  ])('groups: %s', async (query, expected) => {
    expect(await ids(query)).toEqual(expected);
  });

  it('lists the devices of a group', async () => {
    const filter = await compileGroupFilter(storage.db, storage.dialect, 'eu');
    const rows = await storage.db.selectFrom('devices').select('id').where(filter).orderBy('id').execute();
    expect(rows.map((r) => r.id)).toEqual(['d1', 'd3']);
  });

  it('finds the groups of one device by the same rules as group = "G"', async () => {
    // Groups whose expansion fails (cycles, a broken query) are left out of both sides.
    const valid: string[] = [];
    for (const [id] of GROUPS) {
      if (
        await compileGroupFilter(storage.db, storage.dialect, id).then(
          () => true,
          () => false,
        )
      )
        valid.push(id);
    }
    expect(valid).toEqual(['eu', 'eu-north', 'eu-active', 'low-battery', 'lab', 'us', 'empty']);
    for (const device of ALL) {
      const expected: string[] = [];
      for (const g of valid) if ((await ids(`group = "${g}"`)).includes(device)) expected.push(g);
      const found = await groupsOfDevice(storage.db, storage.dialect, device);
      expect(
        found.filter((g) => valid.includes(g)),
        device,
      ).toEqual([...expected].sort());
    }
    // Static membership reaches every ancestor; a matching dynamic child does too.
    expect(await groupsOfDevice(storage.db, storage.dialect, 'd3')).toEqual(['eu', 'eu-north']);
    expect(await groupsOfDevice(storage.db, storage.dialect, 'd1')).toEqual(['eu', 'eu-active']);
    expect(await groupsOfDevice(storage.db, storage.dialect, 'd2')).toEqual(['lab', 'low-battery', 'us']);
    expect(await groupsOfDevice(storage.db, storage.dialect, 'nope')).toEqual([]);
    // All at once, as re-authorization reads them: the same answer per device.
    const all = await groupsOfDevices(storage.db, storage.dialect, [...ALL, 'nope']);
    for (const device of ALL)
      expect(all.get(device) ?? [], device).toEqual(
        await groupsOfDevice(storage.db, storage.dialect, device),
      );
    expect(all.has('nope')).toBe(false);
  });

  it('accepts a parsed query', async () => {
    expect(
      await ids({ type: 'in', field: { kind: 'device', name: 'id' }, values: ['d1', 'd6'], negated: true }),
    ).toEqual(['d2', 'd3', 'd4', 'd5']);
  });

  it('refuses an unknown group, naming it', async () => {
    const err = await refusal('model = "DW100" or group = "nope"');
    expect(err.message).toBe('unknown group "nope"');
    expect((await refusal('group in ("eu", "missing")')).message).toBe('unknown group "missing"');
  });

  it('refuses cycles between dynamic groups', async () => {
    expect((await refusal('group = "c1"')).message).toBe(
      'dynamic group "c1" depends on itself: c1 -> c2 -> c3 -> c1',
    );
    expect((await refusal('group = "c2"')).message).toBe(
      'dynamic group "c2" depends on itself: c2 -> c3 -> c1 -> c2',
    );
    // self-dyn is a child of self and refers to self: expanding self includes self-dyn again.
    expect((await refusal('group = "self"')).message).toBe(
      'dynamic group "self-dyn" depends on itself: self-dyn -> self -> self-dyn',
    );
  });

  it('refuses a dynamic group whose stored query is broken', async () => {
    expect((await refusal('group = "broken"')).message).toBe(
      'the query of dynamic group "broken" is invalid: expected a value after "=" at column 8',
    );
  });

  it('throws a QUERY_SYNTAX error for a syntax error', async () => {
    const err = await compileFleetQuery(storage.db, storage.dialect, 'model = ').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SharedError);
    expect(err).toMatchObject({ code: 'QUERY_SYNTAX', message: 'expected a value after "=" at column 9' });
  });

  it('binds values: injection attempts in values match nothing and change nothing', async () => {
    for (const q of [
      `model = "x' or '1'='1"`,
      `model = "DW100' --"`,
      `attributes.region = "eu'); delete from devices; --"`,
      `attributes.region in ("eu\\" or 1=1 --", "') or ('1'='1")`,
      `serial like "*' or '1'='1"`,
      `attributes.battery like "%' or 1=1 --"`,
      `group = "eu' or 1=1 --"`.replace('eu', 'nope'),
    ]) {
      if (q.startsWith('group')) {
        await refusal(q);
        continue;
      }
      expect(await ids(q)).toEqual([]);
    }
    expect(await ids('id like "*"')).toEqual(ALL);
  });

  it('refuses attribute names that are not identifiers, even in a hand-built tree', async () => {
    for (const name of [`region') or 1=1 --`, `region" or 1=1 --`, 'a.b', '', `x'`]) {
      const err = await refusal({
        type: 'compare',
        field: { kind: 'attribute', name },
        op: '=',
        value: 'eu',
      });
      expect(err.message).toBe(`invalid attribute name "${name}"`);
    }
    await expect(
      compileFleetQuery(storage.db, storage.dialect, `attributes.region') or ('1'='1 = "eu"`),
    ).rejects.toThrow(SharedError);
    expect(await ids('id like "*"')).toEqual(ALL);
  });

  describe('validateGroupChange', () => {
    const check = (change: Parameters<typeof validateGroupChange>[2]) =>
      validateGroupChange(storage.db, storage.dialect, change);

    it('returns the canonical query of a valid dynamic group, null for a static one', async () => {
      await expect(check({ id: 'new', query: 'MODEL="DW100"  AND group = \'eu\'' })).resolves.toBe(
        'model = "DW100" and group = "eu"',
      );
      await expect(check({ id: 'new', parentId: 'eu' })).resolves.toBeNull();
      await expect(check({ id: 'eu-active', parentId: null })).resolves.toBe(
        'attributes.region = "eu" and status = "active"',
      );
    });

    it('refuses a query that refers to the group itself', async () => {
      await expect(check({ id: 'new', query: 'group = "new"' })).rejects.toThrow(
        'dynamic group "new" depends on itself: new -> new',
      );
      await expect(check({ id: 'eu-active', query: 'group = "eu" and status = "active"' })).rejects.toThrow(
        'dynamic group "eu-active" depends on itself: eu-active -> eu -> eu-active',
      );
    });

    it('refuses moving a dynamic group under a group its query depends on', async () => {
      await expect(check({ id: 'lab', parentId: 'low-battery' })).rejects.toThrow(
        'dynamic group "lab" depends on itself: lab -> low-battery -> lab',
      );
      await expect(check({ id: 'new', parentId: 'lab', query: 'group = "lab"' })).rejects.toThrow(
        'dynamic group "new" depends on itself: new -> lab -> new',
      );
    });

    it('refuses a query whose canonical form would be too long to parse again', async () => {
      const compact = Array.from({ length: 400 }, () => 'id=""').join('or ');
      expect(compact.length).toBeLessThanOrEqual(4000);
      await expect(check({ id: 'new', query: compact })).rejects.toMatchObject({
        code: 'QUERY_INVALID',
        message: expect.stringMatching(/^query is too long once normalized: \d+ characters, at most 4000$/),
      });
    });

    it('refuses unknown groups and syntax errors in the new query', async () => {
      await expect(check({ id: 'new', query: 'group = "ghost"' })).rejects.toThrow('unknown group "ghost"');
      await expect(check({ id: 'new', query: 'status = "on"' })).rejects.toMatchObject({
        code: 'QUERY_SYNTAX',
      });
    });

    it('refuses deleting a group that a dynamic group names', async () => {
      await expect(check({ id: 'low-battery', delete: true })).rejects.toMatchObject({
        code: 'CONFLICT',
        message: 'group "low-battery" is named in the query of dynamic group "lab"; change that query first',
      });
      await expect(check({ id: 'us', delete: true })).resolves.toBeNull();
    });
  });

  describe('attribute indexes', () => {
    it('names indexes uniquely and readably', () => {
      expect(attributeIndexName('region')).toBe('devices_attr_region');
      expect(attributeIndexName('Region')).toMatch(/^devices_attr_region_[0-9a-f]{8}$/);
      expect(attributeIndexName('fw-version')).toMatch(/^devices_attr_fw_version_[0-9a-f]{8}$/);
      expect(attributeIndexName('fw_version')).toBe('devices_attr_fw_version');
      expect(attributeIndexName('x'.repeat(64)).length).toBeLessThanOrEqual(63);
      expect(attributeIndexName('x'.repeat(64))).not.toBe(attributeIndexName('x'.repeat(63)));
      expect(() => attributeIndexName(`a'b`)).toThrow(RampartError);
    });

    it('creates, lists and drops indexes, refusing bad names before any DDL', async () => {
      for (const name of [`region'); drop table devices; --`, '1x', 'a b', '', 'x'.repeat(65)]) {
        const err = await createAttributeIndex(storage.db, storage.dialect, name).catch((e: unknown) => e);
        expect(err).toMatchObject({ code: 'VALIDATION', errors: [{ field: 'name' }] });
      }
      await createAttributeIndex(storage.db, storage.dialect, 'fw-version');
      await createAttributeIndex(storage.db, storage.dialect, 'Region');
      await expect(createAttributeIndex(storage.db, storage.dialect, 'Region')).rejects.toMatchObject({
        code: 'CONFLICT',
      });
      expect((await listAttributeIndexes(storage.db)).map((i) => i.name)).toEqual(['Region', 'fw-version']);
      expect(await ids('attributes.fw-version = "x" or attributes.Region = "eu"')).toEqual(['d5', 'd6']);
      await dropAttributeIndex(storage.db, storage.dialect, 'fw-version');
      await dropAttributeIndex(storage.db, storage.dialect, 'Region');
      await expect(dropAttributeIndex(storage.db, storage.dialect, 'Region')).rejects.toMatchObject({
        code: 'NOT_FOUND',
      });
      expect(await listAttributeIndexes(storage.db)).toEqual([]);
      expect(await ids('id like "*"')).toEqual(ALL);
    });

    it('builds an index inside a caller transaction', async () => {
      await storage.db.transaction().execute(async (tx) => {
        await createAttributeIndex(tx, storage.dialect, 'path');
        expect((await listAttributeIndexes(tx)).map((i) => i.name)).toEqual(['path']);
        await dropAttributeIndex(tx, storage.dialect, 'path');
      });
      expect(await listAttributeIndexes(storage.db)).toEqual([]);
    });

    async function plan(text: string, ordered = false): Promise<string> {
      const filter = await compileFleetQuery(storage.db, storage.dialect, text);
      let select = storage.db.selectFrom('devices').selectAll().where(filter);
      if (ordered) select = select.orderBy('id').limit(100);
      const query = select.compile();
      if (dialect === 'sqlite') {
        const result = await storage.db.executeQuery<{ detail: string }>(
          CompiledQuery.raw(`explain query plan ${query.sql}`, [...query.parameters]),
        );
        return result.rows.map((r) => r.detail).join('\n');
      }
      return storage.db.connection().execute(async (conn) => {
        await sql`set enable_seqscan = off`.execute(conn);
        try {
          const result = await conn.executeQuery<{ 'QUERY PLAN': string }>(
            CompiledQuery.raw(`explain ${query.sql}`, [...query.parameters]),
          );
          return result.rows.map((r) => r['QUERY PLAN']).join('\n');
        } finally {
          await sql`reset enable_seqscan`.execute(conn);
        }
      });
    }

    it('is used by string equality and in on the attribute', async () => {
      expect(await plan('attributes.region = "eu"')).not.toContain('devices_attr_region');
      await createAttributeIndex(storage.db, storage.dialect, 'region');
      try {
        expect(await plan('attributes.region = "eu"')).toContain('devices_attr_region');
        expect(await plan('attributes.region in ("eu", "us")')).toContain('devices_attr_region');
        expect(await ids('attributes.region = "eu"')).toEqual(['d1', 'd3']);
        expect(await ids('attributes.region in ("eu", "us")')).toEqual(['d1', 'd2', 'd3']);
        // A page in id order comes straight from the index, without sorting every match.
        const paged = await plan('attributes.region = "eu" and status = "active"', true);
        expect(paged).toContain('devices_attr_region');
        if (dialect === 'sqlite') expect(paged).not.toContain('TEMP B-TREE');
        else expect(paged).not.toMatch(/Sort/);
      } finally {
        await dropAttributeIndex(storage.db, storage.dialect, 'region');
      }
    });
  });
});
