import {
  DEFAULT_POLICY,
  type PolicyAction,
  type PolicyDocument,
  type PolicyStatement,
} from '@rampart/shared/policy';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { FINDING_CODES, lintPolicy, type Finding, type FindingCode } from './index.js';

const TOPIC: PolicyAction[] = ['publish', 'subscribe', 'receive'];
const allow = (actions: PolicyAction[], ...resources: string[]): PolicyStatement => ({
  effect: 'allow',
  actions,
  resources,
});
const deny = (actions: PolicyAction[], ...resources: string[]): PolicyStatement => ({
  effect: 'deny',
  actions,
  resources,
});
const doc = (...statements: PolicyStatement[]): PolicyDocument => ({ version: '2026-11', statements });
const codes = (findings: Finding[]) => findings.map((f) => [f.statement, f.resource, f.code]);
const OWN = allow(TOPIC, 'devices/${device.id}/#');

describe('lintPolicy: nothing to say', () => {
  it.each<[string, PolicyDocument]>([
    ['the default policy', DEFAULT_POLICY],
    [
      'own namespaces, variables, a model-wide deny with #',
      doc(
        allow(['connect'], '${device.model}-${device.id}'),
        OWN,
        allow(['publish'], '$rampart/devices/${device.id}/reports/+'),
        allow(['receive'], 'models/${device.model}/announcements', 'devices'),
        deny(TOPIC, 'devices/+/firmware/#'),
        deny(['publish', 'subscribe', 'receive'], 'devices/${device.id}/secret/#'),
      ),
    ],
    [
      'a deny of one exact topic nothing allows below',
      doc(allow(['publish'], 'a/b'), deny(['publish'], 'a/b')),
    ],
    [
      'a deny of a topic and its subtree',
      doc(OWN, deny(['publish'], 'devices/${device.id}/firmware', 'devices/${device.id}/firmware/#')),
    ],
    ['a deny of reading where nothing allows writing', doc(deny(['subscribe', 'receive'], 'x/#'))],
  ])('%s', (_name, document) => {
    expect(lintPolicy(document)).toEqual([]);
  });
});

describe('lintPolicy: validation errors', () => {
  it('reports them as errors with their statement and resource', () => {
    const document = {
      statements: [
        allow(['publish'], 'ok', 'a/#/b'),
        allow(['subscribe'], 'x/${device.serial}', 'y/${}', 'z/${device.attributes.a.b}'),
        allow(['connect', 'publish'], 'devices/${device.id}/#'),
        { effect: 'allow', actions: ['publish'], resources: ['x'], when: 'never' },
      ],
    } as unknown as PolicyDocument;
    expect(lintPolicy(document).filter((f) => f.severity === 'error')).toEqual([
      {
        severity: 'error',
        statement: 3,
        code: 'invalid-document',
        message: 'statements.3.when: is not a known field',
      },
      {
        severity: 'error',
        statement: 0,
        resource: 'a/#/b',
        code: 'invalid-resource',
        message: "statements.0.resources.1: 'a/#/b' has '#' at level 2: '#' may only be the last level",
      },
      expect.objectContaining({ statement: 1, resource: 'x/${device.serial}', code: 'unknown-variable' }),
      expect.objectContaining({ statement: 1, resource: 'y/${}', code: 'unknown-variable' }),
      expect.objectContaining({
        statement: 1,
        resource: 'z/${device.attributes.a.b}',
        code: 'unknown-variable',
      }),
      expect.objectContaining({
        statement: 2,
        resource: 'devices/${device.id}/#',
        code: 'connect-resource-levels',
      }),
    ]);
  });

  it('reports problems of the whole document at statement -1', () => {
    expect(lintPolicy({ version: '1999', statements: [] } as unknown as PolicyDocument)).toEqual([
      { severity: 'error', statement: -1, code: 'invalid-document', message: "version: must be '2026-11'" },
      {
        severity: 'error',
        statement: -1,
        code: 'invalid-document',
        message: 'statements: must have at least 1 items',
      },
    ]);
    expect(lintPolicy(null as unknown as PolicyDocument)).toEqual([
      expect.objectContaining({ statement: -1, code: 'invalid-document' }),
    ]);
  });

  it('still lints the statements that can be read', () => {
    const document = {
      statements: [allow(TOPIC, '#'), { effect: 'allow', actions: 'publish', resources: ['x'] }],
    } as unknown as PolicyDocument;
    expect(codes(lintPolicy(document))).toEqual([
      [1, undefined, 'invalid-document'],
      [0, '#', 'allow-everything'],
    ]);
  });
});

