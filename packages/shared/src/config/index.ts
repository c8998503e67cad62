import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import type { Static, TObject, TSchema } from '@sinclair/typebox';
import { parse as parseYaml } from 'yaml';
import { SharedError } from '../errors/index.js';
import { describeError, errorPath, validatorFor } from '../schema/index.js';

/**
 * The one configuration loader of Rampart. Layers, lowest first:
 *   schema defaults < config file (YAML or JSON) < environment (`RAMPART_*`) < command-line flags.
 * The merged result is validated against the schema; every invalid value is reported with its key,
 * what was expected and where the value came from.
 */

export type ConfigOrigin =
  | { kind: 'default' }
  | { kind: 'file'; file: string }
  | { kind: 'env'; name: string }
  | { kind: 'flag'; name: string };

export interface LoadConfigOptions {
  /** A YAML (.yaml/.yml) or JSON file. */
  file?: string | undefined;
  env?: Record<string, string | undefined>;
  envPrefix?: string;
  /** Values from flags, keyed by dotted config path (`api.port`). `undefined` values are ignored. */
  flags?: Record<string, unknown>;
  /** How each flag is spelled on the command line, for messages (`api.port` -> `--api-port`); others read `--set <key>`. */
  flagNames?: Record<string, string>;
  /** Environment variables with the prefix that belong to other parts (client settings), not to this schema. */
  ignoreEnv?: readonly string[];
}

export interface LoadedConfig<T> {
  config: T;
  /** Where each leaf value came from, keyed by dotted path. */
  origins: Map<string, ConfigOrigin>;
  /** Non-fatal observations, e.g. an unknown `RAMPART_*` variable. */
  warnings: string[];
}

type Json = Record<string, unknown>;

interface Leaf {
  path: string[];
  schema: TSchema;
}

function isPlainObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Leaves of the schema: everything that is not an object with declared properties. */
function leaves(schema: TSchema, path: string[] = []): Leaf[] {
  if (schema.type === 'object' && isPlainObject(schema.properties)) {
    return Object.entries(schema.properties as Record<string, TSchema>).flatMap(([k, s]) =>
      leaves(s, [...path, k]),
    );
  }
  return [{ path, schema }];
}

