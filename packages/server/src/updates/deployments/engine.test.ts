import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CreateDeploymentBody } from '@rampart/shared/api';
import { DIALECTS, rejectionOf, useTestStorage } from '../../test-support/databases.js';
import { FleetRegistry } from '../../fleet/registry.js';
import { assign, unassign } from '../director/assignments.js';
import type { Executor } from '../../storage/index.js';
import { DeploymentEngine, recordOutcome, type AssignmentSink } from './engine.js';
import { isWindowOpen, parseWindows } from './windows.js';

const RELEASE = 'DW100/fw-2.0.0.bin';
const OTHER = 'DW100/fw-2.1.0.bin';
/** A release for hardware revision B of the DW100 only. */
const REV_B = 'DW100/fw-2.2.0-revb.bin';
const MINUTE = 60_000;

describe('maintenance windows', () => {
  it('opens Mon-Fri 01:00-05:00 in the given zone only', () => {
    const w = parseWindows('Mon-Fri 01:00-05:00 Europe/Berlin');
    // Monday 2025-03-03, Berlin is UTC+1 in March (before the switch).
    expect(isWindowOpen(w, new Date('2025-03-03T00:30:00Z'))).toBe(true); // 01:30 local
    expect(isWindowOpen(w, new Date('2025-03-03T04:00:00Z'))).toBe(false); // 05:00 local: end excluded
    expect(isWindowOpen(w, new Date('2025-03-02T00:30:00Z'))).toBe(false); // Sunday
  });

  it('runs a window past midnight on the day it starts', () => {
    const w = parseWindows('Fri 22:00-02:00 UTC');
    expect(isWindowOpen(w, new Date('2025-03-07T23:00:00Z'))).toBe(true); // Friday night
    expect(isWindowOpen(w, new Date('2025-03-08T01:00:00Z'))).toBe(true); // Saturday early
    expect(isWindowOpen(w, new Date('2025-03-07T01:00:00Z'))).toBe(false); // Friday early: Thursday's
  });

  it('refuses bad windows naming the field', async () => {
    for (const bad of [
      'Mon-Fri 01:00 UTC',
      'Mo 01:00-02:00 UTC',
      'Mon 25:00-02:00 UTC',
      'Mon 01:00-02:00 Mars/Base',
      '',
    ])
      expect(() => parseWindows(bad), bad).toThrow(/window/);
    expect(parseWindows('daily 00:00-00:00 UTC; Sat,Sun 10:00-12:00 UTC')).toHaveLength(2);
  });
});

