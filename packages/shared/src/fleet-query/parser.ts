// Hand-written recursive descent: no parser library fits a grammar this small with errors this precise.
import { ATTRIBUTE_NAME_PATTERN, DEVICE_STATUSES } from '../api/fleet.js';
import type { CompareOperator, DeviceFieldName, FieldRef, FleetQueryNode, FleetQueryValue } from './ast.js';
import { FleetQuerySyntaxError, tokenize, type Token } from './lexer.js';

export const MAX_QUERY_LENGTH = 4000;
/** Deepest nesting of parentheses and `not`. */
export const MAX_QUERY_DEPTH = 32;

/** Fields a query can name, besides `attributes.<name>`. */
export const FLEET_QUERY_FIELDS = [
  'id',
  'model',
  'hardwareRevision',
  'serial',
  'status',
  'createdAt',
  'updatedAt',
  'statusChangedAt',
  'group',
] as const;
export type FleetQueryFieldName = (typeof FLEET_QUERY_FIELDS)[number];

export const TIME_FIELDS: readonly DeviceFieldName[] = ['createdAt', 'updatedAt', 'statusChangedAt'];
/** Fields that may have no value, and so support `exists` (besides attributes). */
const OPTIONAL_FIELDS: readonly DeviceFieldName[] = ['hardwareRevision', 'serial'];
const ATTRIBUTE_NAME = new RegExp(ATTRIBUTE_NAME_PATTERN);
const KEYWORDS = new Set(['and', 'or', 'not', 'in', 'like', 'exists', 'true', 'false']);
const COMPARE_OPERATORS = new Set<string>(['=', '!=', '<', '<=', '>', '>=']);
const FIELD_LIST = `${FLEET_QUERY_FIELDS.join(', ')}, attributes.<name>`;
const FIELD_BY_LOWER = new Map<string, FleetQueryFieldName>(
  FLEET_QUERY_FIELDS.map((f) => [f.toLowerCase(), f]),
);

export function isAttributeName(name: string): boolean {
  return ATTRIBUTE_NAME.test(name);
}

/**
 * Normalize an ISO-8601 date or date-time to the stored form (`2024-05-01T12:00:00.000Z`), or null
 * when it is not one. A date alone means midnight UTC; a time without offset is UTC.
 */
export function normalizeTimestamp(text: string): string | null {
  const m =
    /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?(Z|[+-]\d{2}:\d{2})?)?$/.exec(
      text,
    );
  if (!m) return null;
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map((p) =>
    Number(p ?? 0),
  ) as [number, number, number, number, number, number];
  const ms = Number(((m[7] ?? '') + '000').slice(0, 3));
  if (hour > 23 || minute > 59 || second > 59) return null;
  const t = Date.UTC(year, month - 1, day, hour, minute, second, ms);
  const check = new Date(t);
  if (check.getUTCFullYear() !== year || check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day) {
    return null;
  }
  const zone = m[8] ?? 'Z';
  let offsetMinutes = 0;
  if (zone !== 'Z') {
    const hh = Number(zone.slice(1, 3));
    const mm = Number(zone.slice(4, 6));
    if (hh > 23 || mm > 59) return null;
    offsetMinutes = (zone[0] === '-' ? -1 : 1) * (hh * 60 + mm);
  }
  const result = new Date(t - offsetMinutes * 60_000);
  return result.getUTCFullYear() >= 1000 && result.getUTCFullYear() <= 9999 ? result.toISOString() : null;
}

/** Parse a fleet query; throws FleetQuerySyntaxError (a SharedError with code QUERY_SYNTAX). */
export function parseFleetQuery(text: string): FleetQueryNode {
  if (text.length > MAX_QUERY_LENGTH) {
    throw new FleetQuerySyntaxError(
      `query is too long: ${text.length} characters, at most ${MAX_QUERY_LENGTH}`,
    );
  }
  if (text.trim() === '') throw new FleetQuerySyntaxError('query is empty');
  return new Parser(tokenize(text)).parseQuery();
}

interface ValueToken {
  value: FleetQueryValue;
  column: number;
  text: string;
}

class Parser {
  private pos = 0;
  private depth = 0;

  constructor(private readonly tokens: Token[]) {}

  parseQuery(): FleetQueryNode {
    const node = this.parseOr();
    const t = this.peek();
    if (t.kind !== 'end') {
      const hint =
        t.text === ')' ? 'there is no "(" to close' : 'expected "and", "or" or the end of the query';
      throw this.error(`unexpected ${describe(t)} at column ${t.column} (${hint})`, t);
    }
    return node;
  }