/** `api.rateLimit.max` -> `API_RATE_LIMIT_MAX` */
export function envNameFor(path: readonly string[], prefix = 'RAMPART_'): string {
  return prefix + path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

function defaultsOf(schema: TSchema): unknown {
  if (schema.type === 'object' && isPlainObject(schema.properties)) {
    const out: Json = {};
    for (const [k, s] of Object.entries(schema.properties as Record<string, TSchema>)) {
      const d = defaultsOf(s);
      if (d !== undefined) out[k] = d;
    }
    if (schema.default !== undefined && isPlainObject(schema.default)) return { ...schema.default, ...out };
    return out;
  }
  return schema.default === undefined ? undefined : structuredClone(schema.default);
}

function schemaTypes(schema: TSchema): string[] {
  if (typeof schema.type === 'string') return [schema.type];
  if (Array.isArray(schema.type)) return schema.type as string[];
  if (Array.isArray(schema.anyOf)) return (schema.anyOf as TSchema[]).flatMap(schemaTypes);
  return [];
}

/** Turn the text of an environment variable or `--set` flag into the type the schema expects. */
export function coerceText(text: string, schema: TSchema): unknown {
  const types = schemaTypes(schema);
  const t = text.trim();
  if ((types.includes('integer') || types.includes('number')) && t !== '' && Number.isFinite(Number(t))) {
    return Number(t);
  }
  if (types.includes('boolean')) {
    if (/^(true|1|yes|on)$/i.test(t)) return true;
    if (/^(false|0|no|off)$/i.test(t)) return false;
  }
  if (types.includes('array')) {
    if (t.startsWith('[')) {
      try {
        return JSON.parse(t);
      } catch {
        return text;
      }
    }
    return t === '' ? [] : t.split(',').map((s) => s.trim());
  }
  if (types.includes('object') && t.startsWith('{')) {
    try {
      return JSON.parse(t);
    } catch {
      return text;
    }
  }
  if (types.includes('null') && t === '') return null;
  return text;
}

/**
 * Set an own property. Plain assignment to `__proto__` would replace the object's prototype (or,
 * merged deeper, Object.prototype itself) instead of adding a key that validation then refuses.
 */
function setOwn(target: Json, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function setPath(target: Json, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (!Object.hasOwn(node, key) || !isPlainObject(node[key])) setOwn(node, key, {});
    node = node[key] as Json;
  }
  setOwn(node, path[path.length - 1]!, value);
}

function getPath(source: unknown, path: readonly string[]): unknown {
  let node = source;
  for (const key of path) {
    if (!isPlainObject(node)) return undefined;
    node = node[key];
  }
  return node;
}

function mergeInto(
  target: Json,
  source: Json,
  origin: ConfigOrigin,
  origins: Map<string, ConfigOrigin>,
  prefix: string[] = [],
) {
  for (const [k, v] of Object.entries(source)) {
    const path = [...prefix, k];
    if (isPlainObject(v) && Object.hasOwn(target, k) && isPlainObject(target[k])) {
      mergeInto(target[k] as Json, v, origin, origins, path);
    } else {
      setOwn(target, k, v);
      origins.set(path.join('.'), origin);
    }
  }
}

function readConfigFile(file: string): Json {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new SharedError(
      'CONFIG_FILE_UNREADABLE',
      `cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = extname(file) === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new SharedError(
      'CONFIG_INVALID',
      `config file ${file} is not valid ${extname(file) === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`,
    );
  }
  if (parsed === null || parsed === undefined) return {};
  if (!isPlainObject(parsed)) {
    throw new SharedError(
      'CONFIG_INVALID',
      `config file ${file} must contain a mapping of settings at the top level`,
    );
  }
  return parsed;
}

export function describeOrigin(origin: ConfigOrigin | undefined): string {
  switch (origin?.kind) {
    case 'file':
      return `from config file ${origin.file}`;
    case 'env':
      return `from environment variable ${origin.name}`;
    case 'flag':
      return `from flag ${origin.name}`;
    default:
      return 'from the defaults';
  }
}

export function loadConfig<S extends TObject>(
  schema: S,
  options: LoadConfigOptions = {},
): LoadedConfig<Static<S>> {
  const prefix = options.envPrefix ?? 'RAMPART_';
  const env = options.env ?? {};
  const origins = new Map<string, ConfigOrigin>();
  const warnings: string[] = [];
  const merged = (defaultsOf(schema) ?? {}) as Json;
  const schemaLeaves = leaves(schema);

  if (options.file) {
    mergeInto(merged, readConfigFile(options.file), { kind: 'file', file: options.file }, origins);
  }

  const known = new Set<string>(options.ignoreEnv ?? []);
  for (const leaf of schemaLeaves) {
    const name = envNameFor(leaf.path, prefix);
    known.add(name);
    const raw = env[name];
    if (raw === undefined) continue;
    setPath(merged, leaf.path, coerceText(raw, leaf.schema));
    origins.set(leaf.path.join('.'), { kind: 'env', name });
  }
  for (const name of Object.keys(env)) {
    if (name.startsWith(prefix) && !known.has(name)) {
      warnings.push(`environment variable ${name} is not a known setting and was ignored`);
    }
  }

  for (const [dotted, value] of Object.entries(options.flags ?? {})) {
    if (value === undefined) continue;
    const path = dotted.split('.');
    const leaf = schemaLeaves.find((l) => l.path.join('.') === dotted);
    const v = typeof value === 'string' && leaf ? coerceText(value, leaf.schema) : value;
    setPath(merged, path, v);
    origins.set(dotted, { kind: 'flag', name: options.flagNames?.[dotted] ?? `--set ${dotted}` });
  }

  const validate = validatorFor(schema);
  if (!validate(merged)) {
    const details: string[] = [];
    for (const e of validate.errors ?? []) {
      if (e.keyword === 'anyOf') continue;
      const path = errorPath(e);
      const origin = origins.get(path) ?? originOfAncestor(origins, path);
      const got =
        e.keyword === 'additionalProperties' || e.keyword === 'required'
          ? ''
          : ` (got ${JSON.stringify(getPath(merged, path.split('.')))})`;
      const line = `${path || '(top level)'} ${describeError(e)}${got}, ${describeOrigin(origin)}`;
      if (!details.includes(line)) details.push(line);
    }
    throw new SharedError('CONFIG_INVALID', `invalid configuration:\n  ${details.join('\n  ')}`, details);
  }
  return { config: merged as Static<S>, origins, warnings };
}

function originOfAncestor(origins: Map<string, ConfigOrigin>, path: string): ConfigOrigin | undefined {
  const parts = path.split('.');
  for (let i = parts.length; i > 0; i--) {
    const o = origins.get(parts.slice(0, i).join('.'));
    if (o) return o;
  }
  for (const [k, o] of origins) if (k.startsWith(path + '.')) return o;
  return undefined;
}

/** All settings of a schema with their environment variable names, for `--help` and docs. */
export function settingsOf(
  schema: TObject,
  prefix = 'RAMPART_',
): { key: string; env: string; description: string; default: unknown }[] {
  return leaves(schema).map((l) => ({
    key: l.path.join('.'),
    env: envNameFor(l.path, prefix),
    description: (l.schema.description as string | undefined) ?? '',
    default: l.schema.default,
  }));
}
