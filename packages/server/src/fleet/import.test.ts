import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DIALECTS, rejectionOf, useTestStorage } from '../test-support/databases.js';
import { sha256Hex } from './import.js';
import { FleetRegistry } from './registry.js';

describe.each(DIALECTS)('device import on %s', (dialect) => {
  const t = useTestStorage(dialect);
  let fleet: FleetRegistry;

  const run = (text: string, format: 'csv' | 'jsonl', dryRun = false) =>
    t.storage.db
      .transaction()
      .execute((tx) => fleet.importer.run(tx, { text, format, sha256: sha256Hex(text), dryRun }));

  const failure = (text: string, format: 'csv' | 'jsonl') => rejectionOf(run(text, format));

  beforeAll(() => {
    fleet = new FleetRegistry(t.storage);
  });
  beforeEach(async () => {
    const db = t.storage.db;
    await db.deleteFrom('device_group_members').execute();
    await db.deleteFrom('device_groups').execute();
    await db.deleteFrom('devices').execute();
    await db.deleteFrom('hardware_revisions').execute();
    await db.deleteFrom('device_models').execute();
    await fleet.models.create(db, { id: 'DW100', hardwareRevisions: [{ revision: 'rev-a' }] });
    await fleet.groups.create(db, { id: 'berlin' });
    await fleet.groups.create(db, { id: 'plant' });
    await fleet.groups.create(db, { id: 'active', query: 'status = "active"' });
  });

  it('imports CSV with typed attribute columns, groups and generated ids', async () => {
    const csv =
      'id,model,hardwareRevision,serial,status,groups,attributes.region,attributes.floor:number,attributes.outdoor:boolean\r\n' +
      'dev-1,DW100,rev-a,SN1,active,berlin;plant,eu,3,true\r\n' +
      ',DW100,,SN2,,,"us, east",-1.5,FALSE\r\n';
    const r = await run(csv, 'csv');
    expect(r).toEqual({ imported: 2, dryRun: false, format: 'csv', sha256: sha256Hex(csv) });
    expect(await fleet.devices.get(t.storage.db, 'dev-1')).toMatchObject({
      hardwareRevision: 'rev-a',
      serial: 'SN1',
      status: 'active',
      groups: ['berlin', 'plant'],
      attributes: { region: 'eu', floor: 3, outdoor: true },
    });
    const other = (await fleet.devices.list(t.storage.db, { limit: 10, query: 'serial = "SN2"' })).items[0];
    expect(other).toMatchObject({
      status: 'pending',
      hardwareRevision: null,
      attributes: { region: 'us, east', floor: -1.5, outdoor: false },
    });
    expect(other?.id).toMatch(/^d-[a-z2-7]{20}$/);
  });

  it('imports JSON lines, ignoring blank lines; a dry run writes nothing', async () => {
    const jsonl =
      '{"id":"j-1","model":"DW100","attributes":{"region":"eu"},"groups":["berlin"]}\n\n' +
      '{"model":"DW100","serial":"S-9","status":"disabled"}\n';
    expect(await run(jsonl, 'jsonl', true)).toMatchObject({ imported: 2, dryRun: true });
    expect((await fleet.devices.list(t.storage.db, { limit: 10, count: true })).total).toBe(0);
    expect(await run(jsonl, 'jsonl')).toMatchObject({ imported: 2, dryRun: false, format: 'jsonl' });
    expect((await fleet.devices.get(t.storage.db, 'j-1')).groups).toEqual(['berlin']);
  });

  it('reports every bad row of a CSV file and writes nothing', async () => {
    await fleet.devices.create(t.storage.db, { id: 'taken', model: 'DW100', serial: 'OLD' });
    const csv = [
      'id,model,serial,status,groups,attributes.floor:number',
      'ok-1,DW100,S1,active,berlin,1',
      'ok-1,DW100,S2,,,',
      'x-3,NOPE,S3,,,',
      'x-4,DW100,S1,,,',
      'taken,DW100,OLD,,,',
      'x-6,DW100,S6,broken,ghost;active,high',
      'bad id,DW100,S7,,,',
      'x-8,DW100',
    ].join('\n');
    const e = await failure(csv, 'csv');
    expect(e.code).toBe('IMPORT_INVALID');
    expect(e.message).toMatch(/^7 of 8 rows are invalid; nothing was imported/);
    const fields = e.errors.map((x) => x.field);
    expect(fields).toEqual([
      'rows[2].id',
      'rows[3].model',
      'rows[4].serial',
      'rows[5].id',
      'rows[5].serial',
      'rows[6].attributes.floor',
      'rows[6].status',
      'rows[6].groups',
      'rows[6].groups',
      'rows[7].id',
      'rows[8]',
    ]);
    expect(e.errors.find((x) => x.field === 'rows[2].id')?.message).toBe('duplicates the id of row 1');
    expect(e.errors.find((x) => x.field === 'rows[5].id')?.message).toContain('already registered');
    expect((await fleet.devices.list(t.storage.db, { limit: 10, count: true })).total).toBe(1);

    expect(e.errors.filter((x) => x.field.startsWith('rows[6]')).map((x) => x.message)).toEqual([
      'must be a number (got "high")',
      expect.stringContaining('must be one of'),
      'group ghost does not exist',
      'group active is dynamic; devices cannot be added to it',
    ]);
  });

  it('reports bad JSON lines, unknown fields and wrong types', async () => {
    const jsonl = [
      '{"model":"DW100","colour":"red"}',
      '{"model":"DW100",',
      '[1,2]',
      '{"model":"DW100","attributes":{"floor":{"n":1}}}',
      '{"model":"DW100","hardwareRevision":"rev-z"}',
    ].join('\n');
    const e = await failure(jsonl, 'jsonl');
    expect(e.errors.map((x) => x.field)).toEqual([
      'rows[1].colour',
      'rows[2]',
      'rows[3]',
      'rows[4].attributes.floor',
      'rows[5].hardwareRevision',
    ]);
  });

  it('refuses a CSV header with unknown columns or types, and an empty file', async () => {
    const e = await failure('model,colour,attributes.x:date\nDW100,red,1\n', 'csv');
    expect(e.errors.map((x) => x.field)).toEqual(['header[2]', 'header[3]']);
    expect((await failure('id,serial\nx,1\n', 'csv')).errors[0]?.message).toContain('no model column');
    expect((await failure('model\n', 'csv')).code).toBe('IMPORT_INVALID');
    expect((await failure('\n\n', 'jsonl')).code).toBe('IMPORT_INVALID');
  });

  it('imports thousands of devices quickly, in batches', async () => {
    const n = 20_000;
    const lines = ['model,serial,groups,attributes.region,attributes.n:number'];
    for (let i = 0; i < n; i++) lines.push(`DW100,SN-${i},${i % 10 === 0 ? 'berlin' : ''},eu,${i}`);
    const started = performance.now();
    const r = await run(lines.join('\n'), 'csv');
    const seconds = (performance.now() - started) / 1000;
    expect(r.imported).toBe(n);
    expect((await fleet.devices.list(t.storage.db, { limit: 1, count: true })).total).toBe(n);
    const members = await t.storage.db
      .selectFrom('device_group_members')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    expect(Number(members.n)).toBe(n / 10);
    // The throughput target is 5,000 devices/s on a small machine; allow for a loaded test runner.
    expect(n / seconds).toBeGreaterThan(2_500);
  });
});
