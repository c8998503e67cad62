import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { recordOutcome } from '../../../server/src/updates/deployments/index.js';
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

  it('has help with examples', async () => {
    for (const sub of ['create', 'watch', 'history']) {
      const h = await cli(['deploy', sub, '--help']);
      expect(h.stdout, sub).toContain('Examples:');
      expect(h.stdout, sub).toContain(`rampart deploy ${sub}`);
    }
  });
});
