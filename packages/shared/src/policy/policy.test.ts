import { describe, expect, it } from 'vitest';
import {
  DEFAULT_POLICY,
  POLICY_ACTIONS,
  POLICY_VARIABLES,
  QUARANTINE_TOPICS,
  formatVariable,
  isLiteralLevelValue,
  parseResource,
  validatePolicyDocument,
  type PolicyDocument,
  type PolicyFieldError,
  type ResourceLevel,
} from './index.js';

const allow = (actions: string[], resources: string[], extra: Record<string, unknown> = {}) => ({
  effect: 'allow',
  actions,
  resources,
  ...extra,
});
const doc = (...statements: unknown[]) => ({ version: '2026-11', statements });

function errorsOf(document: unknown): PolicyFieldError[] {
  const result = validatePolicyDocument(document);
  return result.ok ? [] : result.errors;
}

describe('policy wire format', () => {
  it('names the four actions', () => {
    expect(POLICY_ACTIONS).toEqual(['connect', 'publish', 'subscribe', 'receive']);
  });

  it('accepts the default policy and a document without version', () => {
    expect(validatePolicyDocument(DEFAULT_POLICY)).toEqual({ ok: true });
    expect(validatePolicyDocument({ statements: [allow(['publish'], ['a/b'])] })).toEqual({ ok: true });
  });

  it('describes the default policy and the quarantine topics', () => {
    expect(DEFAULT_POLICY.statements).toEqual([
      { sid: 'connect-as-self', effect: 'allow', actions: ['connect'], resources: ['${device.id}'] },
      {
        sid: 'own-topics',
        effect: 'allow',
        actions: ['publish', 'subscribe', 'receive'],
        resources: ['devices/${device.id}/#', '$rampart/devices/${device.id}/#'],
      },
    ]);
    expect(QUARANTINE_TOPICS).toEqual([
      '$rampart/devices/${device.id}/updates/#',
      '$rampart/devices/${device.id}/reports/#',
    ]);
    for (const topic of QUARANTINE_TOPICS) expect(parseResource(topic).ok).toBe(true);
  });
});

describe('validatePolicyDocument: schema', () => {
  it.each<[string, unknown, PolicyFieldError[]]>([
    ['not an object', 42, [{ path: '(document)', message: 'must be of type object' }]],
    ['no statements', { version: '2026-11' }, [{ path: 'statements', message: 'is required' }]],
    ['empty statements', doc(), [{ path: 'statements', message: 'must have at least 1 items' }]],
    [
      'too many statements',
      doc(...Array.from({ length: 101 }, () => allow(['publish'], ['a']))),
      [{ path: 'statements', message: 'must have at most 100 items' }],
    ],
    [
      'another version',
      { version: '2025-01', statements: [allow(['publish'], ['a'])] },
      [{ path: 'version', message: "must be '2026-11'" }],
    ],
    [
      'unknown field at the top',
      { ...doc(allow(['publish'], ['a'])), id: 'x' },
      [{ path: 'id', message: 'is not a known field' }],
    ],
    [
      'unknown field in a statement',
      doc(allow(['publish'], ['a'], { condition: 'x' })),
      [{ path: 'statements.0.condition', message: 'is not a known field' }],
    ],
    [
      'unknown effect',
      doc({ effect: 'maybe', actions: ['publish'], resources: ['a'] }),
      [{ path: 'statements.0.effect', message: 'must be one of "allow", "deny"' }],
    ],
    [
      'unknown action',
      doc(allow(['publish', 'retain'], ['a'])),
      [
        {
          path: 'statements.0.actions.1',
          message: 'must be one of "connect", "publish", "subscribe", "receive"',
        },
      ],
    ],
    [
      'no actions',
      doc(allow([], ['a'])),
      [{ path: 'statements.0.actions', message: 'must have at least 1 items' }],
    ],
    [
      'repeated action',
      doc(allow(['publish', 'receive', 'publish'], ['a'])),
      [{ path: 'statements.0.actions', message: 'must not repeat an action (items 0 and 2 are the same)' }],
    ],
    [
      'no resources',
      doc(allow(['publish'], [])),
      [{ path: 'statements.0.resources', message: 'must have at least 1 items' }],
    ],
    [
      'empty resource',
      doc(allow(['publish'], ['a', ''])),
      [{ path: 'statements.0.resources.1', message: 'must be at least 1 characters long' }],
    ],
    [
      'resource too long',
      doc(allow(['publish'], ['a'.repeat(513)])),
      [{ path: 'statements.0.resources.0', message: 'must be at most 512 characters long' }],
    ],
    [
      'bad sid',
      doc(allow(['publish'], ['a'], { sid: 'has space' })),
      [{ path: 'statements.0.sid', message: 'must match the pattern ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' }],
    ],
    [
      'missing effect',
      doc({ actions: ['publish'], resources: ['a'] }),
      [{ path: 'statements.0.effect', message: 'is required' }],
    ],
  ])('%s', (_name, document, expected) => {
    expect(errorsOf(document)).toEqual(expected);
  });

  it('accepts a resource of exactly 512 characters and a sid', () => {
    expect(errorsOf(doc(allow(['publish'], ['a'.repeat(512)], { sid: 'own.topics_1-a' })))).toEqual([]);
  });

  it('reports every problem, schema and syntax, in one answer', () => {
    expect(
      errorsOf({
        statements: [
          allow(['publish'], ['a/#/b', 'ok/+']),
          { effect: 'deny', actions: ['subscribe'], resources: ['x/${device.serial}'], extra: 1 },
        ],
      }),
    ).toEqual([
      { path: 'statements.1.extra', message: 'is not a known field' },
      {
        path: 'statements.0.resources.0',
        message: "'a/#/b' has '#' at level 2: '#' may only be the last level",
      },
      {
        path: 'statements.1.resources.0',
        message:
          "'x/${device.serial}' uses the unknown variable '${device.serial}' (known: ${device.id}, ${device.model}, ${device.hardwareRevision}, ${device.attributes.<name>}, ${device.groups})",
      },
    ]);
  });
});

