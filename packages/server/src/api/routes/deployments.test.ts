import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../../test-support/platform.js';
import { recordOutcome } from '../../updates/deployments/index.js';

describe.each(['sqlite', 'postgres'] as const)('deployments API on %s', (dialect) => {
  let t: TestPlatform;
  let release: string;

  beforeAll(async () => {
    t = await startTestPlatform(dialect, { 'updates.development': true });
    expect((await t.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } })).status).toBe(201);
    for (const id of ['d1', 'd2', 'd3'])
      expect((await t.call('POST', '/api/v1/devices', { body: { id, model: 'DW100' } })).status).toBe(201);
    const r = await t.call('POST', '/api/v1/updates/releases?name=fw&version=1.0.0&model=DW100', {
      raw: Buffer.from('firmware image 1.0.0'),
      contentType: 'application/octet-stream',
    });
    expect(r.status).toBe(201);
    release = r.body.path;
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  it('creates a deployment, shows its progress, and completes it on receipts', async () => {
    const c = await t.call('POST', '/api/v1/deployments', {
      body: { release, target: { devices: ['d1', 'd2'] }, canary: 1, ratePerMinute: 60 },
    });
    expect(c.status).toBe(201);
    expect(c.body).toMatchObject({ state: 'running', canarySize: 1, counts: { total: 2, pending: 2 } });
    const id = c.body.id as number;
    await t.platform.deployments.tick();
    const s = await t.call('GET', `/api/v1/deployments/${id}`);
    expect(s.status).toBe(200);
    const [canary] = (s.body.devices as { deviceId: string; state: string }[]).filter(
      (d) => d.state === 'assigned',
    );
    expect(s.body.deployment.phases[0]).toMatchObject({ name: 'canary', counts: { assigned: 1 } });
    // The director now lists the release for the canary device.
    const assigned = await t.platform.storage.db
      .selectFrom('update_assignments')
      .selectAll()
      .where('device_id', '=', canary!.deviceId)
      .executeTakeFirst();
    expect(assigned).toMatchObject({ target_path: release, deployment_id: String(id) });
    const at = () => new Date().toISOString();
    await recordOutcome(t.platform.storage.db, {
      deviceId: canary!.deviceId,
      deploymentId: String(id),
      path: release,
      outcome: 'committed',
      receiptId: 'receipt-1',
      at: at(),
    });
    await t.platform.deployments.tick();
    const other = canary!.deviceId === 'd1' ? 'd2' : 'd1';
    await recordOutcome(t.platform.storage.db, {
      deviceId: other,
      deploymentId: id,
      path: release,
      outcome: 'committed',
      receiptId: 'receipt-2',
      at: at(),
    });
    await t.platform.deployments.tick();
    const done = await t.call('GET', `/api/v1/deployments/${id}`);
    expect(done.body.deployment).toMatchObject({ state: 'completed', counts: { succeeded: 2 } });
    const h = await t.call('GET', `/api/v1/devices/${other}/deployments`);
    expect(h.body.items.map((e: { event: string }) => e.event)).toEqual(['succeeded', 'assigned']);
    const list = await t.call('GET', '/api/v1/deployments?state=completed');
    expect(list.body.items.map((d: { id: number }) => d.id)).toContain(id);
    const audit = await t.call('GET', `/api/v1/audit/entries?action=deployment.create`);
    expect(JSON.stringify(audit.body)).toContain(`deployment:${id}`);
  });

  it('pauses, resumes and cancels; refuses an equal-priority overlap with 409', async () => {
    const c = await t.call('POST', '/api/v1/deployments', {
      body: { release, target: { query: 'id = "d3"' }, ratePerMinute: 1 },
    });
    expect(c.status).toBe(201);
    const id = c.body.id as number;
    const clash = await t.call('POST', '/api/v1/deployments', {
      body: { release, target: { devices: ['d3'] } },
    });
    expect(clash.status).toBe(409);
    expect(clash.body.detail).toContain('d3');
    expect((await t.call('POST', `/api/v1/deployments/${id}/pause`)).body.state).toBe('paused');
    expect((await t.call('POST', `/api/v1/deployments/${id}/pause`)).status).toBe(409);
    expect((await t.call('POST', `/api/v1/deployments/${id}/resume`)).body.state).toBe('running');
    expect((await t.call('POST', `/api/v1/deployments/${id}/cancel`)).body.state).toBe('cancelled');
    expect((await t.call('POST', `/api/v1/deployments/${id}/cancel`)).status).toBe(409);
    expect((await t.call('GET', '/api/v1/deployments/99999')).status).toBe(404);
  });

  it('answers bad input with problems naming the field', async () => {
    const bad = async (body: Record<string, unknown>) => {
      const r = await t.call('POST', '/api/v1/deployments', {
        body: { release, target: { devices: ['d1'] }, ...body },
      });
      return [r.status, r.body.errors?.[0]?.field];
    };
    expect(await bad({ release: 'DW100/none' })).toEqual([400, 'release']);
    expect(await bad({ target: { query: 'model = ' } })).toEqual([400, 'query']);
    expect(await bad({ target: { group: 'nope' } })).toEqual([400, 'target.group']);
    expect(await bad({ window: 'Mon-Fri 25:00-05:00 UTC' })).toEqual([400, 'window']);
    expect((await bad({ canary: '150%' }))[0]).toBe(400);
  });

  it('needs release:write to create and release:read to read', async () => {
    const viewer = await t.tokenFor('viewer');
    const r = await t.call('POST', '/api/v1/deployments', {
      token: viewer,
      body: { release, target: { devices: ['d1'] } },
    });
    expect(r.status).toBe(403);
    expect((await t.call('GET', '/api/v1/deployments', { token: viewer })).status).toBe(200);
    expect((await t.call('GET', '/api/v1/deployments', { token: null })).status).toBe(401);
  });
});
