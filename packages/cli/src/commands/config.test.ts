import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ServerConfigSchema, databaseUrlOf, loadServerConfig } from '@rampart/server';
import { settingsOf } from '@rampart/shared/config';
import { runCli } from '../test-support/run-cli.js';

const work = mkdtempSync(join(tmpdir(), 'rampart-config-cli-test-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface ShowRow {
  key: string;
  value: unknown;
  origin: string;
}

async function show(args: string[], env: Record<string, string> = {}) {
  const r = await runCli(['config', 'show', '--json', ...args], { env, cwd: work });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  const body = JSON.parse(r.stdout) as { settings: ShowRow[]; warnings: string[] };
  const byKey = new Map(body.settings.map((s) => [s.key, s]));
  return { ...body, get: (key: string) => byKey.get(key)! };
}

describe('loadServerConfig', () => {
  it('uses the defaults, with the data directory resolved against the working directory', () => {
    const { config, warnings } = loadServerConfig({ env: {}, cwd: work });
    expect(config.dataDir).toBe(join(work, 'rampart-data'));
    expect(config.api).toMatchObject({ host: '127.0.0.1', port: 8443 });
    expect(databaseUrlOf(config)).toBe(`sqlite:${join(work, 'rampart-data', 'rampart.db')}`);
    expect(warnings).toEqual([]);
  });

  it('finds ./rampart.yaml in the working directory, or the file RAMPART_CONFIG names', () => {
    const dir = mkdtempSync(join(work, 'cwd-'));
    writeFileSync(join(dir, 'rampart.yaml'), 'api:\n  port: 9001\n');
    writeFileSync(join(dir, 'other.json'), '{"api": {"port": 9002}}');
    expect(loadServerConfig({ env: {}, cwd: dir }).config.api.port).toBe(9001);
    expect(
      loadServerConfig({ env: { RAMPART_CONFIG: join(dir, 'other.json') }, cwd: dir }).config.api.port,
    ).toBe(9002);
  });

  it('does not warn about the client variables and the passphrase', () => {
    const { warnings } = loadServerConfig({
      env: {
        RAMPART_URL: 'https://x',
        RAMPART_TOKEN: 't',
        RAMPART_CA: 'ca.pem',
        RAMPART_KEYSTORE_PASSPHRASE: 'p',
        RAMPART_DATA_DIR: work,
      },
      cwd: work,
    });
    expect(warnings).toEqual([]);
  });
});

describe('rampart config show', () => {
  it('shows each value with its origin: file < environment < flag', async () => {
    const file = join(work, 'layers.yaml');
    writeFileSync(file, 'api:\n  port: 9000\n  host: 0.0.0.0\nlog:\n  level: debug\n');
    const dataDir = join(work, 'flag-data');
    const s = await show(['--config', file, '--data-dir', dataDir], {
      RAMPART_LOG_LEVEL: 'warn',
      RAMPART_API_PUBLIC_HOSTNAMES: 'rampart.example.net, 10.0.0.5',
    });
    expect(s.get('api.port')).toEqual({ key: 'api.port', value: 9000, origin: `config file ${file}` });
    expect(s.get('api.host')).toMatchObject({ value: '0.0.0.0', origin: `config file ${file}` });
    expect(s.get('log.level')).toEqual({
      key: 'log.level',
      value: 'warn',
      origin: 'environment variable RAMPART_LOG_LEVEL',
    });
    expect(s.get('api.publicHostnames')).toMatchObject({ value: ['rampart.example.net', '10.0.0.5'] });
    expect(s.get('dataDir')).toEqual({ key: 'dataDir', value: dataDir, origin: 'flag --data-dir' });
    expect(s.get('api.rateLimit.max')).toEqual({
      key: 'api.rateLimit.max',
      value: 3000,
      origin: 'the defaults',
    });
    expect(s.settings.map((r) => r.key)).toEqual(settingsOf(ServerConfigSchema).map((r) => r.key));
  });

  it('names RAMPART_DATA_DIR, not a flag, when the data directory comes from the environment', async () => {
    const s = await show([], { RAMPART_DATA_DIR: join(work, 'env-data') });
    expect(s.get('dataDir')).toEqual({
      key: 'dataDir',
      value: join(work, 'env-data'),
      origin: 'environment variable RAMPART_DATA_DIR',
    });
  });

  it('redacts a PostgreSQL password in JSON and in the table', async () => {
    const env = {
      RAMPART_DATABASE_URL: 'postgres://rampart:s3cr3t-pw@db.example:5432/rampart?password=q-s3cr3t',
    };
    const s = await show([], env);
    expect(s.get('database.url')).toEqual({
      key: 'database.url',
      value: 'postgres://rampart:***@db.example:5432/rampart?password=***',
      origin: 'environment variable RAMPART_DATABASE_URL',
    });
    const table = await runCli(['config', 'show'], { env, cwd: work });
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(
      /database\.url\s+"postgres:\/\/rampart:\*\*\*@db\.example:5432\/rampart\?password=\*\*\*"\s+environment variable RAMPART_DATABASE_URL/,
    );
    for (const out of [JSON.stringify(s), table.stdout, table.stderr]) expect(out).not.toContain('s3cr3t');
  });

  it('shows the embedded database URL when none is configured', async () => {
    const s = await show(['--data-dir', join(work, 'd')]);
    expect(s.get('database.url')).toMatchObject({
      value: `sqlite:${join(work, 'd', 'rampart.db')}`,
      origin: 'the defaults',
    });
  });

  it('warns about an unknown RAMPART_* variable', async () => {
    const r = await runCli(['config', 'show'], { env: { RAMPART_API_PROT: '9000' }, cwd: work });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(
      'warning: environment variable RAMPART_API_PROT is not a known setting and was ignored',
    );
    const j = await runCli(['config', 'show', '--json'], { env: { RAMPART_API_PROT: '9000' }, cwd: work });
    expect(JSON.parse(j.stdout).warnings).toEqual([
      'environment variable RAMPART_API_PROT is not a known setting and was ignored',
    ]);
  });

  it('exits 2 naming the key, the expectation and the variable for RAMPART_API_PORT=abc', async () => {
    const r = await runCli(['config', 'show'], { env: { RAMPART_API_PORT: 'abc' }, cwd: work });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'api.port must be of type integer (got "abc"), from environment variable RAMPART_API_PORT',
    );
  });

  it('exits 2 naming an unknown key in the file', async () => {
    const file = join(work, 'typo.yaml');
    writeFileSync(file, 'api:\n  prot: 9000\n');
    const r = await runCli(['config', 'show', '--config', file], { cwd: work });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`api.prot is not a known field, from config file ${file}`);
  });
});

