import { ATTRIBUTE_NAME_PATTERN } from '../api/fleet.js';
// Resource patterns of policy statements: MQTT topic patterns (or one-level client-id patterns) whose
// levels may hold `${device.…}` variables. Parsed once, by hand: no regex runs on a decision path.

/** A variable a resource may use; each is replaced by one literal level (see `isLiteralLevelValue`). */
export type PolicyVariable =
  | { kind: 'id' }
  | { kind: 'model' }
  | { kind: 'hardwareRevision' }
  | { kind: 'groups' }
  | { kind: 'attribute'; name: string };

/** One level of a resource pattern. */
export type ResourceLevel =
  | { kind: 'literal'; text: string }
  /** `+`: exactly one level, whatever it holds. */
  | { kind: 'single' }
  /** `#`: the parent level and every level below it; only last. */
  | { kind: 'multi' }
  /** Literal text and variables, e.g. `${device.id}` or `${device.model}-${device.id}`. */
  | { kind: 'template'; parts: readonly (string | PolicyVariable)[] };

export interface ParsedResource {
  /** The resource as written. */
  text: string;
  levels: readonly ResourceLevel[];
  /** Whether a level holds a variable. */
  hasVariables: boolean;
  /** Whether a level is `+` or `#`. */
  hasWildcards: boolean;
}

/** Why a resource was refused: its wildcards or characters (`syntax`), or a variable (`variable`). */
export type ResourceProblem = 'syntax' | 'variable';

export type ParseResourceResult =
  { ok: true; resource: ParsedResource } | { ok: false; problem: ResourceProblem; message: string };

/** How variables are written, for messages and documentation. */
export const POLICY_VARIABLES = [
  '${device.id}',
  '${device.model}',
  '${device.hardwareRevision}',
  '${device.attributes.<name>}',
  '${device.groups}',
] as const;

/** Attribute names a resource can name: exactly the names the device registry accepts. */
export const POLICY_ATTRIBUTE_NAME_PATTERN = ATTRIBUTE_NAME_PATTERN;
const ATTRIBUTE_NAME = new RegExp(POLICY_ATTRIBUTE_NAME_PATTERN);
const ATTRIBUTE_PREFIX = 'device.attributes.';

/**
 * Whether a value may stand in a resource in place of a variable. A substituted value is always ONE
 * LITERAL LEVEL: a value that is empty or holds `/`, `+`, `#` or NUL would add levels or wildcards,
 * so the resource expanded with it matches nothing.
 */
export function isLiteralLevelValue(value: string): boolean {
  if (value.length === 0) return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x2f /* / */ || c === 0x2b /* + */ || c === 0x23 /* # */ || c === 0) return false;
  }
  return true;
}

/** The text of a variable, e.g. `${device.attributes.region}`. */
export function formatVariable(variable: PolicyVariable): string {
  return variable.kind === 'attribute'
    ? '${' + ATTRIBUTE_PREFIX + variable.name + '}'
    : '${device.' + variable.kind + '}';
}

/**
 * Parse a resource pattern: levels separated by `/`; `+` alone in a level matches one level; `#`
 * alone in the last level matches the rest; `${…}` names a variable. Never throws.
 */
export function parseResource(text: string): ParseResourceResult {
  if (text.length === 0) return { ok: false, problem: 'syntax', message: 'is empty' };
  if (text.includes('\u0000')) return { ok: false, problem: 'syntax', message: 'contains a NUL character' };
  const raw = text.split('/');
  const levels: ResourceLevel[] = [];
  let hasVariables = false;
  let hasWildcards = false;
  for (let i = 0; i < raw.length; i++) {
    const level = raw[i]!;
    if (level === '+') {
      levels.push({ kind: 'single' });
      hasWildcards = true;
      continue;
    }
    if (level === '#') {
      if (i !== raw.length - 1) {
        return {
          ok: false,
          problem: 'syntax',
          message: `has '#' at level ${i + 1}: '#' may only be the last level`,
        };
      }
      levels.push({ kind: 'multi' });
      hasWildcards = true;
      continue;
    }
    if (level.includes('#')) {
      return {
        ok: false,
        problem: 'syntax',
        message: `has '#' inside the level '${level}': '#' must be a level of its own`,
      };
    }
    if (level.includes('+')) {
      return {
        ok: false,
        problem: 'syntax',
        message: `has '+' inside the level '${level}': '+' must be a level of its own`,
      };
    }
    const parsed = parseLevel(level);
    if ('message' in parsed) return { ok: false, problem: 'variable', message: parsed.message };
    if (parsed.kind === 'template') hasVariables = true;
    levels.push(parsed);
  }
  return { ok: true, resource: { text, levels, hasVariables, hasWildcards } };
}

function parseLevel(level: string): ResourceLevel | { message: string } {
  let start = level.indexOf('${');
  if (start < 0) return { kind: 'literal', text: level };
  const parts: (string | PolicyVariable)[] = [];
  let pos = 0;
  while (start >= 0) {
    if (start > pos) parts.push(level.slice(pos, start));
    const end = level.indexOf('}', start + 2);
    if (end < 0) {
      return {
        message: `has an unterminated variable '${level.slice(start)}' (a variable ends with '}' within its level)`,
      };
    }
    const variable = resolveVariable(level.slice(start + 2, end));
    if ('message' in variable) return variable;
    parts.push(variable);
    pos = end + 1;
    start = level.indexOf('${', pos);
  }
  if (pos < level.length) parts.push(level.slice(pos));
  return { kind: 'template', parts };
}

function resolveVariable(name: string): PolicyVariable | { message: string } {
  switch (name) {
    case '':
      return { message: "has an empty variable name '${}'" };
    case 'device.id':
      return { kind: 'id' };
    case 'device.model':
      return { kind: 'model' };
    case 'device.hardwareRevision':
      return { kind: 'hardwareRevision' };
    case 'device.groups':
      return { kind: 'groups' };
  }
  if (name.startsWith(ATTRIBUTE_PREFIX)) {
    const attribute = name.slice(ATTRIBUTE_PREFIX.length);
    if (attribute === '') return { message: `has an empty attribute name in '\${${name}}'` };
    if (!ATTRIBUTE_NAME.test(attribute)) {
      return {
        message: `names the attribute '${attribute}' in '\${${name}}': attribute names are letters, digits, '_' and '-', starting with a letter or '_', at most 64 characters (as in the device registry)`,
      };
    }
    return { kind: 'attribute', name: attribute };
  }
  return { message: `uses the unknown variable '\${${name}}' (known: ${POLICY_VARIABLES.join(', ')})` };
}
