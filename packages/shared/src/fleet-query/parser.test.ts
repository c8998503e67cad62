import { describe, expect, it } from 'vitest';
import { SharedError } from '../errors/index.js';
import type { FieldRef, FleetQueryNode } from './ast.js';
import {
  FLEET_QUERY_FIELDS,
  FleetQuerySyntaxError,
  MAX_QUERY_DEPTH,
  MAX_QUERY_LENGTH,
  formatFleetQuery,
  normalizeTimestamp,
  parseFleetQuery,
  referencedGroups,
} from './index.js';

const model: FieldRef = { kind: 'device', name: 'model' };
const status: FieldRef = { kind: 'device', name: 'status' };
const attr = (name: string): FieldRef => ({ kind: 'attribute', name });
const eq = (field: FieldRef, value: string | number | boolean): FleetQueryNode => ({
  type: 'compare',
  field,
  op: '=',
  value,
});
const a = eq(attr('a'), 1);
const b = eq(attr('b'), 2);
const c = eq(attr('c'), 3);

/** The error a query raises: its message and column. */
function failure(text: string): { message: string; column: number | null } {
  try {
    parseFleetQuery(text);
  } catch (err) {
    expect(err).toBeInstanceOf(FleetQuerySyntaxError);
    expect(err).toBeInstanceOf(SharedError);
    expect((err as SharedError).code).toBe('QUERY_SYNTAX');
    return { message: (err as Error).message, column: (err as FleetQuerySyntaxError).column };
  }
  throw new Error(`expected ${JSON.stringify(text)} to be refused`);
}

