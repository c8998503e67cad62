import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from '../../test-support/databases.js';
import { startTestPlatform, type TestPlatform } from '../../test-support/platform.js';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe.each(DIALECTS)('fleet API on %s', (dialect) => {
  let t: TestPlatform;
  const lastAudit = async (action: string, outcome?: 'success' | 'failure' | 'denied') =>
    (
      await t.platform.audit.list({ action, ...(outcome ? { outcome } : {}), newestFirst: true, limit: 1 })
    )[0];

  beforeAll(async () => {
    t = await startTestPlatform(dialect);
  });
  afterAll(async () => {
    await t?.close();
  });

  describe('device models', () => {
    it('creates, lists, shows, updates, revises and deletes a model, auditing each change', async () => {
      const created = await t.call('POST', '/api/v1/device-models', {
        body: { id: 'M1', name: 'Meter', hardwareRevisions: [{ revision: 'a', description: 'first' }] },
      });
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ id: 'M1', name: 'Meter', hardwareRevisions: [{ revision: 'a' }] });
      expect(await lastAudit('model.create')).toMatchObject({
        outcome: 'success',
        target: 'model:M1',
        details: { name: 'Meter', hardwareRevisions: ['a'] },
      });

      const list = await t.call('GET', '/api/v1/device-models');
      expect(list.body.items.map((m: { id: string }) => m.id)).toContain('M1');
      expect((await t.call('GET', '/api/v1/device-models/M1')).body.name).toBe('Meter');

      const patched = await t.call('PATCH', '/api/v1/device-models/M1', {
        body: { description: 'smart meter' },
      });
      expect(patched.body).toMatchObject({ name: 'Meter', description: 'smart meter' });
      expect(await lastAudit('model.update')).toMatchObject({ target: 'model:M1' });

      const rev = await t.call('POST', '/api/v1/device-models/M1/hardware-revisions', {
        body: { revision: 'b' },
      });
      expect(rev.status).toBe(201);
      expect(rev.body.hardwareRevisions.map((r: { revision: string }) => r.revision)).toEqual(['a', 'b']);
      const dupRev = await t.call('POST', '/api/v1/device-models/M1/hardware-revisions', {
        body: { revision: 'b' },
      });
      expect(dupRev.status).toBe(409);
      const removed = await t.call('DELETE', '/api/v1/device-models/M1/hardware-revisions/b');
      expect(removed.body.hardwareRevisions).toHaveLength(1);
      expect(await lastAudit('model.revision.remove')).toMatchObject({
        target: 'model:M1',
        details: { revision: 'b' },
      });

      const dev = await t.call('POST', '/api/v1/devices', { body: { id: 'm1-dev', model: 'M1' } });
      expect(dev.status).toBe(201);
      const inUse = await t.call('DELETE', '/api/v1/device-models/M1');
      expect(inUse.status).toBe(409);
      expect(inUse.body.detail).toContain('used by 1 device');
      expect(await lastAudit('model.delete', 'failure')).toMatchObject({
        target: 'model:M1',
        details: { status: 409, code: 'CONFLICT' },
      });
      await t.call('DELETE', '/api/v1/devices/m1-dev');
      const deleted = await t.call('DELETE', '/api/v1/device-models/M1');
      expect(deleted.status).toBe(200);
      expect((await t.call('GET', '/api/v1/device-models/M1')).status).toBe(404);
    });

    it('answers 400 naming the field, 404 naming the model and 409 on duplicates', async () => {
      const unknown = await t.call('POST', '/api/v1/device-models', { body: { id: 'M2', colour: 'red' } });
      expect(unknown.status).toBe(400);
      expect(unknown.body.errors).toContainEqual({ field: 'colour', message: 'is not a known field' });
      const badId = await t.call('POST', '/api/v1/device-models', { body: { id: 'bad/id' } });
      expect(badId.body.errors[0].field).toBe('id');
      const missing = await t.call('GET', '/api/v1/device-models/NOPE');
      expect(missing.status).toBe(404);
      expect(missing.body.detail).toBe('device model NOPE does not exist');
      await t.call('POST', '/api/v1/device-models', { body: { id: 'M2' } });
      const dup = await t.call('POST', '/api/v1/device-models', { body: { id: 'M2' } });
      expect(dup.status).toBe(409);
      const emptyPatch = await t.call('PATCH', '/api/v1/device-models/M2', { body: {} });
      expect(emptyPatch.status).toBe(400);
    });
  });

  describe('devices', () => {
    beforeAll(async () => {
      await t.call('POST', '/api/v1/device-models', {
        body: { id: 'DW100', hardwareRevisions: [{ revision: 'rev-a' }, { revision: 'rev-b' }] },
      });
      await t.call('POST', '/api/v1/device-groups', { body: { id: 'site-1' } });
    });

    it('registers a device with groups and shows them; generated ids follow the pattern', async () => {
      const r = await t.call('POST', '/api/v1/devices', {
        body: {
          id: 'dev-1',
          model: 'DW100',
          hardwareRevision: 'rev-a',
          serial: 'SN-1',
          attributes: { region: 'eu', floor: 3, outdoor: false },
          groups: ['site-1'],
        },
      });
      expect(r.status).toBe(201);
      expect(r.body).toMatchObject({ id: 'dev-1', status: 'pending', groups: ['site-1'] });
      expect(await lastAudit('device.create')).toMatchObject({
        outcome: 'success',
        target: 'device:dev-1',
        details: { model: 'DW100', serial: 'SN-1', status: 'pending', groups: ['site-1'] },
      });
      const shown = await t.call('GET', '/api/v1/devices/dev-1');
      expect(shown.body).toMatchObject({
        attributes: { region: 'eu', floor: 3, outdoor: false },
        groups: ['site-1'],
      });
      const generated = await t.call('POST', '/api/v1/devices', { body: { model: 'DW100' } });
      expect(generated.body.id).toMatch(/^d-[a-z2-7]{20}$/);
    });

    it('refuses bad devices with 400/409 naming the field, and audits the failure', async () => {
      const cases: [unknown, string][] = [
        [{ model: 'DW100', colour: 'red' }, 'colour'],
        [{ model: 42 }, 'model'],
        [{ id: 'has space', model: 'DW100' }, 'id'],
        [{ model: 'DW100', attributes: { floor: { n: 1 } } }, 'attributes.floor'],
        [{ model: 'DW100', status: 'zombie' }, 'status'],
        [{ model: 'NOPE' }, 'model'],
        [{ model: 'DW100', hardwareRevision: 'rev-z' }, 'hardwareRevision'],
        [{ model: 'DW100', groups: ['ghost'] }, 'groups.0'],
      ];
      for (const [body, field] of cases) {
        const r = await t.call('POST', '/api/v1/devices', { body });
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(r.body.errors[0].field, JSON.stringify(body)).toBe(field);
      }
      expect(await lastAudit('device.create', 'failure')).toMatchObject({
        details: { status: 400, code: 'VALIDATION' },
      });
      const dupSerial = await t.call('POST', '/api/v1/devices', {
        body: { id: 'dev-x', model: 'DW100', serial: 'SN-1' },
      });
      expect(dupSerial.status).toBe(409);
      expect(dupSerial.body.detail).toContain('serial SN-1');
      expect(await lastAudit('device.create', 'failure')).toMatchObject({
        target: 'device:dev-x',
        details: { status: 409, code: 'CONFLICT' },
      });
      const badParam = await t.call('GET', '/api/v1/devices/bad%20id');
      expect(badParam.status).toBe(400);
      expect(badParam.body.errors[0].field).toBe('params.id');
      const missing = await t.call('PATCH', '/api/v1/devices/ghost', { body: { status: 'active' } });
      expect(missing.status).toBe(404);
      expect(missing.body.detail).toBe('device ghost does not exist');
      expect(await lastAudit('device.update', 'failure')).toMatchObject({
        target: 'device:ghost',
        details: { status: 404, code: 'NOT_FOUND' },
      });
    });

    it('applies attributes as a merge patch and audits status changes with from/to', async () => {
      await t.call('POST', '/api/v1/devices', {
        body: { id: 'dev-p', model: 'DW100', attributes: { region: 'eu', floor: 3, room: 'a' } },
      });
      const before = (await t.call('GET', '/api/v1/devices/dev-p')).body;
      const r = await t.call('PATCH', '/api/v1/devices/dev-p', {
        body: { attributes: { floor: 4, room: null, rack: 'r9' }, status: 'active' },
      });
      expect(r.status).toBe(200);
      expect(r.body.attributes).toEqual({ region: 'eu', floor: 4, rack: 'r9' });
      expect(r.body.status).toBe('active');
      expect(r.body.statusChangedAt >= before.statusChangedAt).toBe(true);
      expect(await lastAudit('device.status')).toMatchObject({
        outcome: 'success',
        target: 'device:dev-p',
        details: { from: 'pending', to: 'active' },
      });
      expect(await lastAudit('device.update')).toMatchObject({
        target: 'device:dev-p',
        details: { changed: ['attributes', 'status'], status: 'active' },
      });
      const statusEntries = await t.platform.audit.list({ action: 'device.status', target: 'device:dev-p' });
      await t.call('PATCH', '/api/v1/devices/dev-p', { body: { status: 'active', serial: 'P-1' } });
      expect(await t.platform.audit.list({ action: 'device.status', target: 'device:dev-p' })).toHaveLength(
        statusEntries.length,
      );
      const nullAttrs = await t.call('PATCH', '/api/v1/devices/dev-p', { body: { attributes: null } });
      expect(nullAttrs.status).toBe(400);
      expect(nullAttrs.body.errors[0].field).toBe('attributes');
    });

    it('lists by fleet query with keyset pagination covering every device exactly once', async () => {
      for (let i = 0; i < 23; i++) {
        await t.call('POST', '/api/v1/devices', {
          body: { id: `page-${String(i).padStart(2, '0')}`, model: 'DW100', attributes: { batch: 'pg' } },
        });
      }
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const q: string = `/api/v1/devices?limit=5&count=true&query=${encodeURIComponent('attributes.batch = "pg"')}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
        const page = await t.call('GET', q);
        expect(page.status).toBe(200);
        expect(page.body.total).toBe(23);
        seen.push(...page.body.items.map((d: { id: string }) => d.id));
        cursor = page.body.nextCursor;
      } while (cursor);
      expect(seen).toHaveLength(23);
      expect(new Set(seen).size).toBe(23);
      expect(seen).toEqual([...seen].sort());

      const all = await t.call('GET', '/api/v1/devices?limit=1000');
      expect(all.body.nextCursor).toBeNull();
      expect(all.body.total).toBeUndefined();

      const syntax = await t.call('GET', `/api/v1/devices?query=${encodeURIComponent('model = ')}`);
      expect(syntax.status).toBe(400);
      expect(syntax.body.code).toBe('QUERY_INVALID');
      expect(syntax.body.errors[0].field).toBe('query');
      const badLimit = await t.call('GET', '/api/v1/devices?limit=0');
      expect(badLimit.body.errors[0].field).toBe('query.limit');
      const badCursor = await t.call('GET', '/api/v1/devices?cursor=nonsense');
      expect(badCursor.status).toBe(400);
      expect(badCursor.body.errors[0].field).toBe('query.cursor');
    });

    it('deletes a device with its memberships', async () => {
      await t.call('POST', '/api/v1/devices', {
        body: { id: 'dev-del', model: 'DW100', groups: ['site-1'] },
      });
      const r = await t.call('DELETE', '/api/v1/devices/dev-del');
      expect(r.status).toBe(200);
      expect(r.body.id).toBe('dev-del');
      expect(await lastAudit('device.delete')).toMatchObject({
        target: 'device:dev-del',
        outcome: 'success',
      });
      const members = await t.call('GET', '/api/v1/device-groups/site-1/devices');
      expect(members.body.items.map((d: { id: string }) => d.id)).not.toContain('dev-del');
      expect((await t.call('DELETE', '/api/v1/devices/dev-del')).status).toBe(404);
    });

    it('lets a viewer read but not write', async () => {
      const viewer = await t.tokenFor('viewer');
      expect((await t.call('GET', '/api/v1/devices/dev-1', { token: viewer })).status).toBe(200);
      const r = await t.call('POST', '/api/v1/devices', { token: viewer, body: { model: 'DW100' } });
      expect(r.status).toBe(403);
      expect(r.body.detail).toContain('device:write');
    });
  });

  describe('import', () => {
    beforeAll(async () => {
      await t.call('POST', '/api/v1/device-models', {
        body: { id: 'IMP', hardwareRevisions: [{ revision: 'r1' }] },
      });
      await t.call('POST', '/api/v1/device-groups', { body: { id: 'imp-group' } });
    });

    it('imports a CSV file in one audited transaction', async () => {
      const csv =
        'id,model,hardwareRevision,serial,status,groups,attributes.site,attributes.floor:number,attributes.ok:boolean\n' +
        'imp-1,IMP,r1,C-1,active,imp-group,berlin,1,true\n' +
        'imp-2,IMP,,C-2,,,hamburg,2,false\n';
      const dry = await t.call('POST', '/api/v1/devices/import?dryRun=true', {
        raw: csv,
        contentType: 'text/csv',
      });
      expect(dry.status).toBe(200);
      expect(dry.body).toEqual({ imported: 2, dryRun: true, format: 'csv', sha256: sha256(csv) });
      expect((await t.call('GET', '/api/v1/devices/imp-1')).status).toBe(404);

      const r = await t.call('POST', '/api/v1/devices/import', {
        raw: csv,
        contentType: 'text/csv; charset=utf-8',
      });
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ imported: 2, dryRun: false, format: 'csv', sha256: sha256(csv) });
      expect(await lastAudit('device.import')).toMatchObject({
        outcome: 'success',
        target: 'devices',
        details: { count: 2, format: 'csv', sha256: sha256(csv) },
      });
      expect((await t.call('GET', '/api/v1/devices/imp-1')).body).toMatchObject({
        status: 'active',
        groups: ['imp-group'],
        attributes: { site: 'berlin', floor: 1, ok: true },
      });
    });

    it('imports a JSON-lines file', async () => {
      const jsonl =
        '{"id":"imp-j1","model":"IMP","attributes":{"site":"kiel"}}\n\n{"model":"IMP","serial":"J-2"}\n';
      for (const contentType of ['application/x-ndjson', 'application/jsonl']) {
        const body =
          contentType === 'application/jsonl'
            ? jsonl.replace(/imp-j1/, 'imp-j3').replace('J-2', 'J-4')
            : jsonl;
        const r = await t.call('POST', '/api/v1/devices/import', { raw: body, contentType });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.body).toMatchObject({ imported: 2, format: 'jsonl' });
      }
      expect((await t.call('GET', '/api/v1/devices/imp-j1')).body.attributes).toEqual({ site: 'kiel' });
    });

    it('rejects a bad file row by row and imports nothing', async () => {
      const before = (await t.call('GET', '/api/v1/devices?count=true&limit=1')).body.total;
      const csv = [
        'id,model,serial,groups,attributes.floor:number',
        'imp-ok,IMP,B-1,imp-group,1',
        'imp-1,IMP,B-2,,2',
        'imp-3,GHOST,B-3,,3',
        'imp-4,IMP,B-1,,4',
        'imp-5,IMP,B-5,nowhere,five',
        'imp 6,IMP,B-6,,6',
      ].join('\n');
      const r = await t.call('POST', '/api/v1/devices/import', { raw: csv, contentType: 'text/csv' });
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('IMPORT_INVALID');
      expect(r.body.detail).toContain('5 of 6 rows are invalid');
      expect(r.body.errors).toEqual([
        { field: 'rows[2].id', message: 'device imp-1 is already registered' },
        { field: 'rows[3].model', message: 'device model GHOST does not exist' },
        { field: 'rows[4].serial', message: 'duplicates the serial of row 1 (same model IMP)' },
        { field: 'rows[5].attributes.floor', message: 'must be a number (got "five")' },
        { field: 'rows[5].groups', message: 'group nowhere does not exist' },
        { field: 'rows[6].id', message: expect.stringContaining('must match the pattern') },
      ]);
      expect((await t.call('GET', '/api/v1/devices?count=true&limit=1')).body.total).toBe(before);
      expect((await t.call('GET', '/api/v1/devices/imp-ok')).status).toBe(404);
      expect(await lastAudit('device.import', 'failure')).toMatchObject({
        target: 'devices',
        details: { status: 400, code: 'IMPORT_INVALID' },
      });
    });

    it('refuses other content types and bad query parameters', async () => {
      const json = await t.call('POST', '/api/v1/devices/import', { body: { model: 'IMP' } });
      expect(json.status).toBe(415);
      const xml = await t.call('POST', '/api/v1/devices/import', {
        raw: '<x/>',
        contentType: 'application/xml',
      });
      expect(xml.status).toBe(415);
      const badUtf8 = await t.call('POST', '/api/v1/devices/import', {
        raw: Buffer.from([0x6d, 0x6f, 0x64, 0x65, 0x6c, 0x0a, 0xff, 0xfe]),
        contentType: 'text/csv',
      });
      expect(badUtf8.status).toBe(400);
      expect(badUtf8.body.code).toBe('IMPORT_INVALID');
    });
  });

  describe('groups', () => {
    beforeAll(async () => {
      await t.call('POST', '/api/v1/device-models', { body: { id: 'GRP' } });
      for (const [id, floor] of [
        ['g-a', 1],
        ['g-b', 2],
        ['g-c', 7],
        ['g-d', 7],
      ] as const) {
        await t.call('POST', '/api/v1/devices', { body: { id, model: 'GRP', attributes: { floor } } });
      }
    });

    it('builds a hierarchy; devices of a group include those of groups below it', async () => {
      expect(
        (await t.call('POST', '/api/v1/device-groups', { body: { id: 'europe', name: 'Europe' } })).status,
      ).toBe(201);
      await t.call('POST', '/api/v1/device-groups', { body: { id: 'germany', parentId: 'europe' } });
      await t.call('POST', '/api/v1/device-groups', {
        body: { id: 'floor-7', parentId: 'europe', query: 'model = "GRP" and attributes.floor = 7' },
      });
      const add = await t.call('POST', '/api/v1/device-groups/germany/members', {
        body: { deviceIds: ['g-a', 'g-b'] },
      });
      expect(add.body).toEqual({ groupId: 'germany', added: 2, alreadyMembers: 0 });
      expect(await lastAudit('group.members.add')).toMatchObject({
        target: 'group:germany',
        details: { added: 2, deviceIds: ['g-a', 'g-b'] },
      });
      await t.call('POST', '/api/v1/device-groups/europe/members', { body: { deviceIds: ['g-a'] } });

      const ids = async (g: string, extra = '') =>
        (await t.call('GET', `/api/v1/device-groups/${g}/devices?limit=100${extra}`)).body.items.map(
          (d: { id: string }) => d.id,
        );
      expect(await ids('europe')).toEqual(['g-a', 'g-b', 'g-c', 'g-d']);
      expect(await ids('germany')).toEqual(['g-a', 'g-b']);
      expect(await ids('floor-7')).toEqual(['g-c', 'g-d']);
      expect(await ids('europe', `&query=${encodeURIComponent('attributes.floor < 7')}`)).toEqual([
        'g-a',
        'g-b',
      ]);
      const paged = await t.call('GET', '/api/v1/device-groups/europe/devices?limit=3&count=true');
      expect(paged.body.total).toBe(4);
      expect(paged.body.nextCursor).not.toBeNull();

      expect((await t.call('GET', '/api/v1/devices/g-a')).body.groups).toEqual(['europe', 'germany']);

      const removed = await t.call('DELETE', '/api/v1/device-groups/germany/members/g-b');
      expect(removed.body).toEqual({ groupId: 'germany', deviceId: 'g-b' });
      expect((await t.call('DELETE', '/api/v1/device-groups/germany/members/g-b')).status).toBe(404);
      expect(await ids('germany')).toEqual(['g-a']);
    });

    it('evaluates dynamic groups live and stores their query in canonical form', async () => {
      const g = await t.call('POST', '/api/v1/device-groups', {
        body: { id: 'hot', query: "attributes.floor >= 7   AND model='GRP'" },
      });
      expect(g.status).toBe(201);
      expect(g.body).toMatchObject({ kind: 'dynamic', query: 'attributes.floor >= 7 and model = "GRP"' });
      const ids = async () =>
        (await t.call('GET', '/api/v1/device-groups/hot/devices')).body.items.map(
          (d: { id: string }) => d.id,
        );
      expect(await ids()).toEqual(['g-c', 'g-d']);
      await t.call('PATCH', '/api/v1/devices/g-a', { body: { attributes: { floor: 9 } } });
      expect(await ids()).toEqual(['g-a', 'g-c', 'g-d']);
      const upd = await t.call('PATCH', '/api/v1/device-groups/hot', {
        body: { query: 'attributes.floor = 9' },
      });
      expect(upd.body.query).toBe('attributes.floor = 9');
      expect(await lastAudit('group.update')).toMatchObject({
        target: 'group:hot',
        details: { changed: ['query'], query: 'attributes.floor = 9' },
      });
      expect(await ids()).toEqual(['g-a']);

      const members = await t.call('POST', '/api/v1/device-groups/hot/members', {
        body: { deviceIds: ['g-b'] },
      });
      expect(members.status).toBe(409);
      expect(members.body.detail).toContain('dynamic');
      const bad = await t.call('POST', '/api/v1/device-groups', {
        body: { id: 'broken', query: 'floor = = 1' },
      });
      expect(bad.status).toBe(400);
      expect(bad.body.errors[0].field).toBe('query');
    });

    it('refuses cycles, dynamic parents and deleting a group with children (409)', async () => {
      const cycle = await t.call('PATCH', '/api/v1/device-groups/europe', { body: { parentId: 'germany' } });
      expect(cycle.status).toBe(409);
      expect(await lastAudit('group.update', 'failure')).toMatchObject({
        target: 'group:europe',
        details: { status: 409 },
      });
      const dynParent = await t.call('POST', '/api/v1/device-groups', { body: { id: 'x', parentId: 'hot' } });
      expect(dynParent.status).toBe(409);
      const withChildren = await t.call('DELETE', '/api/v1/device-groups/europe');
      expect(withChildren.status).toBe(409);
      expect(withChildren.body.detail).toContain('germany');
      const moved = await t.call('PATCH', '/api/v1/device-groups/germany', { body: { parentId: null } });
      expect(moved.body.parentId).toBeNull();
      expect((await t.call('DELETE', '/api/v1/device-groups/floor-7')).status).toBe(200);
      expect((await t.call('DELETE', '/api/v1/device-groups/europe')).status).toBe(200);
      expect(await lastAudit('group.delete')).toMatchObject({ target: 'group:europe', outcome: 'success' });
      const list = await t.call('GET', '/api/v1/device-groups');
      expect(list.body.items.map((g: { id: string }) => g.id)).not.toContain('europe');
      expect((await t.call('GET', '/api/v1/device-groups/europe')).status).toBe(404);
    });
  });

  describe('attribute indexes', () => {
    it('creates, lists and drops an index, auditing both', async () => {
      const r = await t.call('POST', '/api/v1/device-attribute-indexes', { body: { name: 'region' } });
      expect(r.status).toBe(201);
      expect(r.body.name).toBe('region');
      expect(await lastAudit('attribute-index.create')).toMatchObject({
        outcome: 'success',
        target: 'attribute-index:region',
      });
      expect(
        (await t.call('POST', '/api/v1/device-attribute-indexes', { body: { name: 'region' } })).status,
      ).toBe(409);
      expect((await t.call('GET', '/api/v1/device-attribute-indexes')).body.items).toEqual([
        { name: 'region', createdAt: r.body.createdAt },
      ]);
      const bad = await t.call('POST', '/api/v1/device-attribute-indexes', { body: { name: 'no spaces' } });
      expect(bad.body.errors[0].field).toBe('name');
      expect((await t.call('DELETE', '/api/v1/device-attribute-indexes/region')).status).toBe(200);
      expect(await lastAudit('attribute-index.delete')).toMatchObject({ target: 'attribute-index:region' });
      const missing = await t.call('DELETE', '/api/v1/device-attribute-indexes/region');
      expect(missing.status).toBe(404);
      expect(await lastAudit('attribute-index.delete', 'failure')).toMatchObject({
        target: 'attribute-index:region',
        details: { status: 404 },
      });
    });
  });

  it('documents every fleet route with a tag, summary and description', async () => {
    const spec = (await t.call('GET', '/openapi.json', { token: null })).body;
    const fleetOps = Object.entries(
      spec.paths as Record<string, Record<string, { tags?: string[] }>>,
    ).flatMap(([path, ops]) =>
      Object.entries(ops)
        .filter(([, op]) => op.tags?.includes('fleet'))
        .map(([method, op]) => ({ path, method, op: op as { summary?: string; description?: string } })),
    );
    expect(fleetOps.length).toBe(30);
    for (const { path, method, op } of fleetOps) {
      expect(op.summary, `${method} ${path}`).toBeTruthy();
      expect(op.description, `${method} ${path}`).not.toMatch(/^Requires permission/);
    }
    expect(Object.keys(spec.paths['/api/v1/devices/import'].post.requestBody.content)).toEqual([
      'text/csv',
      'application/x-ndjson',
      'application/jsonl',
    ]);
  });
});

describe('import body limits', () => {
  it('accepts imports above the general body limit, up to the import limit', async () => {
    const t = await startTestPlatform('sqlite', { 'api.bodyLimit': 4096, 'api.importBodyLimit': 200_000 });
    try {
      await t.call('POST', '/api/v1/device-models', { body: { id: 'BIG' } });
      const rows = (n: number) =>
        ['model,serial', ...Array.from({ length: n }, (_, i) => `BIG,S-${i}`)].join('\n');
      const ok = await t.call('POST', '/api/v1/devices/import', { raw: rows(2000), contentType: 'text/csv' });
      expect(ok.status, JSON.stringify(ok.body)).toBe(200);
      expect(ok.body.imported).toBe(2000);
      const tooBig = await t.call('POST', '/api/v1/devices/import', {
        raw: rows(30_000),
        contentType: 'text/csv',
      });
      expect(tooBig.status).toBe(413);
      expect(tooBig.body.code).toBe('PAYLOAD_TOO_LARGE');
      const json = await t.call('POST', '/api/v1/devices', {
        body: { model: 'BIG', serial: 'x'.repeat(5000) },
      });
      expect(json.status).toBe(413);
    } finally {
      await t.close();
    }
  });
});