describe('rampart config settings', () => {
  it('lists every setting of the schema with its variable and default', async () => {
    const r = await runCli(['config', 'settings', '--json'], { cwd: work });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(JSON.parse(JSON.stringify(settingsOf(ServerConfigSchema))));
  });
});

describe('docs/configuration.md', () => {
  it('lists exactly the settings of the schema, with their variables and defaults', () => {
    const doc = readFileSync(
      resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../../docs/configuration.md'),
      'utf8',
    );
    const table = doc.split('<!-- settings-table:start -->')[1]!.split('<!-- settings-table:end -->')[0]!;
    const rows = table
      .split('\n')
      .filter((l) => l.startsWith('| `'))
      .map((l) => l.split('|').map((c) => c.trim()))
      .map((c) => ({ key: c[1]!.replace(/`/g, ''), env: c[2]!.replace(/`/g, ''), default: c[3]! }));
    expect(rows).toEqual(
      settingsOf(ServerConfigSchema).map((s) => ({
        key: s.key,
        env: s.env,
        default: s.default === undefined ? '(none)' : `\`${JSON.stringify(s.default)}\``,
      })),
    );
  });
});

describe('rampart up with an invalid setting', () => {
  it.each([
    [['--api-port', 'abc'], {}, 'api.port must be of type integer (got "abc"), from flag --api-port'],
    [
      [],
      { RAMPART_API_PORT: '70000' },
      'api.port must be <= 65535 (got 70000), from environment variable RAMPART_API_PORT',
    ],
    [
      ['--set', 'audit.checkpointIntervalSeconds=0'],
      {},
      'audit.checkpointIntervalSeconds must be >= 1 (got 0), from flag --set audit.checkpointIntervalSeconds',
    ],
  ])('exits 2 with the key in the message (%j %j)', async (args, env, message) => {
    const dataDir = join(work, 'up-data');
    const r = await runCli(['up', '--data-dir', dataDir, ...args], {
      env: { RAMPART_KEYSTORE_PASSPHRASE: 'test passphrase for rampart', ...env },
      cwd: work,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('invalid configuration');
    expect(r.stderr).toContain(message);
    // Nothing was started or written.
    expect(existsSync(dataDir)).toBe(false);
  });
});
