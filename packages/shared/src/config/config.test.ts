import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { afterAll, describe, expect, it } from 'vitest';
import { SharedError } from '../errors/index.js';
import { StringEnum } from '../schema/index.js';
import { coerceText, describeOrigin, envNameFor, loadConfig, settingsOf } from './index.js';

/** A schema shaped like the server's: nested objects, integers with bounds, arrays, enums, optionals. */
const Schema = Type.Object(
  {
    dataDir: Type.String({ default: './data', description: 'Where data goes.' }),
    database: Type.Object(
      {
        url: Type.Optional(Type.String({ pattern: '^(sqlite:|postgres://)' })),
        poolSize: Type.Integer({ default: 10, minimum: 1, maximum: 200 }),
      },
      { additionalProperties: false, default: {} },
    ),
    api: Type.Object(
      {
        host: Type.String({ default: '127.0.0.1' }),
        port: Type.Integer({ default: 8443, minimum: 0, maximum: 65535, description: 'HTTPS port.' }),
        publicHostnames: Type.Array(Type.String(), { default: [] }),
        trustProxy: Type.Boolean({ default: false }),
        rateLimit: Type.Object(
          {
            max: Type.Integer({ default: 3000, minimum: 1 }),
            windowSeconds: Type.Integer({ default: 60, minimum: 1 }),
          },
          { additionalProperties: false, default: {} },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    log: Type.Object(
      { level: StringEnum(['error', 'info', 'debug'], { default: 'info' }) },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false },
);

const dir = mkdtempSync(join(tmpdir(), 'rampart-config-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function errorOf(fn: () => unknown): SharedError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SharedError);
    return err as SharedError;
  }
  throw new Error('expected the configuration to be refused');
}

describe('loadConfig', () => {
  it('fills every default when nothing is given, with "default" as the origin', () => {
    const { config, origins, warnings } = loadConfig(Schema);
    expect(config).toEqual({
      dataDir: './data',
      database: { poolSize: 10 },
      api: {
        host: '127.0.0.1',
        port: 8443,
        publicHostnames: [],
        trustProxy: false,
        rateLimit: { max: 3000, windowSeconds: 60 },
      },
      log: { level: 'info' },
    });
    expect(origins.size).toBe(0);
    expect(warnings).toEqual([]);
    expect(describeOrigin(origins.get('api.port'))).toBe('from the defaults');
  });

  it('does not share default arrays between loads', () => {
    const a = loadConfig(Schema).config;
    a.api.publicHostnames.push('mutated.example');
    expect(loadConfig(Schema).config.api.publicHostnames).toEqual([]);
  });

  it.each([
    [
      'YAML',
      'c.yaml',
      'api:\n  port: 9000\n  host: 0.0.0.0\n  rateLimit:\n    max: 5\nlog:\n  level: debug\n',
    ],
    [
      'JSON',
      'c.json',
      JSON.stringify({
        api: { port: 9000, host: '0.0.0.0', rateLimit: { max: 5 } },
        log: { level: 'debug' },
      }),
    ],
  ])('reads a %s file over the defaults, keeping defaults it does not mention', (_kind, name, text) => {
    const path = file(name, text);
    const { config, origins } = loadConfig(Schema, { file: path });
    expect(config.api).toMatchObject({
      port: 9000,
      host: '0.0.0.0',
      rateLimit: { max: 5, windowSeconds: 60 },
    });
    expect(config.log.level).toBe('debug');
    expect(config.dataDir).toBe('./data');
    expect(origins.get('api.port')).toEqual({ kind: 'file', file: path });
    expect(origins.get('api.rateLimit.max')).toEqual({ kind: 'file', file: path });
    expect(origins.has('api.rateLimit.windowSeconds')).toBe(false);
  });

  it('applies file < environment < flags, recording where each value came from', () => {
    const path = file('layers.yaml', 'api:\n  port: 9000\n  host: file.example\n  rateLimit:\n    max: 7\n');
    const { config, origins } = loadConfig(Schema, {
      file: path,
      env: { RAMPART_API_PORT: '9100', RAMPART_API_RATE_LIMIT_MAX: '8' },
      flags: { 'api.port': 9200, 'log.level': undefined },
    });
    expect(config.api.port).toBe(9200);
    expect(config.api.rateLimit.max).toBe(8);
    expect(config.api.host).toBe('file.example');
    expect(config.log.level).toBe('info');
    expect(origins.get('api.port')).toEqual({ kind: 'flag', name: '--set api.port' });
    expect(origins.get('api.rateLimit.max')).toEqual({ kind: 'env', name: 'RAMPART_API_RATE_LIMIT_MAX' });
    expect(origins.get('api.host')).toEqual({ kind: 'file', file: path });
    expect(describeOrigin(origins.get('api.rateLimit.max'))).toBe(
      'from environment variable RAMPART_API_RATE_LIMIT_MAX',
    );
    // The environment alone wins over the file.
    expect(loadConfig(Schema, { file: path, env: { RAMPART_API_PORT: '9100' } }).config.api.port).toBe(9100);
  });

  it('coerces flag text to the type of the setting', () => {
    const { config } = loadConfig(Schema, { flags: { 'api.port': '0', 'api.trustProxy': 'yes' } });
    expect(config.api.port).toBe(0);
    expect(config.api.trustProxy).toBe(true);
  });

  it('names the key, the expectation and the environment variable for a bad environment value', () => {
    const err = errorOf(() => loadConfig(Schema, { env: { RAMPART_API_PORT: 'abc' } }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain(
      'api.port must be of type integer (got "abc"), from environment variable RAMPART_API_PORT',
    );
    expect(err.details).toHaveLength(1);
  });

  it('names the file for a bad file value and the flag for a bad flag value', () => {
    const path = file('range.yaml', 'api:\n  port: 70000\n');
    expect(errorOf(() => loadConfig(Schema, { file: path })).message).toContain(
      `api.port must be <= 65535 (got 70000), from config file ${path}`,
    );
    expect(
      errorOf(() =>
        loadConfig(Schema, { flags: { 'log.level': 'loud' }, flagNames: { 'log.level': '--log-level' } }),
      ).message,
    ).toContain('log.level must be one of "error", "info", "debug" (got "loud"), from flag --log-level');
    expect(errorOf(() => loadConfig(Schema, { flags: { 'log.level': 'loud' } })).message).toContain(
      'log.level must be one of "error", "info", "debug" (got "loud"), from flag --set log.level',
    );
  });

  it('reports every invalid value at once', () => {
    const err = errorOf(() =>
      loadConfig(Schema, { env: { RAMPART_API_PORT: 'abc', RAMPART_DATABASE_POOL_SIZE: '0' } }),
    );
    expect(err.details).toHaveLength(2);
    expect(err.message).toContain(
      'database.poolSize must be >= 1 (got 0), from environment variable RAMPART_DATABASE_POOL_SIZE',
    );
  });

  it('refuses an unknown key in the file, naming it and the file', () => {
    const path = file('unknown.yaml', 'api:\n  prot: 9000\ncolour: red\n');
    const err = errorOf(() => loadConfig(Schema, { file: path }));
    expect(err.message).toContain(`api.prot is not a known field, from config file ${path}`);
    expect(err.message).toContain(`colour is not a known field, from config file ${path}`);
  });

  it('refuses a file that is not valid YAML or JSON, or not a mapping, naming the file', () => {
    const badYaml = file('bad.yaml', 'api: [unclosed\n');
    expect(errorOf(() => loadConfig(Schema, { file: badYaml })).message).toContain(
      `config file ${badYaml} is not valid YAML`,
    );
    const badJson = file('bad.json', '{"api": ');
    expect(errorOf(() => loadConfig(Schema, { file: badJson })).message).toContain(
      `config file ${badJson} is not valid JSON`,
    );
    const list = file('list.yaml', '- a\n- b\n');
    expect(errorOf(() => loadConfig(Schema, { file: list })).message).toContain('must contain a mapping');
    const missing = join(dir, 'missing.yaml');
    const err = errorOf(() => loadConfig(Schema, { file: missing }));
    expect(err.code).toBe('CONFIG_FILE_UNREADABLE');
    expect(err.message).toContain(`cannot read config file ${missing}: ENOENT`);
  });

  it('refuses __proto__ keys in a file or a flag as unknown, without touching Object.prototype', () => {
    const json = file('proto.json', '{"__proto__": {"polluted": "yes"}, "api": {"__proto__": {"port": 1}}}');
    const err = errorOf(() => loadConfig(Schema, { file: json }));
    expect(err.message).toContain(`__proto__ is not a known field, from config file ${json}`);
    expect(err.message).toContain(`api.__proto__ is not a known field, from config file ${json}`);
    const yaml = file('proto.yaml', '__proto__:\n  polluted: yes\n');
    expect(errorOf(() => loadConfig(Schema, { file: yaml })).message).toContain(
      '__proto__ is not a known field',
    );
    expect(errorOf(() => loadConfig(Schema, { flags: { '__proto__.polluted': 'yes' } })).message).toContain(
      '__proto__ is not a known field, from flag --set __proto__.polluted',
    );
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).port).toBeUndefined();
    expect(loadConfig(Schema).config.api.port).toBe(8443);
  });

  it('treats an empty file as no settings', () => {
    expect(loadConfig(Schema, { file: file('empty.yaml', '') }).config.api.port).toBe(8443);
  });

  it('warns about unknown RAMPART_* variables and ignores other variables and declared client ones', () => {
    const { warnings } = loadConfig(Schema, {
      env: { RAMPART_API_PROT: '1', RAMPART_TOKEN: 'x', PATH: '/bin', OTHER_API_PORT: 'abc' },
      ignoreEnv: ['RAMPART_TOKEN'],
    });
    expect(warnings).toEqual([
      'environment variable RAMPART_API_PROT is not a known setting and was ignored',
    ]);
  });

  it('reads an array from a comma-separated list (or a JSON array) in the environment', () => {
    const env = { RAMPART_API_PUBLIC_HOSTNAMES: 'rampart.example.net, 10.0.0.5 ,rampart' };
    expect(loadConfig(Schema, { env }).config.api.publicHostnames).toEqual([
      'rampart.example.net',
      '10.0.0.5',
      'rampart',
    ]);
    expect(
      loadConfig(Schema, { env: { RAMPART_API_PUBLIC_HOSTNAMES: '["a,b","c"]' } }).config.api.publicHostnames,
    ).toEqual(['a,b', 'c']);
    expect(
      loadConfig(Schema, { env: { RAMPART_API_PUBLIC_HOSTNAMES: '' } }).config.api.publicHostnames,
    ).toEqual([]);
  });

  it('reads booleans in the usual spellings and refuses others', () => {
    for (const t of ['true', '1', 'yes', 'ON'])
      expect(loadConfig(Schema, { env: { RAMPART_API_TRUST_PROXY: t } }).config.api.trustProxy).toBe(true);
    for (const f of ['false', '0', 'no', 'off'])
      expect(loadConfig(Schema, { env: { RAMPART_API_TRUST_PROXY: f } }).config.api.trustProxy).toBe(false);
    expect(
      errorOf(() => loadConfig(Schema, { env: { RAMPART_API_TRUST_PROXY: 'maybe' } })).message,
    ).toContain(
      'api.trustProxy must be of type boolean (got "maybe"), from environment variable RAMPART_API_TRUST_PROXY',
    );
  });
});

describe('environment names and settings', () => {
  it('derives RAMPART_* names from dotted camelCase keys', () => {
    expect(envNameFor(['api', 'rateLimit', 'max'])).toBe('RAMPART_API_RATE_LIMIT_MAX');
    expect(envNameFor(['dataDir'])).toBe('RAMPART_DATA_DIR');
    expect(envNameFor(['database', 'poolSize'], 'X_')).toBe('X_DATABASE_POOL_SIZE');
  });

  it('lists every leaf setting with its variable, description and default', () => {
    const settings = settingsOf(Schema);
    expect(settings.map((s) => s.key)).toEqual([
      'dataDir',
      'database.url',
      'database.poolSize',
      'api.host',
      'api.port',
      'api.publicHostnames',
      'api.trustProxy',
      'api.rateLimit.max',
      'api.rateLimit.windowSeconds',
      'log.level',
    ]);
    expect(settings.find((s) => s.key === 'api.port')).toEqual({
      key: 'api.port',
      env: 'RAMPART_API_PORT',
      description: 'HTTPS port.',
      default: 8443,
    });
  });

  it('coerces text by the schema type', () => {
    expect(coerceText(' 42 ', Type.Integer())).toBe(42);
    expect(coerceText('4x', Type.Integer())).toBe('4x');
    expect(coerceText('', Type.Integer())).toBe('');
    expect(coerceText('{"a":1}', Type.Object({ a: Type.Number() }))).toEqual({ a: 1 });
    expect(coerceText('plain', Type.String())).toBe('plain');
  });
});
