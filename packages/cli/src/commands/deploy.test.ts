import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { recordOutcome } from '../../../server/src/updates/deployments/index.js';
import { tableAssignments } from '../../../server/src/updates/director/assignments.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';

describe('rampart deploy', { timeout: 60_000 }, () => {
  let t: TestPlatform;
  let env: Record<string, string>;
  let release: string;
  const cli = (args: string[]) => runCli(args, { env });

  beforeAll(async () => {
    t = await startTestPlatform('sqlite', { 'updates.development': true });
    env = cliEnvFor(t.dataDir);
    expect((await t.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } })).status).toBe(201);
    for (const id of ['w1', 'w2'])
      expect((await t.call('POST', '/api/v1/devices', { body: { id, model: 'DW100' } })).status).toBe(201);
    const r = await t.call('POST', '/api/v1/updates/releases?name=fw&version=2.0.0&model=DW100', {
      raw: Buffer.from('image 2.0.0'),
      contentType: 'application/octet-stream',
    });
    expect(r.status).toBe(201);
    release = r.body.path;
  });
  afterAll(async () => {
    await t?.close();
  });

  it('refuses bad flags with exit code 2 and refused input from the server with its problem', async () => {
    const none = await cli(['deploy', 'create', release]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('--group, --query or --devices');
    expect((await cli(['deploy', 'create', release, '--devices', 'w1', '--rate', 'fast'])).code).toBe(2);
    const window = await cli([
      'deploy',
      'create',
      release,
      '--devices',
      'w1',
      '--window',
      'Mon 01:00-02:00 Moon/Base',
    ]);
    expect(window.code).toBe(2);
    expect(window.stderr).toContain('time zone');
    expect((await cli(['deploy', 'show', '999'])).code).toBe(5);
  });

  it('creates, shows, and watch --json streams until the deployment completes', async () => {
    const c = await cli([
      'deploy',
      'create',
      release,
      '--devices',
      'w1,w2',
      '--canary',
      '1',
      '--rate',
      '60/min',
      '--json',
    ]);
    expect(c.code, c.stderr).toBe(0);
    const created = JSON.parse(c.stdout);
    expect(created).toMatchObject({ state: 'running', canarySize: 1, counts: { total: 2 } });
    const id = created.id as number;

    const show = await cli(['deploy', 'show', String(id)]);
    expect(show.code).toBe(0);
    expect(show.stdout).toContain(release);
    expect(show.stdout).toContain('canary');

    const watching = cli(['deploy', 'watch', String(id), '--json', '--interval', '0.2']);
    // Drive the deployment: assign, receipts through the director's hook, assign the rest, finish.
    const receipt = async (deviceId: string) =>
      recordOutcome(t.platform.storage.db, {
        deviceId,
        deploymentId: String(id),
        path: release,
        outcome: 'committed',
        receiptId: `receipt-${deviceId}`,
        at: new Date().toISOString(),
      });
    for (let round = 0; round < 4; round++) {
      await t.platform.deployments.tick();
      const d = await t.call('GET', `/api/v1/deployments/${id}`);
      for (const dev of d.body.devices as { deviceId: string; state: string }[])
        if (dev.state === 'assigned') await receipt(dev.deviceId);
      await new Promise((r) => setTimeout(r, 300));
    }
    const w = await watching;
    expect(w.code, w.stderr).toBe(0);
    const lines = w.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    for (const l of lines) expect(l.id).toBe(id);
    expect(lines.at(-1)).toMatchObject({ state: 'completed', counts: { succeeded: 2, total: 2 } });

    const history = await cli(['deploy', 'history', 'w1']);
    expect(history.stdout).toContain('succeeded');
    const list = await cli(['deploy', 'list', '--state', 'completed', '--json']);
    expect(JSON.parse(list.stdout).items.map((d: { id: number }) => d.id)).toContain(id);
  });

  it('pauses, resumes and cancels; watch of a cancelled deployment exits 1', async () => {
    const c = await cli(['deploy', 'create', release, '--devices', 'w1', '--priority', '3', '--json']);
    expect(c.code, c.stderr).toBe(0);
    const id = String(JSON.parse(c.stdout).id);
    expect((await cli(['deploy', 'pause', id])).stdout).toContain('paused');
    expect((await cli(['deploy', 'pause', id])).code).toBe(6);
    expect((await cli(['deploy', 'resume', id])).stdout).toContain('running');
    expect((await cli(['deploy', 'cancel', id])).stdout).toContain('cancelled');
    const w = await cli(['deploy', 'watch', id]);
    expect(w.code).toBe(1);
    expect(w.stdout).toContain('cancelled');
  });

  it('--canary-wait sets the canary wait (a bad one is refused naming the field); show says why it paused itself', async () => {
    const api = await t.call('POST', '/api/v1/deployments', {
      body: { release, target: { devices: ['w1'] }, canaryWaitTimeout: 'soon' },
    });
    expect([api.status, api.body.errors?.[0]?.field]).toEqual([400, 'canaryWaitTimeout']);
    const bad = await cli(['deploy', 'create', release, '--devices', 'w1', '--canary-wait', '8d']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('canaryWaitTimeout');

    // w2 is held by a higher-priority deployment: the canary of the other has no free device.
    const high = await cli(['deploy', 'create', release, '--devices', 'w2', '--priority', '9', '--json']);
    expect(high.code, high.stderr).toBe(0);
    const low = await cli([
      'deploy',
      'create',
      release,
      '--devices',
      'w1,w2',
      '--canary',
      '2',
      '--canary-wait',
      '0s',
      '--priority',
      '7',
      '--json',
    ]);
    expect(low.code, low.stderr).toBe(0);
    const created = JSON.parse(low.stdout);
    expect(created.canaryWaitTimeoutMs).toBe(0);
    await t.platform.deployments.tick();
    const show = await cli(['deploy', 'show', String(created.id)]);
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toContain('paused');
    expect(show.stdout).toContain('canary short: 1 of 2 canary device(s) (w2) are held by deployment(s)');
    expect(show.stdout).toMatch(/canary wait\s+0 min/);
    for (const id of [created.id, JSON.parse(high.stdout).id])
      expect((await cli(['deploy', 'cancel', String(id)])).code).toBe(0);
  });

  it("assign sets one device's assignment outside any deployment; unassign clears it", async () => {
    expect((await t.call('POST', '/api/v1/devices', { body: { id: 'a1', model: 'DW100' } })).status).toBe(
      201,
    );
    const assigned = await cli(['deploy', 'assign', 'a1', release]);
    expect(assigned.code, assigned.stderr).toBe(0);
    expect(assigned.stdout.trim()).toBe(`device a1 must install ${release}`);
    // What the director reads for the device.
    expect(await tableAssignments.forDevice(t.platform.storage.db, 'a1')).toEqual({
      path: release,
      deploymentId: null,
    });
    const json = await cli(['deploy', 'assign', 'a1', release, '--json']);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ deviceId: 'a1', path: release, deploymentId: null });

    const unassigned = await cli(['deploy', 'unassign', 'a1']);
    expect(unassigned.code, unassigned.stderr).toBe(0);
    expect(unassigned.stdout).toContain('device a1: update assignment cleared');
    expect(await tableAssignments.forDevice(t.platform.storage.db, 'a1')).toBeNull();
    const again = await cli(['deploy', 'unassign', 'a1']);
    expect(again.code).toBe(5);
    expect(again.stderr).toContain('device a1 has no update assignment');

    expect((await cli(['deploy', 'assign', 'a1', release, '--json'])).code).toBe(0);
    const cleared = await cli(['deploy', 'unassign', 'a1', '--json']);
    expect(cleared.code, cleared.stderr).toBe(0);
    expect(JSON.parse(cleared.stdout)).toEqual({ deviceId: 'a1', path: null, deploymentId: null });
  });

  it("assign refuses a target that is not published or does not fit the device, with the server's words", async () => {
    expect((await t.call('POST', '/api/v1/device-models', { body: { id: 'OTHER' } })).status).toBe(201);
    expect((await t.call('POST', '/api/v1/devices', { body: { id: 'o1', model: 'OTHER' } })).status).toBe(
      201,
    );
    const unknown = await cli(['deploy', 'assign', 'w1', 'DW100/no-such-9.9.9.bin']);
    expect(unknown.code).toBe(5);
    expect(unknown.stderr).toContain('no published release DW100/no-such-9.9.9.bin');
    const otherModel = await cli(['deploy', 'assign', 'o1', release]);
    expect(otherModel.code).toBe(2);
    expect(otherModel.stderr).toContain(`release ${release} is for DW100, device o1 is a OTHER`);
    expect(await tableAssignments.forDevice(t.platform.storage.db, 'o1')).toBeNull();
    const noDevice = await cli(['deploy', 'assign', 'nobody', release]);
    expect(noDevice.code).toBe(5);
    expect(noDevice.stderr).toContain('device nobody does not exist');
    expect((await cli(['deploy', 'assign', 'w1'])).code).toBe(2);
  });

  it('has help with examples', async () => {
    for (const sub of ['create', 'watch', 'history', 'assign', 'unassign']) {
      const h = await cli(['deploy', sub, '--help']);
      expect(h.stdout, sub).toContain('Examples:');
      expect(h.stdout, sub).toContain(`rampart deploy ${sub}`);
    }
    expect((await cli(['deploy', 'assign', '--help'])).stdout).toContain('outside any deployment');
  });
});
