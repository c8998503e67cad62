import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DIALECTS, rejectionOf, useTestStorage } from '../test-support/databases.js';
import { FleetRegistry } from './registry.js';

const rejection = rejectionOf;

describe.each(DIALECTS)('fleet registry on %s', (dialect) => {
  const t = useTestStorage(dialect);
  let fleet: FleetRegistry;

  beforeAll(() => {
    fleet = new FleetRegistry(t.storage);
  });
  beforeEach(async () => {
    const db = t.storage.db;
    await db.deleteFrom('device_group_members').execute();
    await db.updateTable('device_groups').set({ parent_id: null }).execute();
    await db.deleteFrom('device_groups').execute();
    await db.deleteFrom('devices').execute();
    await db.deleteFrom('hardware_revisions').execute();
    await db.deleteFrom('device_models').execute();
    await fleet.models.create(db, {
      id: 'DW100',
      name: 'Door sensor',
      hardwareRevisions: [{ revision: 'rev-a' }, { revision: 'rev-b' }],
    });
  });

  describe('models', () => {
    it('creates models with revisions, defaults the name and refuses duplicates', async () => {
      const m = await fleet.models.create(t.storage.db, { id: 'GW1' });
      expect(m).toMatchObject({ id: 'GW1', name: 'GW1', description: '', hardwareRevisions: [] });
      expect((await rejection(fleet.models.create(t.storage.db, { id: 'GW1' }))).code).toBe('CONFLICT');
      const dup = await rejection(
        fleet.models.create(t.storage.db, {
          id: 'GW2',
          hardwareRevisions: [{ revision: 'a' }, { revision: 'a' }],
        }),
      );
      expect(dup.errors[0]).toMatchObject({ field: 'hardwareRevisions.1.revision' });
      expect((await fleet.models.list(t.storage.db)).map((x) => x.id)).toEqual(['DW100', 'GW1']);
    });

    it('refuses deleting a model or revision in use, with what to do', async () => {
      await fleet.devices.create(t.storage.db, { model: 'DW100', hardwareRevision: 'rev-a' });
      const e = await rejection(fleet.models.delete(t.storage.db, 'DW100'));
      expect(e.code).toBe('CONFLICT');
      expect(e.message).toContain('used by 1 device');
      const r = await rejection(fleet.models.removeRevision(t.storage.db, 'DW100', 'rev-a'));
      expect(r.code).toBe('CONFLICT');
      const m = await fleet.models.removeRevision(t.storage.db, 'DW100', 'rev-b');
      expect(m.hardwareRevisions.map((x) => x.revision)).toEqual(['rev-a']);
      expect((await rejection(fleet.models.removeRevision(t.storage.db, 'DW100', 'rev-x'))).code).toBe(
        'NOT_FOUND',
      );
    });
  });

  describe('devices', () => {
    it('generates ids, checks the model, revision and serial', async () => {
      const d = await fleet.devices.create(t.storage.db, { model: 'DW100', serial: 'SN1' });
      expect(d.id).toMatch(/^d-[a-z2-7]{20}$/);
      expect(d.status).toBe('pending');
      const noModel = await rejection(fleet.devices.create(t.storage.db, { model: 'NOPE' }));
      expect(noModel).toMatchObject({ code: 'VALIDATION', errors: [{ field: 'model' }] });
      const noRev = await rejection(
        fleet.devices.create(t.storage.db, { model: 'DW100', hardwareRevision: 'rev-z' }),
      );
      expect(noRev.errors[0]?.field).toBe('hardwareRevision');
      const serial = await rejection(fleet.devices.create(t.storage.db, { model: 'DW100', serial: 'SN1' }));
      expect(serial.code).toBe('CONFLICT');
      expect(serial.message).toContain(d.id);
      await fleet.models.create(t.storage.db, { id: 'OTHER' });
      // serials are unique per model only
      await fleet.devices.create(t.storage.db, { model: 'OTHER', serial: 'SN1' });
      const dupId = await rejection(fleet.devices.create(t.storage.db, { id: d.id, model: 'DW100' }));
      expect(dupId.code).toBe('CONFLICT');
    });

    it('changes status in one place: statusChangedAt moves only on a change and hooks run', async () => {
      const seen: string[] = [];
      fleet.devices.onStatusChange(async (_db, c) => {
        seen.push(`${c.deviceId}:${c.from}->${c.to}`);
      });
      const d = await fleet.devices.create(t.storage.db, { id: 'dev-1', model: 'DW100' });
      await new Promise((r) => setTimeout(r, 5));
      const same = await fleet.devices.update(t.storage.db, 'dev-1', { status: 'pending' });
      expect(same.status).toBeNull();
      expect(same.device.statusChangedAt).toBe(d.statusChangedAt);
      const changed = await fleet.devices.update(t.storage.db, 'dev-1', { status: 'active' });
      expect(changed.status).toMatchObject({ from: 'pending', to: 'active' });
      expect(changed.device.statusChangedAt > d.statusChangedAt).toBe(true);
      const attrOnly = await fleet.devices.update(t.storage.db, 'dev-1', { attributes: { floor: 2 } });
      expect(attrOnly.device.statusChangedAt).toBe(changed.device.statusChangedAt);
      expect(seen).toEqual(['dev-1:pending->active']);
    });

    it('merges attributes as RFC 7396 merge patches', async () => {
      await fleet.devices.create(t.storage.db, {
        id: 'dev-m',
        model: 'DW100',
        attributes: { region: 'eu', floor: 3, outdoor: false },
      });
      const r = await fleet.devices.update(t.storage.db, 'dev-m', {
        attributes: { floor: 4, outdoor: null, rack: 'r1' },
      });
      expect(r.device.attributes).toEqual({ region: 'eu', floor: 4, rack: 'r1' });
      expect(r.changed).toEqual(['attributes']);
      const none = await fleet.devices.update(t.storage.db, 'dev-m', { attributes: { absent: null } });
      expect(none.changed).toEqual([]);
    });

    it('pages through a filtered list by id, each device exactly once', async () => {
      for (let i = 0; i < 25; i++) {
        await fleet.devices.create(t.storage.db, {
          id: `p-${String(i).padStart(2, '0')}`,
          model: 'DW100',
          attributes: { even: i % 2 === 0 },
        });
      }
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await fleet.devices.list(t.storage.db, {
          query: 'attributes.even = true',
          limit: 4,
          cursor,
          count: true,
        });
        expect(page.total).toBe(13);
        seen.push(...page.items.map((d) => d.id));
        cursor = page.nextCursor ?? undefined;
        pages++;
      } while (cursor);
      expect(pages).toBe(4);
      expect(seen).toEqual([...new Set(seen)]);
      expect(seen).toHaveLength(13);
      const bad = await rejection(fleet.devices.list(t.storage.db, { limit: 5, cursor: 'garbage' }));
      expect(bad.errors[0]?.field).toBe('query.cursor');
    });

    it('deletes a device with its memberships', async () => {
      await fleet.groups.create(t.storage.db, { id: 'g1' });
      await fleet.devices.create(t.storage.db, { id: 'dev-del', model: 'DW100', groups: ['g1'] });
      expect((await fleet.devices.get(t.storage.db, 'dev-del')).groups).toEqual(['g1']);
      await fleet.devices.delete(t.storage.db, 'dev-del');
      const left = await t.storage.db.selectFrom('device_group_members').selectAll().execute();
      expect(left).toEqual([]);
      expect((await rejection(fleet.devices.get(t.storage.db, 'dev-del'))).code).toBe('NOT_FOUND');
    });
  });

  describe('groups', () => {
    it('builds a static hierarchy and refuses cycles, dynamic parents and deleting parents', async () => {
      await fleet.groups.create(t.storage.db, { id: 'eu' });
      await fleet.groups.create(t.storage.db, { id: 'berlin', parentId: 'eu' });
      await fleet.groups.create(t.storage.db, { id: 'floor-1', parentId: 'berlin' });
      const cycle = await rejection(fleet.groups.update(t.storage.db, 'eu', { parentId: 'floor-1' }));
      expect(cycle.code).toBe('CONFLICT');
      expect((await rejection(fleet.groups.update(t.storage.db, 'eu', { parentId: 'eu' }))).code).toBe(
        'CONFLICT',
      );
      await fleet.groups.create(t.storage.db, { id: 'dyn', query: 'status = "active"' });
      const dynParent = await rejection(fleet.groups.create(t.storage.db, { id: 'x', parentId: 'dyn' }));
      expect(dynParent.code).toBe('CONFLICT');
      const missingParent = await rejection(fleet.groups.create(t.storage.db, { id: 'x', parentId: 'nope' }));
      expect(missingParent.errors[0]?.field).toBe('parentId');
      const del = await rejection(fleet.groups.delete(t.storage.db, 'berlin'));
      expect(del.code).toBe('CONFLICT');
      expect(del.message).toContain('floor-1');
      await fleet.groups.delete(t.storage.db, 'floor-1');
      await fleet.groups.delete(t.storage.db, 'berlin');
    });

    it('stores dynamic queries in canonical form and refuses bad or circular ones', async () => {
      const g = await fleet.groups.create(t.storage.db, {
        id: 'eu-active',
        query: 'attributes.region = \'eu\'   AND status = "active"',
      });
      expect(g).toMatchObject({ kind: 'dynamic', query: 'attributes.region = "eu" and status = "active"' });
      await expect(fleet.groups.create(t.storage.db, { id: 'bad', query: 'model = ' })).rejects.toMatchObject(
        {
          code: 'QUERY_SYNTAX',
        },
      );
      const self = await rejection(
        fleet.groups.create(t.storage.db, { id: 'selfish', query: 'group = "selfish"' }),
      );
      expect(self.code).toBe('CONFLICT');
      await fleet.groups.create(t.storage.db, { id: 'a', query: 'group = "eu-active"' });
      const loop = await rejection(fleet.groups.update(t.storage.db, 'eu-active', { query: 'group = "a"' }));
      expect(loop.code).toBe('CONFLICT');
      expect(loop.message).toContain('circular');
      const referenced = await rejection(fleet.groups.delete(t.storage.db, 'eu-active'));
      expect(referenced.code).toBe('CONFLICT');
      expect(referenced.message).toContain('a');
      const unknown = await rejection(
        fleet.groups.create(t.storage.db, { id: 'u', query: 'group = "ghost"' }),
      );
      expect(unknown.code).toBe('QUERY_INVALID');
      await fleet.groups.create(t.storage.db, { id: 'st' });
      expect(
        (await rejection(fleet.groups.update(t.storage.db, 'st', { query: 'status = "active"' }))).code,
      ).toBe('CONFLICT');
    });

    it('lists members of a group including descendants and dynamic groups below it', async () => {
      await fleet.groups.create(t.storage.db, { id: 'eu' });
      await fleet.groups.create(t.storage.db, { id: 'berlin', parentId: 'eu' });
      await fleet.groups.create(t.storage.db, {
        id: 'eu-floor9',
        parentId: 'eu',
        query: 'attributes.floor = 9',
      });
      await fleet.devices.create(t.storage.db, { id: 'a', model: 'DW100', groups: ['eu'] });
      await fleet.devices.create(t.storage.db, { id: 'b', model: 'DW100', groups: ['berlin'] });
      await fleet.devices.create(t.storage.db, { id: 'c', model: 'DW100', attributes: { floor: 9 } });
      await fleet.devices.create(t.storage.db, { id: 'd', model: 'DW100' });
      const ids = async (g: string) =>
        (await fleet.groups.devicesOf(t.storage.db, g, { limit: 100 })).items.map((x) => x.id);
      expect(await ids('eu')).toEqual(['a', 'b', 'c']);
      expect(await ids('berlin')).toEqual(['b']);
      expect(await ids('eu-floor9')).toEqual(['c']);

      const added = await fleet.groups.addMembers(t.storage.db, 'berlin', ['d', 'b', 'd']);
      expect(added).toEqual({ groupId: 'berlin', added: 1, alreadyMembers: 1 });
      expect(await ids('berlin')).toEqual(['b', 'd']);
      const missing = await rejection(fleet.groups.addMembers(t.storage.db, 'berlin', ['a', 'ghost']));
      expect(missing.errors).toEqual([{ field: 'deviceIds.1', message: 'device ghost does not exist' }]);
      expect((await rejection(fleet.groups.addMembers(t.storage.db, 'eu-floor9', ['a']))).code).toBe(
        'CONFLICT',
      );
      await fleet.groups.removeMember(t.storage.db, 'berlin', 'd');
      expect((await rejection(fleet.groups.removeMember(t.storage.db, 'berlin', 'd'))).code).toBe(
        'NOT_FOUND',
      );
    });
  });
});