describe('parseFleetQuery: grammar', () => {
  it('parses the documented example', () => {
    expect(parseFleetQuery('model = "DW100" and attributes.region = "eu" and status = "active"')).toEqual({
      type: 'and',
      operands: [eq(model, 'DW100'), eq(attr('region'), 'eu'), eq(status, 'active')],
    });
  });

  it('knows every field', () => {
    expect(FLEET_QUERY_FIELDS).toEqual([
      'id',
      'model',
      'hardwareRevision',
      'serial',
      'status',
      'createdAt',
      'updatedAt',
      'statusChangedAt',
      'group',
    ]);
    for (const name of ['id', 'model', 'hardwareRevision', 'serial'] as const) {
      expect(parseFleetQuery(`${name} = "x"`)).toEqual(eq({ kind: 'device', name }, 'x'));
    }
    for (const name of ['createdAt', 'updatedAt', 'statusChangedAt'] as const) {
      expect(parseFleetQuery(`${name} >= "2024-05-01"`)).toEqual({
        type: 'compare',
        field: { kind: 'device', name },
        op: '>=',
        value: '2024-05-01',
      });
    }
    expect(parseFleetQuery('group = "eu"')).toEqual(eq({ kind: 'group' }, 'eu'));
    expect(parseFleetQuery('attributes.fw-version_2 = "1"')).toEqual(eq(attr('fw-version_2'), '1'));
    expect(parseFleetQuery('attributes._x = 1')).toEqual(eq(attr('_x'), 1));
  });

  it('matches keywords and field names without regard to case, attribute names exactly', () => {
    expect(
      parseFleetQuery('MODEL = "a" AND Not STATUS In ("active") oR attributes.Region LIKE "e*"'),
    ).toEqual({
      type: 'or',
      operands: [
        {
          type: 'and',
          operands: [
            eq(model, 'a'),
            { type: 'not', operand: { type: 'in', field: status, values: ['active'], negated: false } },
          ],
        },
        { type: 'like', field: attr('Region'), pattern: 'e*', negated: false },
      ],
    });
    expect(parseFleetQuery('createdat > "2024-01-01" and Attributes.x = TRUE')).toEqual({
      type: 'and',
      operands: [
        { type: 'compare', field: { kind: 'device', name: 'createdAt' }, op: '>', value: '2024-01-01' },
        eq(attr('x'), true),
      ],
    });
  });

  it('supports every operator', () => {
    for (const op of ['=', '!=', '<', '<=', '>', '>='] as const) {
      expect(parseFleetQuery(`attributes.n ${op} 5`)).toEqual({
        type: 'compare',
        field: attr('n'),
        op,
        value: 5,
      });
      expect(parseFleetQuery(`attributes.n${op}5`)).toEqual({
        type: 'compare',
        field: attr('n'),
        op,
        value: 5,
      });
    }
    expect(parseFleetQuery('model in ("a", "b")')).toEqual({
      type: 'in',
      field: model,
      values: ['a', 'b'],
      negated: false,
    });
    expect(parseFleetQuery('attributes.v not in (1, "1", true)')).toEqual({
      type: 'in',
      field: attr('v'),
      values: [1, '1', true],
      negated: true,
    });
    expect(parseFleetQuery('model like "DW1*"')).toEqual({
      type: 'like',
      field: model,
      pattern: 'DW1*',
      negated: false,
    });
    expect(parseFleetQuery('serial not like "?X*"')).toEqual({
      type: 'like',
      field: { kind: 'device', name: 'serial' },
      pattern: '?X*',
      negated: true,
    });
    expect(parseFleetQuery('attributes.region exists')).toEqual({
      type: 'exists',
      field: attr('region'),
      negated: false,
    });
    expect(parseFleetQuery('attributes.region not exists')).toEqual({
      type: 'exists',
      field: attr('region'),
      negated: true,
    });
    expect(parseFleetQuery('hardwareRevision exists and serial not exists')).toEqual({
      type: 'and',
      operands: [
        { type: 'exists', field: { kind: 'device', name: 'hardwareRevision' }, negated: false },
        { type: 'exists', field: { kind: 'device', name: 'serial' }, negated: true },
      ],
    });
    expect(parseFleetQuery('group != "eu"')).toEqual({
      type: 'compare',
      field: { kind: 'group' },
      op: '!=',
      value: 'eu',
    });
    expect(parseFleetQuery('group not in ("a","b")')).toEqual({
      type: 'in',
      field: { kind: 'group' },
      values: ['a', 'b'],
      negated: true,
    });
  });

  it('binds not tighter than and, and tighter than or', () => {
    expect(parseFleetQuery('attributes.a = 1 or attributes.b = 2 and attributes.c = 3')).toEqual({
      type: 'or',
      operands: [a, { type: 'and', operands: [b, c] }],
    });
    expect(parseFleetQuery('attributes.a = 1 and attributes.b = 2 or attributes.c = 3')).toEqual({
      type: 'or',
      operands: [{ type: 'and', operands: [a, b] }, c],
    });
    expect(parseFleetQuery('not attributes.a = 1 and attributes.b = 2')).toEqual({
      type: 'and',
      operands: [{ type: 'not', operand: a }, b],
    });
    expect(parseFleetQuery('not not attributes.a = 1')).toEqual({
      type: 'not',
      operand: { type: 'not', operand: a },
    });
  });

  it('lets parentheses override precedence and keeps explicit grouping, not redundant parentheses', () => {
    expect(parseFleetQuery('(attributes.a = 1 or attributes.b = 2) and attributes.c = 3')).toEqual({
      type: 'and',
      operands: [{ type: 'or', operands: [a, b] }, c],
    });
    expect(parseFleetQuery('not (attributes.a = 1 or attributes.b = 2)')).toEqual({
      type: 'not',
      operand: { type: 'or', operands: [a, b] },
    });
    expect(parseFleetQuery('attributes.a = 1 and (attributes.b = 2 and attributes.c = 3)')).toEqual({
      type: 'and',
      operands: [a, { type: 'and', operands: [b, c] }],
    });
    expect(parseFleetQuery('((attributes.a = 1))')).toEqual(a);
  });

  it('reads values: strings with escapes, single quotes, numbers, booleans', () => {
    const value = (text: string) => (parseFleetQuery(`attributes.v = ${text}`) as { value: unknown }).value;
    expect(value('"a\\"b\\\\c\\nd\\te\\u00e9\\u2603"')).toBe('a"b\\c\nd\te\u00e9\u2603');
    expect(value('"\\r\\b\\f\\/\\\'"')).toBe("\r\b\f/'");
    expect(value("'it\\'s \"quoted\"'")).toBe('it\'s "quoted"');
    expect(value('""')).toBe('');
    expect(value('"ünïcødé ✓"')).toBe('ünïcødé ✓');
    expect(value('42')).toBe(42);
    expect(value('-7')).toBe(-7);
    expect(value('3.25')).toBe(3.25);
    expect(value('-0.5')).toBe(-0.5);
    expect(value('1e3')).toBe(1000);
    expect(value('2.5E-2')).toBe(0.025);
    expect(value('-0')).toBe(0);
    expect(Object.is(value('-0'), 0)).toBe(true);
    expect(value('true')).toBe(true);
    expect(value('FALSE')).toBe(false);
  });

  it('accepts any whitespace, including newlines and tabs', () => {
    expect(parseFleetQuery('\n\tmodel\n=\r\n"a"\t')).toEqual(eq(model, 'a'));
  });

  it('lists the groups a query names', () => {
    expect(
      referencedGroups(parseFleetQuery('group = "a" or not group in ("b", "a") and model = "group"')),
    ).toEqual(['a', 'b']);
    expect(referencedGroups(parseFleetQuery('model = "x"'))).toEqual([]);
  });
});