  private parseOr(): FleetQueryNode {
    const operands = [this.parseAnd()];
    while (this.atKeyword('or')) {
      this.next();
      operands.push(this.parseAnd());
    }
    return operands.length === 1 ? operands[0]! : { type: 'or', operands };
  }

  private parseAnd(): FleetQueryNode {
    const operands = [this.parseUnary()];
    while (this.atKeyword('and')) {
      this.next();
      operands.push(this.parseUnary());
    }
    return operands.length === 1 ? operands[0]! : { type: 'and', operands };
  }

  private parseUnary(): FleetQueryNode {
    if (!this.atKeyword('not')) return this.parsePrimary();
    this.enter(this.next());
    const operand = this.parseUnary();
    this.depth--;
    return { type: 'not', operand };
  }

  private parsePrimary(): FleetQueryNode {
    const t = this.peek();
    if (t.kind === 'punct' && t.text === '(') {
      this.enter(this.next());
      const node = this.parseOr();
      const close = this.peek();
      if (close.kind !== 'punct' || close.text !== ')') {
        throw this.error(
          `expected ")" at column ${close.column} to close "(" at column ${t.column}${found(close)}`,
          close,
        );
      }
      this.next();
      this.depth--;
      return node;
    }
    if (t.kind !== 'word' || KEYWORDS.has(t.text.toLowerCase())) throw this.expected('a condition');
    return this.parseCondition();
  }

  private parseCondition(): FleetQueryNode {
    const fieldToken = this.next();
    const field = this.resolveField(fieldToken);
    const label = fieldLabel(field);
    const t = this.peek();

    if (t.kind === 'punct' && COMPARE_OPERATORS.has(t.text)) {
      this.next();
      const op = t.text as CompareOperator;
      const value = this.parseValue();
      this.checkOperator(field, op, t);
      this.checkValue(field, value, op);
      return { type: 'compare', field, op, value: value.value };
    }

    const opToken = t;
    let negated = false;
    let keyword = t.kind === 'word' ? t.text.toLowerCase() : '';
    if (keyword === 'not') {
      this.next();
      negated = true;
      const k = this.peek();
      keyword = k.kind === 'word' ? k.text.toLowerCase() : '';
      if (keyword !== 'in' && keyword !== 'like' && keyword !== 'exists') {
        throw this.expected('"in", "like" or "exists"');
      }
    }
    const opText = negated ? `not ${keyword}` : keyword;
    switch (keyword) {
      case 'in': {
        this.next();
        this.checkOperator(field, opText, opToken);
        this.expectPunct('(');
        const values: FleetQueryValue[] = [];
        for (;;) {
          const value = this.parseValue();
          this.checkValue(field, value, '=');
          values.push(value.value);
          const sep = this.peek();
          if (sep.kind === 'punct' && sep.text === ',') {
            this.next();
            continue;
          }
          if (sep.kind === 'punct' && sep.text === ')') {
            this.next();
            break;
          }
          throw this.expected('"," or ")"');
        }
        return { type: 'in', field, values, negated };
      }
      case 'like': {
        this.next();
        this.checkOperator(field, opText, opToken);
        const p = this.peek();
        if (p.kind !== 'string') throw this.expected('a quoted pattern');
        this.next();
        return { type: 'like', field, pattern: p.value as string, negated };
      }
      case 'exists': {
        this.next();
        if (field.kind === 'device' ? !OPTIONAL_FIELDS.includes(field.name) : field.kind === 'group') {
          throw this.error(
            `"${opText}" applies only to attributes.<name>, hardwareRevision and serial, not to ${label} (at column ${opToken.column})`,
            opToken,
          );
        }
        return { type: 'exists', field, negated };
      }
      default:
        throw this.expected(
          'an operator (=, !=, <, <=, >, >=, in, not in, like, not like, exists, not exists)',
        );
    }
  }

  private resolveField(t: Token): FieldRef {
    const dot = t.text.indexOf('.');
    const head = (dot < 0 ? t.text : t.text.slice(0, dot)).toLowerCase();
    if (head === 'attributes') {
      const name = dot < 0 ? '' : t.text.slice(dot + 1);
      const column = t.column + (dot < 0 ? t.text.length : dot + 1);
      if (name === '') {
        throw new FleetQuerySyntaxError(
          `expected an attribute name after "${t.text}" at column ${column} (write attributes.<name>)`,
          column,
        );
      }
      if (!isAttributeName(name)) {
        throw new FleetQuerySyntaxError(
          `invalid attribute name "${name}" at column ${column} (letters, digits, "_" and "-", starting with a letter or "_", at most 64 characters)`,
          column,
        );
      }
      return { kind: 'attribute', name };
    }
    const name = dot < 0 ? FIELD_BY_LOWER.get(head) : undefined;
    if (name === undefined) {
      throw this.error(`unknown field "${t.text}" at column ${t.column} (fields: ${FIELD_LIST})`, t);
    }
    return name === 'group' ? { kind: 'group' } : { kind: 'device', name };
  }