describe('validatePolicyDocument: resource syntax', () => {
  it.each<[string, string]>([
    ['a/#/b', "'a/#/b' has '#' at level 2: '#' may only be the last level"],
    ['#/a', "'#/a' has '#' at level 1: '#' may only be the last level"],
    ['a/b#', "'a/b#' has '#' inside the level 'b#': '#' must be a level of its own"],
    ['a/#b', "'a/#b' has '#' inside the level '#b': '#' must be a level of its own"],
    ['a/b+', "'a/b+' has '+' inside the level 'b+': '+' must be a level of its own"],
    ['a/++/c', "'a/++/c' has '+' inside the level '++': '+' must be a level of its own"],
    [
      '${device.id}+',
      "'${device.id}+' has '+' inside the level '${device.id}+': '+' must be a level of its own",
    ],
    ['a/\u0000', "'a/\u0000' contains a NUL character"],
    ['a/${}', "'a/${}' has an empty variable name '${}'"],
    [
      'a/${device.id',
      "'a/${device.id' has an unterminated variable '${device.id' (a variable ends with '}' within its level)",
    ],
    [
      'a/${device.attributes.x/y}',
      "'a/${device.attributes.x/y}' has an unterminated variable '${device.attributes.x' (a variable ends with '}' within its level)",
    ],
    [
      'a/${device.attributes.}',
      "'a/${device.attributes.}' has an empty attribute name in '${device.attributes.}'",
    ],
    [
      'a/${device.attributes.fw.version}',
      "'a/${device.attributes.fw.version}' names the attribute 'fw.version' in '${device.attributes.fw.version}': attribute names are letters, digits, '_' and '-', starting with a letter or '_', at most 64 characters (as in the device registry)",
    ],
    [
      'a/${device.attributes.' + 'x'.repeat(65) + '}',
      `'a/\${device.attributes.${'x'.repeat(65)}}' names the attribute '${'x'.repeat(65)}' in '\${device.attributes.${'x'.repeat(65)}}': attribute names are letters, digits, '_' and '-', starting with a letter or '_', at most 64 characters (as in the device registry)`,
    ],
    [
      'a/${ device.id }',
      "'a/${ device.id }' uses the unknown variable '${ device.id }' (known: ${device.id}, ${device.model}, ${device.hardwareRevision}, ${device.attributes.<name>}, ${device.groups})",
    ],
    [
      '${device.ID}',
      "'${device.ID}' uses the unknown variable '${device.ID}' (known: ${device.id}, ${device.model}, ${device.hardwareRevision}, ${device.attributes.<name>}, ${device.groups})",
    ],
    [
      '${id}',
      "'${id}' uses the unknown variable '${id}' (known: ${device.id}, ${device.model}, ${device.hardwareRevision}, ${device.attributes.<name>}, ${device.groups})",
    ],
  ])('refuses %j', (resource, message) => {
    expect(errorsOf(doc(allow(['publish'], ['ok', resource])))).toEqual([
      { path: 'statements.0.resources.1', message },
    ]);
  });

  it.each([
    '#',
    '+',
    '+/+/#',
    'a//b',
    '/a',
    'a/',
    '$rampart/devices/${device.id}/#',
    'devices/${device.model}-${device.id}/x',
    'fleet/${device.groups}/${device.groups}/+',
    'a/${device.hardwareRevision}/${device.attributes._x9}/${device.attributes.A}',
    'a/$/}/{/$x{',
    'a/${device.id}}',
  ])('accepts %j', (resource) => {
    expect(errorsOf(doc(allow(['publish', 'subscribe', 'receive'], [resource])))).toEqual([]);
  });

  it('allows one level only for connect, with wildcards and variables', () => {
    for (const resource of ['${device.id}', '+', '#', 'factory-test', '${device.model}-${device.id}']) {
      expect(errorsOf(doc(allow(['connect'], [resource])))).toEqual([]);
    }
    expect(errorsOf(doc(allow(['connect', 'publish'], ['+', 'devices/${device.id}/#'])))).toEqual([
      {
        path: 'statements.0.resources.1',
        message:
          "'devices/${device.id}/#' has 3 levels, but connect resources are client ids, one level without '/'; put connect in a statement of its own",
      },
    ]);
  });
});