describe('parseFleetQuery: type checks', () => {
  it.each([
    [
      'status = "on"',
      'status must be one of pending, active, disabled, quarantined, decommissioned (got "on" at column 10)',
      10,
    ],
    [
      'status in ("active", "Active")',
      'status must be one of pending, active, disabled, quarantined, decommissioned (got "Active" at column 22)',
      22,
    ],
    ['status = 1', 'status compares with quoted text values (got 1 at column 10)', 10],
    ['status < "active"', 'status supports only =, !=, in and not in (got "<" at column 8)', 8],
    ['status like "a*"', 'status supports only =, !=, in and not in (got "like" at column 8)', 8],
    ['group < "eu"', 'group supports only =, !=, in and not in (got "<" at column 7)', 7],
    ['group not like "eu*"', 'group supports only =, !=, in and not in (got "not like" at column 7)', 7],
    ['group = 5', 'group compares with quoted text values (got 5 at column 9)', 9],
    ['model = 100', 'model compares with quoted text values (got 100 at column 9)', 9],
    ['id in ("a", true)', 'id compares with quoted text values (got true at column 13)', 13],
    [
      'createdAt > "yesterday"',
      'createdAt compares with an ISO-8601 date or time such as "2024-05-01" or "2024-05-01T12:00:00Z" (got "yesterday" at column 13)',
      13,
    ],
    [
      'updatedAt < "2024-02-30"',
      'updatedAt compares with an ISO-8601 date or time such as "2024-05-01" or "2024-05-01T12:00:00Z" (got "2024-02-30" at column 13)',
      13,
    ],
    [
      'statusChangedAt >= 1714521600',
      'statusChangedAt compares with quoted text values (got 1714521600 at column 20)',
      20,
    ],
    ['attributes.on < true', 'true and false compare only with = and != (got true at column 17)', 17],
    [
      'attributes.on not in (1, false) and attributes.x >= false',
      'true and false compare only with = and != (got false at column 53)',
      53,
    ],
    [
      'model exists',
      '"exists" applies only to attributes.<name>, hardwareRevision and serial, not to model (at column 7)',
      7,
    ],
    [
      'group not exists',
      '"not exists" applies only to attributes.<name>, hardwareRevision and serial, not to group (at column 7)',
      7,
    ],
  ])('%s', (text, message, column) => {
    expect(failure(text)).toEqual({ message, column });
  });

  it('accepts ISO-8601 dates and times, and likes on them', () => {
    for (const t of [
      '2024-05-01',
      '2024-05-01T12:00',
      '2024-05-01T12:00:30',
      '2024-05-01T12:00:30.5Z',
      '2024-05-01 12:00:30.123+02:00',
      '2024-02-29T23:59:59-05:30',
    ]) {
      expect(() => parseFleetQuery(`createdAt < "${t}"`)).not.toThrow();
    }
    expect(parseFleetQuery('createdAt like "2024-05*"')).toMatchObject({ type: 'like', pattern: '2024-05*' });
  });
});

describe('normalizeTimestamp', () => {
  it('turns dates and times into the stored UTC form', () => {
    expect(normalizeTimestamp('2024-05-01')).toBe('2024-05-01T00:00:00.000Z');
    expect(normalizeTimestamp('2024-05-01T12:00')).toBe('2024-05-01T12:00:00.000Z');
    expect(normalizeTimestamp('2024-05-01T12:00:30.5')).toBe('2024-05-01T12:00:30.500Z');
    expect(normalizeTimestamp('2024-05-01T12:00:30.123Z')).toBe('2024-05-01T12:00:30.123Z');
    expect(normalizeTimestamp('2024-05-01T01:30:00+02:00')).toBe('2024-04-30T23:30:00.000Z');
    expect(normalizeTimestamp('2024-05-01T22:00:00-03:00')).toBe('2024-05-02T01:00:00.000Z');
  });

  it('refuses what is not a real date or time', () => {
    for (const t of [
      '',
      '2024-5-1',
      '2024-13-01',
      '2023-02-29',
      '2024-05-01T24:00',
      '2024-05-01T12:60',
      'now',
    ]) {
      expect(normalizeTimestamp(t)).toBeNull();
    }
  });
});