describe('lintPolicy: deny statements that deny less than they seem to', () => {
  it.each<[string, PolicyDocument, [number, string, FindingCode][]]>([
    ['+ at the end', doc(deny(['publish'], 'devices/+')), [[0, 'devices/+', 'deny-plus-at-end']]],
    [
      '+ at the end, deeper',
      doc(deny(TOPIC, 'devices/+/firmware/+')),
      [[0, 'devices/+/firmware/+', 'deny-plus-at-end']],
    ],
    ['+ alone', doc(deny(['publish'], '+')), [[0, '+', 'deny-plus-at-end']]],
    [
      'an exact topic with its subtree allowed',
      doc(OWN, deny(['publish'], 'devices/${device.id}/firmware')),
      [[1, 'devices/${device.id}/firmware', 'deny-exact-leaves-subtopics']],
    ],
    ['#', doc(deny(TOPIC, '#')), [[0, '#', 'deny-wildcard-skips-dollar']]],
    ['+/#', doc(deny(['publish'], '+/#')), [[0, '+/#', 'deny-wildcard-skips-dollar']]],
    ['+/+/#', doc(deny(['publish'], '+/+/#')), [[0, '+/+/#', 'deny-wildcard-skips-dollar']]],
    ['+/secret/# (names a level: not flagged)', doc(deny(['publish'], '+/secret/#')), []],
    [
      'reading but not writing, while writing is allowed',
      doc(OWN, deny(['subscribe', 'receive'], 'devices/${device.id}/secret/#')),
      [[1, 'devices/${device.id}/secret/#', 'deny-read-not-write']],
    ],
    [
      'subscribe but not receive',
      doc(deny(['subscribe'], 'x/#')),
      [[0, 'x/#', 'deny-subscribe-not-receive']],
    ],
    [
      'a variable a device may lack',
      doc(deny(['publish'], 'regions/${device.attributes.region}/#', 'rev/${device.hardwareRevision}/#')),
      [
        [0, 'regions/${device.attributes.region}/#', 'deny-variable-may-vanish'],
        [0, 'rev/${device.hardwareRevision}/#', 'deny-variable-may-vanish'],
      ],
    ],
    ['the device id or model (always there)', doc(deny(['publish'], 'x/${device.model}/${device.id}/#')), []],
  ])('%s', (_name, document, expected) => {
    const findings = lintPolicy(document);
    expect(codes(findings)).toEqual(expected);
    for (const f of findings) expect(f.severity).toBe('warning');
  });

  it('explains each finding', () => {
    const message = (document: PolicyDocument) => lintPolicy(document).map((f) => f.message);
    expect(message(doc(deny(['publish'], 'devices/+')))).toEqual([
      "'+' matches exactly one level, so 'devices/+' does not deny 'devices/x/y'; to deny everything below 'devices', use 'devices/#'",
    ]);
    expect(message(doc(deny(['publish'], '+')))).toEqual([
      "'+' matches exactly one level, so '+' does not deny 'x/y'; to deny every topic, use '#'",
    ]);
    expect(message(doc(OWN, deny(['publish'], 'devices/${device.id}/firmware')))).toEqual([
      "denies only the topic 'devices/${device.id}/firmware' itself: topics below it, such as 'devices/${device.id}/firmware/x', stay allowed by statement 0 ('devices/${device.id}/#'); to deny them too, use 'devices/${device.id}/firmware/#' (which also denies 'devices/${device.id}/firmware')",
    ]);
    expect(message(doc(deny(TOPIC, '#')))).toEqual([
      "'#' does not match topics starting with '$' (as in MQTT), so '$rampart/…' topics are not denied by it; add '$rampart/#' to deny them too",
    ]);
    expect(message(doc(OWN, deny(['receive'], 'devices/${device.id}/secret/#')))).toEqual([
      "denies receive on 'devices/${device.id}/secret/#' but not publish: statement 0 still allows publishing to it ('devices/${device.id}/#'); add 'publish' if the topic should be closed entirely",
    ]);
    expect(message(doc(deny(['subscribe', 'publish'], 'x/#')))).toEqual([
      "denies subscribing to 'x/#' but not receiving: subscriptions made before this policy applied (a persistent session) still deliver it; add 'receive'",
    ]);
    expect(message(doc(deny(['publish'], 'g/${device.groups}/${device.attributes.a}/#')))).toEqual([
      "uses ${device.groups}, ${device.attributes.a}: for a device without a usable value (missing, empty, or holding '/', '+' or '#'; for groups, a device in no group) 'g/${device.groups}/${device.attributes.a}/#' matches nothing, so this deny denies nothing; if that matters, deny without the variable",
    ]);
  });

  it('does not ask for subtree denies on connect', () => {
    expect(lintPolicy(doc(allow(['connect'], '${device.id}'), deny(['connect'], 'd1')))).toEqual([]);
  });
});