describe.each(DIALECTS)('deployment engine on %s', (dialect) => {
  const t = useTestStorage(dialect);
  let fleet: FleetRegistry;
  let now: Date;
  let engine: DeploymentEngine;
  const calls: string[] = [];
  const sink: AssignmentSink = {
    async assign(db, deviceId, path, deploymentId, actor) {
      calls.push(`assign ${deviceId} ${deploymentId}`);
      await assign(db, deviceId, path, deploymentId, actor);
    },
    async unassign(db, deviceId, deploymentId) {
      calls.push(`unassign ${deviceId} ${deploymentId}`);
      await unassign(db, deviceId, deploymentId);
    },
  };
  const devices = (n: number, prefix = 'dev') =>
    Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(3, '0')}`);

  const create = (body: Partial<CreateDeploymentBody>) =>
    t.storage.db
      .transaction()
      .execute((tx) =>
        engine.create(tx, { release: RELEASE, target: { group: 'all' }, ...body }, 'token:test'),
      );
  const at = async (minutes: number) => {
    now = new Date(now.getTime() + minutes * MINUTE);
    await engine.tick();
  };
  const stateOf = async (id: number) => (await engine.detail(t.storage.db, id)).devices;
  const assigned = async (id: number) =>
    (await stateOf(id)).filter((d) => d.state === 'assigned').map((d) => d.deviceId);
  const report = (
    id: number,
    deviceId: string,
    outcome: 'committed' | 'rolled-back' | 'failed',
    path = RELEASE,
  ) =>
    recordOutcome(t.storage.db, {
      deviceId,
      deploymentId: String(id),
      path,
      outcome,
      receiptId: `r-${id}-${deviceId}`,
      at: now.toISOString(),
    });
  /** Make these devices the canary (the first rows by sequence), as if the shuffle had chosen them. */
  const pinCanary = async (id: number, canary: string[]) => {
    const rows = await t.storage.db
      .selectFrom('deployment_devices')
      .select('device_id')
      .where('deployment_id', '=', id)
      .orderBy('seq')
      .execute();
    const rest = rows
      .map((r) => r.device_id)
      .filter((dev) => !canary.includes(dev))
      .sort();
    const order = [...canary, ...rest];
    for (const [i, dev] of order.entries())
      await t.storage.db
        .updateTable('deployment_devices')
        .set({ seq: i + 1 })
        .where('deployment_id', '=', id)
        .where('device_id', '=', dev)
        .execute();
  };
  const directorHas = async (db: Executor, deviceId: string) =>
    (
      await db
        .selectFrom('update_assignments')
        .select('deployment_id')
        .where('device_id', '=', deviceId)
        .executeTakeFirst()
    )?.deployment_id ?? null;

  beforeAll(() => {
    fleet = new FleetRegistry(t.storage);
  });

  beforeEach(async () => {
    const db = t.storage.db;
    for (const table of [
      'deployment_events',
      'deployment_devices',
      'deployments',
      'update_assignments',
    ] as const)
      await db.deleteFrom(table).execute();
    await db.deleteFrom('update_releases').execute();
    await db.deleteFrom('update_artifacts').execute();
    await db.deleteFrom('device_group_members').execute();
    await db.deleteFrom('device_groups').execute();
    await db.deleteFrom('devices').execute();
    await db.deleteFrom('hardware_revisions').execute();
    await db.deleteFrom('device_models').execute();
    await fleet.models.create(db, { id: 'DW100' });
    for (const id of devices(20)) await fleet.devices.create(db, { id, model: 'DW100' });
    await fleet.groups.create(db, { id: 'all', query: 'model = "DW100"' });
    await db
      .insertInto('update_artifacts')
      .values({ sha256: 'a'.repeat(64), length: 10, location: 'x', created_at: '2025-01-01T00:00:00.000Z' })
      .execute();
    for (const [path, state, custom] of [
      [RELEASE, 'published', { models: ['DW100'] }],
      [OTHER, 'published', { models: ['DW100'] }],
      ['DW100/fw-3.0.0.bin', 'pending', { models: ['DW100'] }],
      [REV_B, 'published', { models: ['DW100'], hardwareRevisions: ['B'] }],
    ] as const)
      await db
        .insertInto('update_releases')
        .values({
          path,
          role: 'targets',
          name: 'fw',
          version: path,
          sha256: 'a'.repeat(64),
          length: 10,
          first_model: 'DW100',
          release_counter: 1,
          custom: JSON.stringify(custom),
          state,
          signing_request: null,
          created_at: '2025-01-01T00:00:00.000Z',
          created_by: 'test',
        })
        .execute();
    now = new Date('2025-03-03T00:00:00Z'); // a Monday
    calls.length = 0;
    engine = new DeploymentEngine(t.storage.db, t.storage.dialect, sink, () => now, null);
  });

  it('assigns the canary first, then devices at the rate per minute, and completes', async () => {
    const d = await create({ canary: 2, ratePerMinute: 3 });
    expect(d).toMatchObject({ state: 'running', canarySize: 2, counts: { total: 20, pending: 20 } });
    await at(0);
    const canary = await assigned(d.id);
    expect(canary).toHaveLength(2);
    expect(await directorHas(t.storage.db, canary[0]!)).toBe(String(d.id));
    await at(5);
    expect(await assigned(d.id)).toEqual(canary); // waits for the canary's receipts
    for (const dev of canary) expect(await report(d.id, dev, 'committed')).toBe('succeeded');
    await at(0); // canary done: the rollout starts with one device
    expect(await assigned(d.id)).toHaveLength(1);
    await at(1);
    expect(await assigned(d.id)).toHaveLength(4);
    await at(1);
    expect(await assigned(d.id)).toHaveLength(7);
    // 11 more at 3 per minute: all assigned five minutes later.
    await at(5);
    const all = await assigned(d.id);
    expect(all).toHaveLength(18);
    for (const dev of all) await report(d.id, dev, 'committed');
    await at(0);
    const v = await engine.view(t.storage.db, d.id);
    expect(v).toMatchObject({ state: 'completed', counts: { total: 20, succeeded: 20 } });
    expect(v.phases.map((p) => [p.name, p.counts.succeeded])).toEqual([
      ['canary', 2],
      ['rollout', 18],
    ]);
  });

  it('says when its next device is due by the rate: not while the canary is out, nor with nothing pending', async () => {
    const d = await create({ canary: 1, ratePerMinute: 600 });
    await at(0);
    expect(engine.nextDueMs).toBeNull(); // the canary's receipts decide, not the rate
    for (const dev of await assigned(d.id)) await report(d.id, dev, 'committed');
    await at(0); // the rollout starts with one device, then 600 a minute: the next in 100 ms
    expect(await assigned(d.id)).toHaveLength(1);
    expect(engine.nextDueMs).toBeCloseTo(100, 5);
    now = new Date(now.getTime() + 250);
    await engine.tick(); // 2.5 devices of credit: 2 assigned, the next in 50 ms
    expect(await assigned(d.id)).toHaveLength(3);
    expect(engine.nextDueMs).toBeCloseTo(50, 5);
    await at(1); // the rest
    expect(await assigned(d.id)).toHaveLength(19);
    expect(engine.nextDueMs).toBeNull();
  });

  it('grows the rate phase by phase', async () => {
    const d = await create({ canary: 0, ratePerMinute: 2, rateGrowth: 2, phaseMinutes: 2 });
    await at(0); // no canary: the rollout starts now, with one device
    await at(1); // phase 1: 2/min
    expect(await assigned(d.id)).toHaveLength(3);
    await at(0.5);
    expect(await assigned(d.id)).toHaveLength(4);
    await at(1.5); // phase 2 from minute 2: 4/min
    expect(await assigned(d.id)).toHaveLength(10);
    const v = await engine.view(t.storage.db, d.id);
    expect(v.phase).toBe(2);
    expect(v.phases.map((p) => [p.index, p.ratePerMinute, p.counts.assigned, p.counts.pending])).toEqual([
      [1, 2, 4, 0],
      [2, 4, 6, 10],
    ]);
  });

  it('assigns nothing while the maintenance window is closed', async () => {
    // Monday 00:00 UTC is 01:00 in Berlin: closed for a 02:00-03:00 window, open an hour later.
    const d = await create({ canary: 1, window: 'Mon-Fri 02:00-03:00 Europe/Berlin' });
    await at(0);
    await at(30);
    expect(await assigned(d.id)).toEqual([]);
    expect((await engine.view(t.storage.db, d.id)).windowOpen).toBe(false);
    await at(31);
    expect(await assigned(d.id)).toHaveLength(1);
    expect(calls).toHaveLength(1);
  });

  it('trips the abort rule once the minimum sample is reached and stops assigning', async () => {
    const d = await create({ canary: 4, ratePerMinute: 10, abortAtPercent: 50, minSample: 3 });
    await at(0);
    const canary = await assigned(d.id);
    await report(d.id, canary[0]!, 'rolled-back');
    await report(d.id, canary[1]!, 'failed');
    await at(1);
    // Two failures of two finished: under the minimum sample, still running.
    expect((await engine.view(t.storage.db, d.id)).state).toBe('running');
    await report(d.id, canary[2]!, 'committed');
    await at(1);
    const v = await engine.view(t.storage.db, d.id);
    expect(v.state).toBe('aborted');
    expect(v.reason).toMatch(/abort rule: 2 of 3/);
    // The unfinished canary device is unassigned; nothing else was ever assigned.
    expect(await directorHas(t.storage.db, canary[3]!)).toBeNull();
    expect(v.counts).toMatchObject({ succeeded: 1, failed: 2, assigned: 0, pending: 0 });
    await at(10);
    expect(calls.filter((c) => c.startsWith('assign'))).toHaveLength(4);
  });

  it('counts a device without a receipt within the time-out as failed, and a late receipt changes nothing', async () => {
    const d = await create({ canary: 1, receiptTimeout: '10m', abortAtPercent: 100, minSample: 1 });
    await at(0);
    const [dev] = await assigned(d.id);
    await at(9);
    expect(await assigned(d.id)).toEqual([dev]);
    await at(1);
    const devs = await stateOf(d.id);
    expect(devs.find((x) => x.deviceId === dev)?.state).toBe('timed-out');
    expect(await directorHas(t.storage.db, dev!)).toBeNull();
    expect(await report(d.id, dev!, 'committed')).toBe('timed-out');
    expect((await engine.view(t.storage.db, d.id)).state).toBe('aborted');
    expect((await engine.history(t.storage.db, dev!)).map((e) => e.event)).toEqual([
      'late-receipt',
      'timed-out',
      'assigned',
    ]);
  });

  it('ignores a receipt for another release or deployment, and the same receipt twice', async () => {
    const d = await create({ canary: 1 });
    await at(0);
    const [dev] = await assigned(d.id);
    expect(await report(d.id, dev!, 'committed', OTHER)).toBeNull();
    expect(await report(d.id + 1, dev!, 'committed')).toBeNull();
    expect(await report(d.id, dev!, 'committed')).toBe('succeeded');
    expect(await report(d.id, dev!, 'committed')).toBe('succeeded');
    expect((await engine.history(t.storage.db, dev!)).map((e) => e.event)).toEqual(['succeeded', 'assigned']);
  });

  it('pauses, resumes without a burst, and cancels (unassigning devices not done)', async () => {
    const d = await create({ ratePerMinute: 2, receiptTimeout: '2h' });
    await at(0);
    await at(1);
    expect(await assigned(d.id)).toHaveLength(3);
    await t.storage.db.transaction().execute((tx) => engine.pause(tx, d.id));
    await at(30);
    expect(await assigned(d.id)).toHaveLength(3);
    expect((await rejectionOf(t.storage.db.transaction().execute((tx) => engine.pause(tx, d.id)))).code).toBe(
      'CONFLICT',
    );
    await t.storage.db.transaction().execute((tx) => engine.resume(tx, d.id));
    await at(1);
    expect(await assigned(d.id)).toHaveLength(5); // one minute's worth, not thirty
    const [done] = await assigned(d.id);
    await report(d.id, done!, 'committed');
    const v = await t.storage.db.transaction().execute((tx) => engine.cancel(tx, d.id, 'token:test'));
    expect(v).toMatchObject({
      state: 'cancelled',
      counts: { succeeded: 1, assigned: 0, pending: 0, other: 19 },
    });
    expect(calls.filter((c) => c.startsWith('unassign'))).toHaveLength(4);
    expect(await directorHas(t.storage.db, done!)).toBe(String(d.id)); // the finished device keeps its release
    await at(5);
    expect(await assigned(d.id)).toEqual([]);
  });

  it('in continuous mode follows a device that enters the group later; otherwise not', async () => {
    await fleet.groups.create(t.storage.db, { id: 'lab' });
    await fleet.groups.addMembers(t.storage.db, 'lab', ['dev-000']);
    const cont = await create({ target: { group: 'lab' }, continuous: true, ratePerMinute: 60 });
    const once = await create({ target: { group: 'lab' }, release: OTHER, priority: 1, ratePerMinute: 60 });
    expect((await stateOf(cont.id))[0]?.state).toBe('superseded'); // taken over by the higher priority
    await at(0);
    await at(1);
    await report(once.id, 'dev-000', 'committed', OTHER);
    await at(1);
    expect((await engine.view(t.storage.db, once.id)).state).toBe('completed');
    await fleet.groups.addMembers(t.storage.db, 'lab', ['dev-001']);
    await at(1);
    await at(1);
    expect(await assigned(cont.id)).toEqual(['dev-001']);
    expect((await engine.view(t.storage.db, cont.id)).state).toBe('running');
  });

  it('refuses an overlapping deployment of equal priority, and a higher priority takes devices over', async () => {
    const low = await create({ target: { devices: ['dev-000', 'dev-001'] }, ratePerMinute: 60 });
    await at(0);
    await at(1);
    expect((await assigned(low.id)).sort()).toEqual(['dev-000', 'dev-001']);
    const e = await rejectionOf(create({ target: { devices: ['dev-001', 'dev-002'] }, release: OTHER }));
    expect(e.code).toBe('CONFLICT');
    expect(e.message).toContain('dev-001');
    const high = await create({ target: { devices: ['dev-001', 'dev-002'] }, release: OTHER, priority: 5 });
    expect((await stateOf(low.id)).find((x) => x.deviceId === 'dev-001')?.state).toBe('superseded');
    expect(await directorHas(t.storage.db, 'dev-001')).toBeNull();
    await at(1);
    await at(1);
    expect(await directorHas(t.storage.db, 'dev-001')).toBe(String(high.id));
    expect((await engine.history(t.storage.db, 'dev-001')).map((e) => [e.deploymentId, e.event])).toEqual([
      [high.id, 'assigned'],
      [low.id, 'superseded'],
      [low.id, 'assigned'],
    ]);
  });

  it('replaces a canary device held by a higher-priority deployment instead of starting the rollout without it', async () => {
    // The high-priority deployment holds dev-000 and dev-001 (its receipts do not come).
    const high = await create({
      target: { devices: ['dev-000', 'dev-001'] },
      release: OTHER,
      priority: 5,
      receiptTimeout: '1d',
    });
    await at(0);
    await at(1);
    expect((await assigned(high.id)).sort()).toEqual(['dev-000', 'dev-001']);
    // The low one targets dev-000..dev-003 with a canary of 2; pin the canary to the held devices.
    const low = await create({
      target: { devices: devices(4) },
      canary: 2,
      ratePerMinute: 60,
      receiptTimeout: '1d',
    });
    await pinCanary(low.id, ['dev-000', 'dev-001']);
    await at(0);
    await at(90);
    // The canary is two free devices of the target, and the rollout waits for their receipts.
    const canary = (await assigned(low.id)).sort();
    expect(canary).toEqual(['dev-002', 'dev-003']);
    const v = await engine.view(t.storage.db, low.id);
    expect(v).toMatchObject({ state: 'running', phase: 0, canarySize: 2 });
    expect(v.phases[0]).toMatchObject({ name: 'canary', counts: { assigned: 2 } });
    expect(v.canaryWaitingSince).toBeNull();
    // (Replaced at creation already, then again after pinCanary put it back.)
    const events = (await engine.history(t.storage.db, 'dev-000')).map((e) => [e.deploymentId, e.event]);
    expect(events[0]).toEqual([low.id, 'canary-replaced']);
    expect(events).toContainEqual([low.id, 'superseded']);
    expect(events.at(-1)).toEqual([high.id, 'assigned']);
  });

  it('replaces a canary device a higher-priority deployment takes over, and the rollout waits for the replacement', async () => {
    const low = await create({ target: { devices: devices(4) }, canary: 2, ratePerMinute: 60 });
    await pinCanary(low.id, ['dev-000', 'dev-001']);
    await at(0);
    expect((await assigned(low.id)).sort()).toEqual(['dev-000', 'dev-001']);
    await report(low.id, 'dev-001', 'committed');
    await create({ target: { devices: ['dev-000'] }, release: OTHER, priority: 5 });
    await at(1);
    // dev-002 took dev-000's place in the canary; the rollout has not started.
    expect(await assigned(low.id)).toEqual(['dev-002']);
    expect((await engine.view(t.storage.db, low.id)).phase).toBe(0);
    await at(5);
    expect(await assigned(low.id)).toEqual(['dev-002']);
    await report(low.id, 'dev-002', 'committed');
    await at(0); // the canary is done: the rollout starts with one device
    expect(await assigned(low.id)).toEqual(['dev-003']);
    const v = await engine.view(t.storage.db, low.id);
    expect(v.phases.map((p) => [p.name, p.counts.succeeded, p.counts.assigned])).toEqual([
      ['canary', 2, 0],
      ['rollout', 0, 1],
    ]);
  });

  it('pauses itself with the reason when no free device replaces a held canary device within the canary wait', async () => {
    const high = await create({
      target: { devices: ['dev-000', 'dev-001'] },
      release: OTHER,
      priority: 5,
      receiptTimeout: '1d',
    });
    const low = await create({ target: { devices: devices(3) }, canary: 3, canaryWaitTimeout: '30m' });
    expect(low.canaryWaitTimeoutMs).toBe(30 * MINUTE);
    await at(0);
    expect(await assigned(low.id)).toEqual(['dev-002']);
    const waiting = await engine.view(t.storage.db, low.id);
    expect(waiting).toMatchObject({ state: 'running', canaryWaitingSince: now.toISOString() });
    await report(low.id, 'dev-002', 'committed');
    await at(29);
    // The free canary device is done, but the canary is short: the rollout does not start.
    expect((await engine.view(t.storage.db, low.id)).state).toBe('running');
    await at(1);
    const paused = await engine.view(t.storage.db, low.id);
    expect(paused).toMatchObject({ state: 'paused', canarySize: 1, canaryWaitingSince: null });
    expect(paused.reason).toBe(
      `canary short: 2 of 3 canary device(s) (dev-000, dev-001) are held by deployment(s) ${high.id} and no ` +
        'other device of the target was free within 30 min; resume to go on with a canary of 1, or cancel',
    );
    expect((await engine.history(t.storage.db, 'dev-001'))[0]).toMatchObject({
      deploymentId: low.id,
      event: 'canary-short',
    });
    // Resumed, it goes on with the canary it has: done, nothing else to assign.
    await t.storage.db.transaction().execute((tx) => engine.resume(tx, low.id));
    expect((await engine.view(t.storage.db, low.id)).reason).toBeNull();
    await at(1);
    expect(await engine.view(t.storage.db, low.id)).toMatchObject({
      state: 'completed',
      counts: { succeeded: 1, other: 2 },
    });
    expect(await directorHas(t.storage.db, 'dev-000')).toBe(String(high.id));
  });

  it('with a canary wait of 0s pauses at once; in continuous mode a device entering the target fills the canary', async () => {
    await create({ target: { devices: ['dev-000'] }, release: OTHER, priority: 5 });
    const now0 = await create({
      target: { devices: ['dev-000', 'dev-001'] },
      canary: 2,
      canaryWaitTimeout: '0s',
    });
    await at(0);
    expect((await engine.view(t.storage.db, now0.id)).state).toBe('paused');
    await t.storage.db.transaction().execute((tx) => engine.cancel(tx, now0.id, 'token:test'));

    await fleet.groups.create(t.storage.db, { id: 'lab' });
    await fleet.groups.addMembers(t.storage.db, 'lab', ['dev-000', 'dev-001']);
    const cont = await create({ target: { group: 'lab' }, continuous: true, canary: 2 });
    await at(0);
    await at(10);
    expect(await assigned(cont.id)).toEqual(['dev-001']);
    expect((await engine.view(t.storage.db, cont.id)).canaryWaitingSince).not.toBeNull();
    await fleet.groups.addMembers(t.storage.db, 'lab', ['dev-005']);
    await at(1);
    expect((await assigned(cont.id)).sort()).toEqual(['dev-001', 'dev-005']);
    const v = await engine.view(t.storage.db, cont.id);
    expect(v).toMatchObject({ state: 'running', phase: 0, canaryWaitingSince: null });
  });

  it('refuses a target with devices the release does not fit (model, hardware revision), naming them and the fix', async () => {
    const db = t.storage.db;
    await fleet.models.create(db, { id: 'GW200' });
    await fleet.devices.create(db, { id: 'gw-1', model: 'GW200' });
    await fleet.groups.create(db, { id: 'mixed' });
    await fleet.groups.addMembers(db, 'mixed', ['dev-000', 'gw-1']);
    const list = await rejectionOf(create({ target: { devices: ['dev-000', 'gw-1'] } }));
    expect(list.code).toBe('VALIDATION');
    expect(list.errors[0]?.field).toBe('target.devices');
    expect(list.message).toMatch(
      /1 device\(s\) .* do not fit release DW100\/fw-2\.0\.0\.bin, which is for DW100: gw-1 \(GW200\)/,
    );
    const group = await rejectionOf(create({ target: { group: 'mixed' } }));
    expect(group.message).toContain('group = "mixed" and model = "DW100"');
    const query = await rejectionOf(create({ target: { query: 'model in ("DW100", "GW200")' } }));
    expect(query.message).toContain('and model = "DW100"');
    // A release for revision B: a DW100 without a revision, or of revision A, does not fit either.
    const rev = await rejectionOf(create({ target: { devices: ['dev-000'] }, release: REV_B }));
    expect(rev.message).toContain('hardware revision(s) B');
    expect(await db.selectFrom('deployments').select('id').execute()).toEqual([]);
    // Narrowed to the devices that fit, it is accepted.
    expect((await create({ target: { query: 'group = "mixed" and model = "DW100"' } })).counts.total).toBe(1);
  });

  it('in continuous mode leaves out a device entering the target that the release does not fit', async () => {
    const db = t.storage.db;
    await fleet.models.create(db, { id: 'GW200' });
    await fleet.groups.create(db, { id: 'site' });
    await fleet.groups.addMembers(db, 'site', ['dev-000']);
    const cont = await create({ target: { group: 'site' }, continuous: true, ratePerMinute: 60 });
    await fleet.devices.create(db, { id: 'gw-2', model: 'GW200' });
    await fleet.groups.addMembers(db, 'site', ['gw-2', 'dev-001']);
    await at(0);
    await at(1);
    await at(1);
    const rows = (await stateOf(cont.id)).map((x) => x.deviceId).sort();
    expect(rows).toEqual(['dev-000', 'dev-001']);
  });

  it('refuses an unknown or unpublished release, unknown devices and groups, bad queries and windows', async () => {
    const codes = async (body: Partial<CreateDeploymentBody>) => {
      const e = await rejectionOf(create(body));
      return [e.code, e.errors[0]?.field];
    };
    expect(await codes({ release: 'DW100/none.bin' })).toEqual(['VALIDATION', 'release']);
    expect(await codes({ release: 'DW100/fw-3.0.0.bin' })).toEqual(['VALIDATION', 'release']);
    expect(await codes({ target: { devices: ['dev-000', 'ghost'] } })).toEqual([
      'VALIDATION',
      'target.devices',
    ]);
    expect(await codes({ target: { group: 'nope' } })).toEqual(['VALIDATION', 'target.group']);
    expect(await codes({ target: { query: 'group = "nope"' } })).toEqual(['QUERY_INVALID', 'query']);
    expect(await codes({ window: 'Mon 01:00-02:00 Nowhere/City' })).toEqual(['VALIDATION', 'window']);
    for (const bad of ['soon', '8d', '1ms'])
      expect(await codes({ canaryWaitTimeout: bad })).toEqual(['VALIDATION', 'canaryWaitTimeout']);
    expect(await t.storage.db.selectFrom('deployments').select('id').execute()).toEqual([]);
  });
});