describe('parseFleetQuery: syntax errors name the column and what was expected', () => {
  it.each([
    ['model = ', 'expected a value after "=" at column 9', 9],
    [
      'model = active',
      'expected a value after "=" at column 9, found "active" (quote text values: "active")',
      9,
    ],
    [
      'attributes.x = null',
      'expected a value after "=" at column 16, found "null" (there is no null: use "not exists" to match a missing value)',
      16,
    ],
    ['model = )', 'expected a value after "=" at column 9, found ")"', 9],
    [
      'modle = "DW100"',
      'unknown field "modle" at column 1 (fields: id, model, hardwareRevision, serial, status, createdAt, updatedAt, statusChangedAt, group, attributes.<name>)',
      1,
    ],
    [
      'model = "a" or foo.bar = 1',
      'unknown field "foo.bar" at column 16 (fields: id, model, hardwareRevision, serial, status, createdAt, updatedAt, statusChangedAt, group, attributes.<name>)',
      16,
    ],
    ['serial = "abc', 'unterminated string starting at column 10', 10],
    ["model = 'abc\\'", 'unterminated string starting at column 9', 9],
    ['model = "DW100" and serial = "ab\\', 'unterminated string starting at column 30', 30],
    [
      'model = "a\\qb"',
      'invalid escape "\\q" at column 11 (use \\", \\\', \\\\, \\n, \\t, \\r, \\b, \\f, \\/ or \\uXXXX)',
      11,
    ],
    ['model = "\\u12G4"', 'invalid escape "\\u" at column 10 (expected 4 hex digits after \\u)', 10],
    ['model = "\\u12"', 'invalid escape "\\u" at column 10 (expected 4 hex digits after \\u)', 10],
    ['attributes.n = 1.2.3', 'invalid number "1.2.3" at column 16', 16],
    ['attributes.n = 12abc', 'invalid number "12abc" at column 16', 16],
    ['attributes.n = 1.', 'invalid number "1." at column 16', 16],
    ['attributes.n = 1e999', 'number "1e999" at column 16 is out of range', 16],
    ['model = "a" # comment', 'unexpected character "#" at column 13', 13],
    ['model == "a"', 'expected a value after "=" at column 8, found "="', 8],
    ['model ! "a"', 'unexpected character "!" at column 7', 7],
    ['model = "a"\u0000', 'unexpected character U+0000 at column 12', 12],
    [
      'model "a"',
      'expected an operator (=, !=, <, <=, >, >=, in, not in, like, not like, exists, not exists) after "model" at column 7, found string "a"',
      7,
    ],
    [
      'model',
      'expected an operator (=, !=, <, <=, >, >=, in, not in, like, not like, exists, not exists) after "model" at column 6',
      6,
    ],
    ['model not = "a"', 'expected "in", "like" or "exists" after "not" at column 11, found "="', 11],
    ['model in "a"', 'expected "(" after "in" at column 10, found string "a"', 10],
    ['model in ()', 'expected a value after "(" at column 11, found ")"', 11],
    ['model in ("a" "b")', 'expected "," or ")" after "a" at column 15, found string "b"', 15],
    ['model in ("a",)', 'expected a value after "," at column 15, found ")"', 15],
    ['model in ("a"', 'expected "," or ")" after "a" at column 14', 14],
    ['model like DW1', 'expected a quoted pattern after "like" at column 12, found "DW1"', 12],
    ['model like 1', 'expected a quoted pattern after "like" at column 12, found number 1', 12],
    ['model = "a" and', 'expected a condition after "and" at column 16', 16],
    ['model = "a" or or model = "b"', 'expected a condition after "or" at column 16, found "or"', 16],
    ['and model = "a"', 'expected a condition at column 1, found "and"', 1],
    ['not', 'expected a condition after "not" at column 4', 4],
    ['()', 'expected a condition after "(" at column 2, found ")"', 2],
    ['"DW100"', 'expected a condition at column 1, found string "DW100"', 1],
    ['= "a"', 'expected a condition at column 1, found "="', 1],
    ['(model = "a"', 'expected ")" at column 13 to close "(" at column 1', 13],
    ['(model = "a" model = "b")', 'expected ")" at column 14 to close "(" at column 1, found "model"', 14],
    ['model = "a")', 'unexpected ")" at column 12 (there is no "(" to close)', 12],
    [
      'model = "a" model = "b"',
      'unexpected "model" at column 13 (expected "and", "or" or the end of the query)',
      13,
    ],
    [
      'model = "a" "b"',
      'unexpected string "b" at column 13 (expected "and", "or" or the end of the query)',
      13,
    ],
    [
      'attributes = 1',
      'expected an attribute name after "attributes" at column 11 (write attributes.<name>)',
      11,
    ],
    [
      'attributes. = 1',
      'expected an attribute name after "attributes." at column 12 (write attributes.<name>)',
      12,
    ],
    [
      'attributes.a.b = 1',
      'invalid attribute name "a.b" at column 12 (letters, digits, "_" and "-", starting with a letter or "_", at most 64 characters)',
      12,
    ],
    [
      'attributes.9lives = 1',
      'invalid attribute name "9lives" at column 12 (letters, digits, "_" and "-", starting with a letter or "_", at most 64 characters)',
      12,
    ],
    [
      `attributes.${'x'.repeat(65)} = 1`,
      `invalid attribute name "${'x'.repeat(65)}" at column 12 (letters, digits, "_" and "-", starting with a letter or "_", at most 64 characters)`,
      12,
    ],
  ])('%s', (text, message, column) => {
    expect(failure(text)).toEqual({ message, column });
  });

  it('refuses an empty query', () => {
    expect(failure('')).toEqual({ message: 'query is empty', column: null });
    expect(failure(' \n\t ')).toEqual({ message: 'query is empty', column: null });
  });

  it('shortens long tokens in messages', () => {
    const long = 'x'.repeat(100);
    expect(failure(`model = "a" "${long}"`).message).toBe(
      `unexpected string "${'x'.repeat(36)}... at column 13 (expected "and", "or" or the end of the query)`,
    );
  });
});