describe('lintPolicy: allow statements that reach too far', () => {
  it.each<[string, PolicyStatement, [string, FindingCode][]]>([
    ['#', allow(TOPIC, '#'), [['#', 'allow-everything']]],
    ['+ first', allow(['receive'], '+/status'), [['+/status', 'allow-wildcard-first-level']]],
    ['+/#', allow(['publish'], '+/#'), [['+/#', 'allow-wildcard-first-level']]],
    ['any client id (+)', allow(['connect'], '+'), [['+', 'allow-any-client-id']]],
    ['any client id (#)', allow(['connect'], '#'), [['#', 'allow-any-client-id']]],
    ['a fixed client id', allow(['connect'], 'factory-test'), [['factory-test', 'connect-other-client-id']]],
    [
      'a client id from an attribute',
      allow(['connect'], '${device.attributes.alias}'),
      [['${device.attributes.alias}', 'connect-other-client-id']],
    ],
    [
      'devices/+/status',
      allow(['receive'], 'devices/+/status'),
      [['devices/+/status', 'other-device-namespace']],
    ],
    ['devices/#', allow(TOPIC, 'devices/#'), [['devices/#', 'other-device-namespace']]],
    ['devices/d2/x', allow(['publish'], 'devices/d2/x'), [['devices/d2/x', 'other-device-namespace']]],
    [
      'a device level from an attribute',
      allow(['publish'], 'devices/${device.attributes.peer}/x'),
      [['devices/${device.attributes.peer}/x', 'other-device-namespace']],
    ],
    [
      'a device level that only starts with the id',
      allow(['publish'], 'devices/${device.id}-b/#'),
      [['devices/${device.id}-b/#', 'other-device-namespace']],
    ],
    [
      "another device's $rampart namespace",
      allow(['subscribe'], '$rampart/devices/+/updates/#'),
      [['$rampart/devices/+/updates/#', 'other-device-namespace']],
    ],
    ['$rampart/#', allow(['subscribe'], '$rampart/#'), [['$rampart/#', 'system-topic']]],
    ['$rampart/fleet/x', allow(['receive'], '$rampart/fleet/x'), [['$rampart/fleet/x', 'system-topic']]],
    ['$SYS/#', allow(['subscribe'], '$SYS/#'), [['$SYS/#', 'system-topic']]],
    [
      'one finding per resource',
      allow(['publish', 'connect'], '+', '${device.id}'),
      [
        ['+', 'allow-any-client-id'],
        ['+', 'allow-wildcard-first-level'],
      ],
    ],
  ])('%s', (_name, statement, expected) => {
    const findings = lintPolicy(doc(statement));
    expect(findings.map((f) => [f.resource, f.code])).toEqual(expected);
    for (const f of findings) expect(f).toMatchObject({ severity: 'warning', statement: 0 });
  });

  it('explains each finding', () => {
    const message = (statement: PolicyStatement) => lintPolicy(doc(statement)).map((f) => f.message);
    expect(message(allow(['publish', 'subscribe'], '#'))).toEqual([
      "allows publish, subscribe on every topic (all but those starting with '$'), every other device's included; name the topics instead",
    ]);
    expect(message(allow(['connect'], '+'))).toEqual([
      "allows connect with any client id: a device could connect as another device and take over its session (MQTT drops the older connection with the same client id); use '${device.id}'",
    ]);
    expect(message(allow(['connect'], 'factory-test'))).toEqual([
      "allows connect with the client id 'factory-test', which is not made from '${device.id}': every device with this policy may use it, and each would take over the others' sessions",
    ]);
    expect(message(allow(['receive'], 'devices/+/status', 'devices/d2/x'))).toEqual([
      "allows receive in other devices' namespaces: the device level of 'devices/+/status' is '+', a wildcard, not '${device.id}'",
      "allows receive in other devices' namespaces: the device level of 'devices/d2/x' is 'd2', a fixed device id, not '${device.id}'",
    ]);
    expect(message(allow(['subscribe'], '$rampart/fleet/#'))).toEqual([
      "allows subscribe on '$rampart/fleet/#', a '$' topic outside the device's own '$rampart/devices/${device.id}/…'; '$' topics belong to Rampart and the broker",
    ]);
  });
});

describe('lintPolicy: other', () => {
  it('warns about a repeated sid', () => {
    const document = doc(
      { ...allow(['publish'], 'devices/${device.id}/a'), sid: 'same' },
      { ...allow(['publish'], 'devices/${device.id}/b'), sid: 'same' },
    );
    expect(lintPolicy(document)).toEqual([
      {
        severity: 'warning',
        statement: 1,
        code: 'duplicate-sid',
        message:
          "sid 'same' is also the sid of statement 0; decisions name statements by sid, so make them unique",
      },
    ]);
  });
});

describe('docs/policy.md', () => {
  it('lists every finding code, in order', () => {
    const text = readFileSync(new URL('../../../../../docs/policy.md', import.meta.url), 'utf8');
    const lint = text.slice(text.indexOf('## Lint'));
    const documented = [...lint.matchAll(/^\| `([a-z-]+)` +\|/gm)].map((m) => m[1]);
    expect(documented).toEqual([...FINDING_CODES]);
  });
});
