import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';

describe('rampart model / device / group', () => {
  let t: TestPlatform;
  let dir: string;
  let env: Record<string, string>;
  const cli = (...args: string[]) => runCli(args, { env });

  beforeAll(async () => {
    t = await startTestPlatform('sqlite');
    env = cliEnvFor(t.dataDir);
    dir = mkdtempSync(join(tmpdir(), 'rampart-fleet-cli-'));
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates a model and devices, then lists them with a query', async () => {
    const model = await cli('model', 'create', 'DW100', '--name', 'Door sensor', '--revision', 'rev-a');
    expect(model.code, model.stderr).toBe(0);
    expect(model.stdout).toContain('DW100');

    const dev = await cli(
      'device',
      'create',
      '--model',
      'DW100',
      '--id',
      'door-1',
      '--hardware-revision',
      'rev-a',
      '--attr',
      'region=eu',
      '--attr',
      'floor:=3',
      '--attr',
      'outdoor:=true',
      '--json',
    );
    expect(dev.code, dev.stderr).toBe(0);
    expect(JSON.parse(dev.stdout)).toMatchObject({
      id: 'door-1',
      attributes: { region: 'eu', floor: 3, outdoor: true },
    });
    for (const [id, region] of [
      ['door-2', 'eu'],
      ['door-3', 'us'],
    ]) {
      await t.call('POST', '/api/v1/devices', { body: { id, model: 'DW100', attributes: { region } } });
    }

    const list = await cli('device', 'list', '--query', 'attributes.region = "eu"', '--count', '--json');
    expect(list.code, list.stderr).toBe(0);
    const body = JSON.parse(list.stdout);
    expect(body.total).toBe(2);
    expect(body.items.map((d: { id: string }) => d.id)).toEqual(['door-1', 'door-2']);

    const table = await cli('device', 'list', '--limit', '2');
    expect(table.stdout).toMatch(/ID\s+MODEL/);
    expect(table.stdout).toContain('door-2');
    expect(table.stdout).toContain('--cursor');
    const all = await cli('device', 'list', '--all', '--limit', '1', '--json');
    expect(JSON.parse(all.stdout).items).toHaveLength(3);

    const upd = await cli(
      'device',
      'update',
      'door-1',
      '--attr',
      'floor:=4',
      '--unset-attr',
      'outdoor',
      '--status',
      'active',
    );
    expect(upd.code, upd.stderr).toBe(0);
    const shown = JSON.parse((await cli('device', 'show', 'door-1', '--json')).stdout);
    expect(shown).toMatchObject({ status: 'active', attributes: { region: 'eu', floor: 4 } });

    const bad = await cli('device', 'list', '--query', 'region = ');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('query');
    const missing = await cli('device', 'show', 'nope');
    expect(missing.code).toBe(5);
    const badAttr = await cli('device', 'create', '--model', 'DW100', '--attr', 'floor:=three');
    expect(badAttr.code).toBe(2);
  });

  it('imports a file and reports per-row errors with exit code 2', async () => {
    const good = join(dir, 'good.csv');
    writeFileSync(good, 'id,model,serial,attributes.floor:number\nimp-1,DW100,S1,1\nimp-2,DW100,S2,2\n');
    const dry = await cli('device', 'import', good, '--dry-run');
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('dry run');
    const ok = await cli('device', 'import', good, '--json');
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ imported: 2, format: 'csv', dryRun: false });

    const lines = ['{"id":"imp-3","model":"DW100"}', '{"id":"imp-1","model":"DW100"}', '{"model":"GHOST"}'];
    for (let i = 0; i < 60; i++) lines.push(`{"id":"bad ${i}","model":"DW100"}`);
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, lines.join('\n'));
    const r = await cli('device', 'import', bad);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('62 of 63 rows are invalid');
    expect(r.stderr).toMatch(/2\s+id\s+device imp-1 is already registered/);
    expect(r.stderr).toMatch(/3\s+model\s+device model GHOST does not exist/);
    expect(r.stderr).toContain('and 12 more');
    expect((await cli('device', 'show', 'imp-3')).code).toBe(5);

    const json = await cli('device', 'import', bad, '--json');
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({ code: 'IMPORT_INVALID' });

    const unknown = await cli('device', 'import', join(dir, 'devices.txt'));
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('--format');
  });

  it('builds groups and prints the static hierarchy as a tree', async () => {
    expect((await cli('group', 'create', 'europe', '--name', 'Europe')).code).toBe(0);
    expect((await cli('group', 'create', 'germany', '--parent', 'europe')).code).toBe(0);
    for (const [id, parentId] of [
      ['berlin', 'germany'],
      ['france', 'europe'],
    ]) {
      await t.call('POST', '/api/v1/device-groups', { body: { id, parentId } });
    }
    const dyn = await cli('group', 'create', 'eu-devices', '--query', "attributes.region = 'eu'");
    expect(dyn.code, dyn.stderr).toBe(0);

    const tree = await cli('group', 'list');
    expect(tree.code).toBe(0);
    expect(tree.stdout.split('\n')).toEqual([
      'eu-devices dynamic attributes.region = "eu"',
      'europe "Europe"',
      '├── france',
      '└── germany',
      '    └── berlin',
      '',
    ]);

    expect((await cli('group', 'add', 'berlin', 'door-1', 'door-3')).code).toBe(0);
    const members = await cli('group', 'devices', 'europe', '--json');
    expect(JSON.parse(members.stdout).items.map((d: { id: string }) => d.id)).toEqual(['door-1', 'door-3']);
    const dynamic = await cli('group', 'devices', 'eu-devices', '--count');
    expect(dynamic.stdout).toContain('2 devices match');

    const refused = await cli('group', 'delete', 'germany');
    expect(refused.code).toBe(6);
    expect(refused.stderr).toContain('berlin');
    expect((await cli('group', 'remove', 'berlin', 'door-3')).code).toBe(0);
    const shown = JSON.parse((await cli('device', 'show', 'door-1', '--json')).stdout);
    expect(shown.groups).toEqual(['berlin']);
  });

  it('switches update encryption of a model on and off', async () => {
    const created = await cli('model', 'create', 'SECRET-1', '--encrypt-updates', '--json');
    expect(created.code, created.stderr).toBe(0);
    expect(JSON.parse(created.stdout).encryptUpdates).toBe(true);
    const off = await cli('model', 'update', 'SECRET-1', '--no-encrypt-updates', '--json');
    expect(off.code, off.stderr).toBe(0);
    expect(JSON.parse(off.stdout).encryptUpdates).toBe(false);
    const on = await cli('model', 'update', 'SECRET-1', '--encrypt-updates');
    expect(on.stdout).toContain('updates encrypted');
    expect((await cli('model', 'show', 'SECRET-1')).stdout).toContain('updates: encrypted');
    const nothing = await cli('model', 'update', 'SECRET-1');
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toMatch(/--encrypt-updates or --no-encrypt-updates/);
  });

  it('prints help with examples', async () => {
    const importHelp = await runCli(['device', 'import', '--help']);
    expect(importHelp.code).toBe(0);
    expect(importHelp.stdout).toContain('Examples:');
    expect(importHelp.stdout).toContain('attributes.<name>:number');
    const createHelp = await runCli(['device', 'create', '--help']);
    expect(createHelp.stdout).toContain('Examples:');
    expect(createHelp.stdout).toContain('name:=value');
  });
});