describe('parseFleetQuery: limits', () => {
  it(`accepts ${MAX_QUERY_LENGTH} characters and refuses more`, () => {
    const base = 'model = ""';
    const fits = `model = "${'x'.repeat(MAX_QUERY_LENGTH - base.length)}"`;
    expect(fits).toHaveLength(MAX_QUERY_LENGTH);
    expect(() => parseFleetQuery(fits)).not.toThrow();
    expect(failure(fits + ' ')).toEqual({
      message: `query is too long: ${MAX_QUERY_LENGTH + 1} characters, at most ${MAX_QUERY_LENGTH}`,
      column: null,
    });
  });

  it(`accepts ${MAX_QUERY_DEPTH} levels of nesting and refuses more`, () => {
    const nested = (n: number) => `${'('.repeat(n)}model = "a"${')'.repeat(n)}`;
    expect(parseFleetQuery(nested(MAX_QUERY_DEPTH))).toEqual(eq(model, 'a'));
    expect(failure(nested(MAX_QUERY_DEPTH + 1))).toEqual({
      message: `query nests too deeply at column ${MAX_QUERY_DEPTH + 1} (at most ${MAX_QUERY_DEPTH} levels of parentheses and "not")`,
      column: MAX_QUERY_DEPTH + 1,
    });
    expect(() => parseFleetQuery(`${'not '.repeat(MAX_QUERY_DEPTH)}model = "a"`)).not.toThrow();
    expect(failure(`${'not '.repeat(MAX_QUERY_DEPTH + 1)}model = "a"`).message).toContain('nests too deeply');
    expect(failure(`${'not ('.repeat(20)}model = "a"${')'.repeat(20)}`).message).toContain(
      'nests too deeply',
    );
  });

  it('parses long flat chains without deep recursion', () => {
    const chain = Array.from({ length: 250 }, (_, i) => `id = "${i}"`).join(' or ');
    const node = parseFleetQuery(chain);
    expect(node).toMatchObject({ type: 'or' });
    expect((node as { operands: unknown[] }).operands).toHaveLength(250);
  });
});