  private parseValue(): ValueToken {
    const t = this.peek();
    if (t.kind === 'string' || t.kind === 'number') {
      this.next();
      return { value: t.value!, column: t.column, text: t.text };
    }
    if (t.kind === 'word') {
      const lower = t.text.toLowerCase();
      if (lower === 'true' || lower === 'false') {
        this.next();
        return { value: lower === 'true', column: t.column, text: t.text };
      }
      const hint =
        lower === 'null'
          ? ' (there is no null: use "not exists" to match a missing value)'
          : ` (quote text values: ${JSON.stringify(t.text)})`;
      throw this.expected('a value', hint);
    }
    throw this.expected('a value');
  }

  private checkOperator(field: FieldRef, op: string, at: Token): void {
    const restricted =
      field.kind === 'group' ? 'group' : field.kind === 'device' && field.name === 'status' ? 'status' : null;
    if (restricted && !['=', '!=', 'in', 'not in'].includes(op)) {
      throw this.error(
        `${restricted} supports only =, !=, in and not in (got "${op}" at column ${at.column})`,
        at,
      );
    }
  }

  private checkValue(field: FieldRef, v: ValueToken, op: string): void {
    const got = `(got ${clip(v.text)} at column ${v.column})`;
    if (field.kind === 'attribute') {
      if (typeof v.value === 'boolean' && op !== '=' && op !== '!=') {
        throw this.error(`true and false compare only with = and != ${got}`, v);
      }
      return;
    }
    const label = fieldLabel(field);
    if (typeof v.value !== 'string') throw this.error(`${label} compares with quoted text values ${got}`, v);
    if (
      field.kind === 'device' &&
      field.name === 'status' &&
      !(DEVICE_STATUSES as readonly string[]).includes(v.value)
    ) {
      throw this.error(`status must be one of ${DEVICE_STATUSES.join(', ')} ${got}`, v);
    }
    if (field.kind === 'device' && TIME_FIELDS.includes(field.name) && normalizeTimestamp(v.value) === null) {
      throw this.error(
        `${label} compares with an ISO-8601 date or time such as "2024-05-01" or "2024-05-01T12:00:00Z" ${got}`,
        v,
      );
    }
  }

  private enter(t: Token): void {
    if (++this.depth > MAX_QUERY_DEPTH) {
      throw this.error(
        `query nests too deeply at column ${t.column} (at most ${MAX_QUERY_DEPTH} levels of parentheses and "not")`,
        t,
      );
    }
  }

  private expectPunct(text: string): void {
    const t = this.peek();
    if (t.kind !== 'punct' || t.text !== text) throw this.expected(`"${text}"`);
    this.next();
  }

  /** `expected <what> after "<previous token>" at column <n>, found <current token>`. */
  private expected(what: string, hint = ''): FleetQuerySyntaxError {
    const t = this.peek();
    const prev = this.pos > 0 ? this.tokens[this.pos - 1] : undefined;
    const after = prev ? ` after ${quoteToken(prev)}` : '';
    return this.error(`expected ${what}${after} at column ${t.column}${found(t)}${hint}`, t);
  }

  private error(message: string, at: { column: number }): FleetQuerySyntaxError {
    return new FleetQuerySyntaxError(message, at.column);
  }

  private atKeyword(keyword: string): boolean {
    const t = this.peek();
    return t.kind === 'word' && t.text.toLowerCase() === keyword;
  }

  private peek(): Token {
    return this.tokens[this.pos]!;
  }

  private next(): Token {
    const t = this.tokens[this.pos]!;
    if (t.kind !== 'end') this.pos++;
    return t;
  }
}

function fieldLabel(field: FieldRef): string {
  return field.kind === 'attribute'
    ? `attributes.${field.name}`
    : field.kind === 'group'
      ? 'group'
      : field.name;
}

function describe(t: Token): string {
  switch (t.kind) {
    case 'end':
      return 'end of query';
    case 'string':
      return `string ${quoteToken(t)}`;
    case 'number':
      return `number ${t.text}`;
    default:
      return quoteToken(t);
  }
}

/** A token as written, quoted unless it is a string literal (which already is), shortened when long. */
function quoteToken(t: Token): string {
  return t.kind === 'string' ? clip(t.text) : JSON.stringify(clip(t.text));
}

function clip(text: string): string {
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function found(t: Token): string {
  return t.kind === 'end' ? '' : `, found ${describe(t)}`;
}
