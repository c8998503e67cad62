import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rampart-policy-cli-'));
  writeFileSync(
    join(dir, 'good.yaml'),
    [
      "version: '2026-11'",
      'statements:',
      '  - sid: own-telemetry',
      '    effect: allow',
      '    actions: [publish, subscribe, receive]',
      "    resources: ['devices/${device.id}/#']",
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(dir, 'everything.json'),
    JSON.stringify({ statements: [{ effect: 'allow', actions: ['publish'], resources: ['#'] }] }),
  );
  writeFileSync(
    join(dir, 'bad.json'),
    JSON.stringify({
      statements: [
        { effect: 'allow', actions: ['publish'], resources: ['#'] },
        { effect: 'allow', actions: ['subscribe'], resources: ['x/${device.nope}/#'] },
      ],
    }),
  );
  writeFileSync(
    join(dir, 'v2.json'),
    JSON.stringify({
      statements: [
        {
          sid: 'own-telemetry',
          effect: 'allow',
          actions: ['publish', 'subscribe', 'receive'],
          resources: ['devices/${device.id}/#'],
        },
        {
          sid: 'no-secrets',
          effect: 'deny',
          actions: ['publish'],
          resources: ['devices/${device.id}/secret'],
        },
      ],
    }),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('rampart policy lint (offline)', { timeout: 30_000 }, () => {
  // No server: RAMPART_URL points nowhere, and lint must not need it.
  const env = { RAMPART_URL: 'http://127.0.0.1:1' };

  it('passes a good document', async () => {
    const r = await runCli(['policy', 'lint', join(dir, 'good.yaml')], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('ok');
    expect(r.stdout).not.toContain('error');
    const json = await runCli(['policy', 'lint', join(dir, 'good.yaml'), '--json'], { env });
    expect(JSON.parse(json.stdout)).toEqual({ valid: true, findings: [] });
  });

  it('warns about an allow on # but exits 0 when there are only warnings', async () => {
    const r = await runCli(['policy', 'lint', join(dir, 'everything.json')], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^statement 0 \[#\]: warning allow-everything: /m);
  });

  it('reports an unknown variable as an error and exits 1', async () => {
    const r = await runCli(['policy', 'lint', join(dir, 'bad.json')], { env });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^statement 0 \[#\]: warning allow-everything: /m);
    expect(r.stdout).toMatch(
      /^statement 1 \[x\/\$\{device\.nope\}\/#\]: error unknown-variable: .*device\.nope/m,
    );
    const json = await runCli(['policy', 'lint', join(dir, 'bad.json'), '--json'], { env });
    expect(json.code).toBe(1);
    const result = JSON.parse(json.stdout);
    expect(result.valid).toBe(false);
    expect(result.findings).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ severity: 'error', code: 'unknown-variable', statement: 1 }),
        expect.objectContaining({ severity: 'warning', code: 'allow-everything', statement: 0 }),
      ]),
    );
  });

  it('refuses a file that is not JSON or YAML with a usage error', async () => {
    writeFileSync(join(dir, 'broken.json'), '{ "statements": [');
    const r = await runCli(['policy', 'lint', join(dir, 'broken.json')], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('not valid JSON');
  });
});

describe('rampart policy against a running platform', { timeout: 90_000 }, () => {
  let t: TestPlatform;
  let env: Record<string, string>;
  const device = 'dw-policy-1';

  beforeAll(async () => {
    t = await startTestPlatform('sqlite');
    env = cliEnvFor(t.dataDir);
    await t.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } });
    const r = await t.call('POST', '/api/v1/devices', {
      body: { id: device, model: 'DW100', status: 'active' },
    });
    expect(r.status).toBe(201);
  });
  afterAll(async () => {
    await t?.close();
  });

  it('create, show, update, attach, simulate, detach, delete', async () => {
    let r = await runCli(
      ['policy', 'create', 'telemetry', '--file', join(dir, 'good.yaml'), '--description', 'own topics'],
      { env },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('created policy telemetry version 1');

    r = await runCli(['policy', 'list'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^telemetry\s+1\s+0\s+0\b/m);
    expect(r.stdout).toMatch(/^default\s/m);

    r = await runCli(['policy', 'show', 'telemetry'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('own topics');
    expect(r.stdout).toContain('"sid": "own-telemetry"');
    expect(r.stdout).toContain('devices/${device.id}/#');

    r = await runCli(['policy', 'update', 'telemetry', '-f', join(dir, 'v2.json')], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('updated policy telemetry version 2');
    const v2 = JSON.parse((await runCli(['policy', 'show', 'telemetry', '--json'], { env })).stdout);
    expect(v2).toMatchObject({ name: 'telemetry', version: 2 });
    expect(v2.document.statements).toHaveLength(2);

    r = await runCli(['policy', 'show', 'telemetry', '--version', '1'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).statements).toHaveLength(1);
    r = await runCli(['policy', 'show', 'telemetry', '--version', '7'], { env });
    expect(r.code).toBe(5);

    r = await runCli(['policy', 'attach', 'telemetry'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('exactly one of --device, --group or --model');
    r = await runCli(['policy', 'attach', 'telemetry', '--device', device, '--group', 'g'], { env });
    expect(r.code).toBe(2);

    r = await runCli(['policy', 'attach', 'telemetry', '--device', device], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`attached policy telemetry v2 to device ${device}`);
    const attached = JSON.parse((await runCli(['policy', 'list', '--json'], { env })).stdout);
    expect(attached.find((p: { name: string }) => p.name === 'telemetry').attachments).toEqual([
      expect.objectContaining({ targetKind: 'device', targetId: device }),
    ]);

    r = await runCli(
      ['policy', 'simulate', '--device', device, '--action', 'publish', '--topic', `devices/${device}/x`],
      { env },
    );
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ALLOWED/);
    expect(r.stdout).toMatch(/^reason: /m);
    expect(r.stdout).toMatch(/^statement: /m);
    expect(r.stdout).toMatch(/^ {2}\d+\. telemetry v2 {2}device dw-policy-1$/m);

    r = await runCli(
      ['policy', 'simulate', '--device', device, '--action', 'publish', '--topic', 'other/x'],
      {
        env,
      },
    );
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^DENIED/);
    expect(r.stdout).toMatch(/^reason: \S+/m);
    const denied = JSON.parse(
      (
        await runCli(
          ['policy', 'simulate', '--device', device, '--action', 'publish', '--topic', 'other/x', '--json'],
          { env },
        )
      ).stdout,
    );
    expect(denied).toMatchObject({ allowed: false, resource: 'other/x' });
    expect(denied.reason.length).toBeGreaterThan(0);

    r = await runCli(['policy', 'detach', 'telemetry', '--device', device], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`detached policy telemetry from device ${device}`);

    r = await runCli(['policy', 'delete', 'telemetry'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--yes');
    r = await runCli(['policy', 'delete', 'telemetry', '--yes'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('deleted policy telemetry');
    r = await runCli(['policy', 'show', 'telemetry'], { env });
    expect(r.code).toBe(5);
  });
});