describe('formatFleetQuery', () => {
  it.each([
    ['model="DW100"   AND   attributes.region=\'eu\'', 'model = "DW100" and attributes.region = "eu"'],
    ['(a.b = 1)', null],
    ['NOT (model = "a" OR model = "b")', 'not (model = "a" or model = "b")'],
    ['not model = "a"', 'not model = "a"'],
    ['not (model = "a")', 'not model = "a"'],
    [
      'attributes.a = 1 or attributes.b = 2 and attributes.c = 3',
      'attributes.a = 1 or attributes.b = 2 and attributes.c = 3',
    ],
    [
      '(attributes.a = 1 or attributes.b = 2) and attributes.c = 3',
      '(attributes.a = 1 or attributes.b = 2) and attributes.c = 3',
    ],
    [
      '(attributes.a = 1 or attributes.b = 2) or attributes.c = 3',
      '(attributes.a = 1 or attributes.b = 2) or attributes.c = 3',
    ],
    [
      'attributes.a = 1 and (attributes.b = 2 and attributes.c = 3)',
      'attributes.a = 1 and (attributes.b = 2 and attributes.c = 3)',
    ],
    [
      '((attributes.a = 1 and attributes.b = 2)) or attributes.c = 3',
      'attributes.a = 1 and attributes.b = 2 or attributes.c = 3',
    ],
    ['attributes.v IN (1,"x",TRUE)', 'attributes.v in (1, "x", true)'],
    ['group NOT IN ("a")', 'group not in ("a")'],
    ['serial NOT LIKE "a*"', 'serial not like "a*"'],
    ['attributes.r NOT EXISTS', 'attributes.r not exists'],
    ['attributes.n >= -1.50', 'attributes.n >= -1.5'],
    ['attributes.n < 1E21', 'attributes.n < 1e+21'],
    ['attributes.n < 0.0000001', 'attributes.n < 1e-7'],
    ['model = "tab\\there \\"q\\" \\\\ \\u0001 é"', 'model = "tab\\there \\"q\\" \\\\ \\u0001 é"'],
    ["model = '\\'single\\''", 'model = "\'single\'"'],
    ['createdat > "2024-05-01"', 'createdAt > "2024-05-01"'],
  ])('%s', (text, canonical) => {
    if (canonical === null) {
      expect(() => parseFleetQuery(text)).toThrow();
      return;
    }
    const node = parseFleetQuery(text);
    expect(formatFleetQuery(node)).toBe(canonical);
    expect(parseFleetQuery(canonical)).toEqual(node);
  });

  it('round-trips trees that the parser never produces from flat text', () => {
    const trees: FleetQueryNode[] = [
      { type: 'and', operands: [{ type: 'and', operands: [a, b] }, c] },
      { type: 'or', operands: [a, { type: 'or', operands: [b, c] }] },
      { type: 'not', operand: { type: 'not', operand: { type: 'and', operands: [a, b] } } },
      { type: 'or', operands: [{ type: 'not', operand: { type: 'or', operands: [a, b] } }, c] },
      eq(attr('s'), '\u0000\u001f\u007f\u2028\ud83d\ude00 "\\\''),
      eq(attr('lone'), '\ud800'),
      { type: 'compare', field: attr('n'), op: '<=', value: -123456789.125 },
      { type: 'compare', field: attr('n'), op: '>', value: Number.MAX_SAFE_INTEGER },
      { type: 'compare', field: attr('n'), op: '>', value: 5e-324 },
    ];
    for (const tree of trees) expect(parseFleetQuery(formatFleetQuery(tree))).toEqual(tree);
  });

  it('round-trips a query using every construct', () => {
    const text =
      'not (id = "d1" or hardwareRevision != "A") and (serial < "s" or serial <= "t" or serial > "u" or serial >= "v") ' +
      'and model like "DW1?*" and status not in ("disabled", "quarantined") and createdAt > "2024-01-01T00:00:00Z" ' +
      'and updatedAt < "2030-01-01" and statusChangedAt >= "2024-02-29" and attributes.region in ("eu", "us") ' +
      'and attributes.battery > 20.5 and attributes.beta = false and attributes.tag exists and attributes.old not exists ' +
      'and group = "eu" and group not in ("lab") and serial not like "X*"';
    const node = parseFleetQuery(text);
    const formatted = formatFleetQuery(node);
    expect(parseFleetQuery(formatted)).toEqual(node);
    expect(formatFleetQuery(parseFleetQuery(formatted))).toBe(formatted);
  });
});