describe('parseResource', () => {
  const level = (resource: string): readonly ResourceLevel[] => {
    const parsed = parseResource(resource);
    if (!parsed.ok) throw new Error(parsed.message);
    return parsed.resource.levels;
  };

  it('splits levels and finds wildcards and variables', () => {
    expect(level('devices/${device.id}/+/#')).toEqual([
      { kind: 'literal', text: 'devices' },
      { kind: 'template', parts: [{ kind: 'id' }] },
      { kind: 'single' },
      { kind: 'multi' },
    ]);
    expect(
      level('m/${device.model}-${device.attributes.region}.x/${device.groups}${device.hardwareRevision}'),
    ).toEqual([
      { kind: 'literal', text: 'm' },
      { kind: 'template', parts: [{ kind: 'model' }, '-', { kind: 'attribute', name: 'region' }, '.x'] },
      { kind: 'template', parts: [{ kind: 'groups' }, { kind: 'hardwareRevision' }] },
    ]);
    expect(level('a//')).toEqual([
      { kind: 'literal', text: 'a' },
      { kind: 'literal', text: '' },
      { kind: 'literal', text: '' },
    ]);
    const parsed = parseResource('$rampart/x');
    expect(parsed.ok && parsed.resource).toMatchObject({ hasVariables: false, hasWildcards: false });
    const vars = parseResource('a/${device.id}/+');
    expect(vars.ok && vars.resource).toMatchObject({ hasVariables: true, hasWildcards: true });
  });

  it('says whether a refusal is about syntax or a variable', () => {
    expect(parseResource('a/#/b')).toMatchObject({ ok: false, problem: 'syntax' });
    expect(parseResource('')).toMatchObject({ ok: false, problem: 'syntax', message: 'is empty' });
    expect(parseResource('a/${device.nope}')).toMatchObject({ ok: false, problem: 'variable' });
  });

  it('formats variables as they are written', () => {
    expect(
      [
        { kind: 'id' },
        { kind: 'model' },
        { kind: 'hardwareRevision' },
        { kind: 'attribute', name: '<name>' },
        { kind: 'groups' },
      ].map((v) => formatVariable(v as never)),
    ).toEqual([...POLICY_VARIABLES]);
  });
});

describe('isLiteralLevelValue', () => {
  it.each<[string, boolean]>([
    ['dw-0001', true],
    ['$rampart', true],
    ['with space', true],
    ['ünïcode', true],
    ['', false],
    ['a/b', false],
    ['/', false],
    ['+', false],
    ['a+', false],
    ['#', false],
    ['x#', false],
    ['a\u0000', false],
  ])('%j → %s', (value, expected) => {
    expect(isLiteralLevelValue(value)).toBe(expected);
  });
});

describe('types', () => {
  it('types a document', () => {
    const document: PolicyDocument = {
      statements: [{ effect: 'deny', actions: ['publish'], resources: ['devices/+/firmware/#'] }],
    };
    expect(validatePolicyDocument(document).ok).toBe(true);
  });
});
