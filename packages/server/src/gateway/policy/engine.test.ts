import {
  DEFAULT_POLICY,
  type PolicyAction,
  type PolicyDocument,
  type PolicyStatement,
} from '@rampart/shared/policy';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { RampartError } from '../../errors.js';
import {
  compilePolicies,
  simulatePolicies,
  type AttachedPolicy,
  type Decision,
  type DecisionEffect,
  type DeviceContext,
} from './index.js';

function device(overrides: Partial<DeviceContext> = {}): DeviceContext {
  return {
    id: 'd1',
    model: 'DW100',
    hardwareRevision: 'B',
    attributes: { region: 'eu', floor: 3, outdoor: true },
    groups: ['eu-doors', 'pilot'],
    status: 'active',
    ...overrides,
  };
}

const defaultPolicy: AttachedPolicy = {
  name: 'default',
  version: 1,
  attachedTo: 'default',
  target: '*',
  document: DEFAULT_POLICY,
};

function policy(
  name: string,
  statements: PolicyStatement[],
  attachment: Partial<Pick<AttachedPolicy, 'attachedTo' | 'target' | 'version'>> = {},
): AttachedPolicy {
  return {
    name,
    version: attachment.version ?? 1,
    attachedTo: attachment.attachedTo ?? 'device',
    target: attachment.target ?? 'd1',
    document: { version: '2026-11', statements },
  };
}

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
const TOPIC: PolicyAction[] = ['publish', 'subscribe', 'receive'];

type Case = [action: PolicyAction, resource: string, effect: DecisionEffect];

function expectDecisions(policies: AttachedPolicy[], ctx: DeviceContext, cases: Case[]): void {
  const compiled = compilePolicies(policies, ctx);
  const got = cases.map(([action, resource]) => {
    const d = compiled.decide(action, resource);
    expect(d.allowed).toBe(d.effect === 'allow');
    return [action, resource, d.effect];
  });
  expect(got).toEqual(cases);
}

describe('the default policy', () => {
  it.each<Case>([
    ['connect', 'd1', 'allow'],
    ['connect', 'd2', 'default-deny'],
    ['connect', 'd1/x', 'default-deny'],
    ['connect', '', 'default-deny'],
    ['publish', 'devices/d1/telemetry', 'allow'],
    ['publish', 'devices/d1', 'allow'],
    ['publish', 'devices/d1/a/b/c', 'allow'],
    ['publish', 'devices/d2/telemetry', 'default-deny'],
    ['publish', 'devices/d10/telemetry', 'default-deny'],
    ['publish', 'devices', 'default-deny'],
    ['publish', '$rampart/devices/d1/updates/available', 'allow'],
    ['publish', '$rampart/devices/d2/updates/available', 'default-deny'],
    ['publish', '$rampart/fleet', 'default-deny'],
    ['receive', 'devices/d1/commands/reboot', 'allow'],
    ['receive', 'devices/d2/commands/reboot', 'default-deny'],
    ['subscribe', 'devices/d1/#', 'allow'],
    ['subscribe', 'devices/d1/+/temp', 'allow'],
    ['subscribe', '$rampart/devices/d1/#', 'allow'],
    ['subscribe', 'devices/+/temp', 'default-deny'],
    ['subscribe', 'devices/#', 'default-deny'],
    ['subscribe', '#', 'default-deny'],
    ['subscribe', '+/d1/#', 'default-deny'],
  ])('%s %s → %s', (action, resource, effect) => {
    expectDecisions([defaultPolicy], device(), [[action, resource, effect]]);
  });
});

describe('reasons', () => {
  const factory = policy(
    'factory',
    [
      allow(['connect'], '${device.id}'),
      allow(TOPIC, 'devices/${device.id}/#'),
      {
        sid: 'no-firmware',
        effect: 'deny',
        actions: ['publish', 'subscribe'],
        resources: ['devices/+/firmware/#'],
      },
    ],
    { attachedTo: 'model', target: 'DW100', version: 3 },
  );
  const compiled = compilePolicies([factory], device());

  it('names the statement, its policy, the attachment and the resource', () => {
    expect(compiled.decide('publish', 'devices/d1/firmware/v2')).toEqual({
      allowed: false,
      effect: 'deny',
      statement: {
        policy: 'factory',
        version: 3,
        attachedTo: 'model',
        target: 'DW100',
        sid: 'no-firmware',
        index: 2,
        resource: 'devices/+/firmware/#',
        pattern: 'devices/+/firmware/#',
      },
      reason:
        "denied by statement 2 (sid no-firmware) of policy 'factory' v3 on model DW100: resource 'devices/+/firmware/#' matches",
    });
    expect(compiled.decide('publish', 'devices/d1/telemetry')).toEqual({
      allowed: true,
      effect: 'allow',
      statement: {
        policy: 'factory',
        version: 3,
        attachedTo: 'model',
        target: 'DW100',
        index: 1,
        resource: 'devices/${device.id}/#',
        pattern: 'devices/d1/#',
      },
      reason:
        "allowed by statement 1 of policy 'factory' v3 on model DW100: resource 'devices/${device.id}/#' (for this device 'devices/d1/#') matches",
    });
  });

  it('words each action and each kind of decision', () => {
    const reason = (action: PolicyAction, resource: string) => compiled.decide(action, resource).reason;
    expect(reason('connect', 'd1')).toBe(
      "allowed by statement 0 of policy 'factory' v3 on model DW100: resource '${device.id}' (for this device 'd1') matches the client id",
    );
    expect(reason('connect', 'intruder')).toBe(
      "no statement allows connect with client id 'intruder' (default deny)",
    );
    expect(reason('publish', 'x/y')).toBe("no statement allows publish on 'x/y' (default deny)");
    expect(reason('subscribe', 'devices/d1/telemetry/+')).toBe(
      "allowed by statement 1 of policy 'factory' v3 on model DW100: resource 'devices/${device.id}/#' (for this device 'devices/d1/#') covers the filter",
    );
    expect(reason('subscribe', 'devices/d1/#')).toBe(
      "denied by statement 2 (sid no-firmware) of policy 'factory' v3 on model DW100: resource 'devices/+/firmware/#' overlaps the filter",
    );
    expect(reason('subscribe', 'x/#')).toBe("no statement allows subscribe on 'x/#' (default deny)");
    expect(reason('publish', 'a/+')).toBe(
      "'a/+' is not a valid topic for publish: a topic name cannot contain the wildcards '+' or '#'",
    );
    expect(reason('subscribe', 'a/#/b')).toBe(
      "'a/#/b' is not a valid topic filter for subscribe: '#' may only be the last level",
    );
  });

  it('points at an allow that covers only part of a refused filter', () => {
    const d = compilePolicies([defaultPolicy], device()).decide('subscribe', 'devices/+/status');
    expect(d).toMatchObject({ allowed: false, effect: 'default-deny', statement: null });
    expect(d.reason).toBe(
      "no statement allows subscribe on 'devices/+/status' (default deny); statement 1 (sid own-topics) of policy 'default' v1 attached by default allows part of it ('devices/d1/#'), but a subscription needs one resource that covers the whole filter",
    );
  });

  it('names each kind of attachment', () => {
    for (const [attachedTo, target, words] of [
      ['default', '*', 'attached by default'],
      ['model', 'DW100', 'on model DW100'],
      ['group', 'eu-doors', 'on group eu-doors'],
      ['device', 'd1', 'on device d1'],
    ] as const) {
      const p = policy('p', [allow(['publish'], 'x')], { attachedTo, target, version: 7 });
      expect(compilePolicies([p], device()).decide('publish', 'x').reason).toBe(
        `allowed by statement 0 of policy 'p' v7 ${words}: resource 'x' matches`,
      );
    }
  });

  it('answers an allow or a deny with one decision per statement, made once and kept', () => {
    expect(compiled.decide('publish', 'devices/d1/a')).toBe(compiled.decide('publish', 'devices/d1/b'));
    expect(Object.isFrozen(compiled.decide('publish', 'devices/d1/a'))).toBe(true);
  });

  it('refuses an unknown action', () => {
    for (const action of ['retain', '__proto__', 'toString', 'constructor']) {
      expect(compiled.decide(action as PolicyAction, 'x')).toMatchObject({
        allowed: false,
        effect: 'default-deny',
        reason: `'${action}' is not an action (default deny)`,
      });
    }
  });
});

describe('deny wins, default deny', () => {
  const broad = policy('broad', [allow(TOPIC, 'devices/${device.id}/#')], {
    attachedTo: 'group',
    target: 'pilot',
  });
  const narrowDeny = policy('no-secrets', [deny(['publish', 'receive', 'subscribe'], 'devices/+/secret/#')], {
    attachedTo: 'model',
    target: 'DW100',
  });

  it.each<Case>([
    ['publish', 'devices/d1/telemetry', 'allow'],
    ['publish', 'devices/d1/secret', 'deny'],
    ['publish', 'devices/d1/secret/key', 'deny'],
    ['receive', 'devices/d1/secret/key', 'deny'],
    ['publish', 'devices/d1/secrets', 'allow'],
    ['subscribe', 'devices/d1/#', 'deny'],
    ['subscribe', 'devices/d1/+', 'deny'],
    ['subscribe', 'devices/d1/public/#', 'allow'],
    ['subscribe', 'devices/d1/+/x', 'deny'],
    ['subscribe', 'devices/d1/secrets/#', 'allow'],
  ])('%s %s → %s, whatever the order of the policies', (action, resource, effect) => {
    expectDecisions([broad, narrowDeny], device(), [[action, resource, effect]]);
    expectDecisions([narrowDeny, broad], device(), [[action, resource, effect]]);
  });

  it('lets a deny in the same statement list win over an exact allow', () => {
    const p = policy('p', [allow(['publish'], 'a/b'), deny(['publish'], '#')]);
    expectDecisions([p], device(), [
      ['publish', 'a/b', 'deny'],
      ['publish', 'x', 'deny'],
    ]);
  });

  it('denies what nothing allows, for every action', () => {
    expectDecisions([], device(), [
      ['connect', 'd1', 'default-deny'],
      ['publish', 'a', 'default-deny'],
      ['subscribe', '#', 'default-deny'],
      ['receive', 'a', 'default-deny'],
    ]);
  });

  it('decides each action on its own statements', () => {
    const p = policy('p', [allow(['publish'], 'a/#'), deny(['receive'], 'a/b')]);
    expectDecisions([p], device(), [
      ['publish', 'a/b', 'allow'],
      ['receive', 'a/b', 'deny'],
      ['receive', 'a/c', 'default-deny'],
      ['subscribe', 'a/c', 'default-deny'],
      ['connect', 'a', 'default-deny'],
    ]);
  });
});

describe('$ topics', () => {
  it('are not matched by patterns starting with a wildcard', () => {
    const p = policy('wide', [allow(TOPIC, '#'), allow(TOPIC, '+/status')]);
    expectDecisions([p], device(), [
      ['publish', 'anything/at/all', 'allow'],
      ['publish', '$rampart/devices/d1/x', 'default-deny'],
      ['publish', '$SYS/broker/clients', 'default-deny'],
      ['receive', '$rampart/x', 'default-deny'],
      ['publish', 'x/status', 'allow'],
      ['publish', '$x/status', 'default-deny'],
      ['subscribe', '#', 'allow'],
      ['subscribe', '$SYS/#', 'default-deny'],
      ['subscribe', '$rampart/+', 'default-deny'],
    ]);
  });

  it('are not denied by patterns starting with a wildcard either', () => {
    const p = policy('lockdown', [deny(TOPIC, '#')]);
    expectDecisions([defaultPolicy, p], device(), [
      ['publish', 'devices/d1/x', 'deny'],
      ['publish', '$rampart/devices/d1/x', 'allow'],
      ['subscribe', '$rampart/devices/d1/#', 'allow'],
      ['subscribe', 'devices/d1/#', 'deny'],
    ]);
  });

  it('are matched by patterns naming them', () => {
    const p = policy('sys', [allow(TOPIC, '$SYS/#'), deny(['publish'], '$SYS/+/clients')]);
    expectDecisions([p], device(), [
      ['receive', '$SYS/broker/uptime', 'allow'],
      ['publish', '$SYS/broker/clients', 'deny'],
      ['subscribe', '$SYS/#', 'allow'],
    ]);
  });
});

describe('variables', () => {
  it('substitute the device id, model, hardware revision and attributes', () => {
    const p = policy('vars', [
      allow(['publish'], 'models/${device.model}/${device.hardwareRevision}/#'),
      allow(['publish'], 'regions/${device.attributes.region}/floors/${device.attributes.floor}'),
      allow(['publish'], 'outdoor/${device.attributes.outdoor}'),
      allow(['publish'], 'mixed/${device.model}-${device.id}.x'),
    ]);
    expectDecisions([p], device(), [
      ['publish', 'models/DW100/B/x', 'allow'],
      ['publish', 'models/DW100/A/x', 'default-deny'],
      ['publish', 'models/DW200/B/x', 'default-deny'],
      ['publish', 'regions/eu/floors/3', 'allow'],
      ['publish', 'regions/us/floors/3', 'default-deny'],
      ['publish', 'outdoor/true', 'allow'],
      ['publish', 'mixed/DW100-d1.x', 'allow'],
      ['publish', 'mixed/DW100-d2.x', 'default-deny'],
    ]);
  });

  it('match nothing when the value is missing', () => {
    const p = policy('vars', [
      allow(['publish'], 'rev/${device.hardwareRevision}'),
      allow(['publish'], 'attr/${device.attributes.missing}'),
      allow(['publish'], 'proto/${device.attributes.constructor}'),
      allow(['publish'], 'proto/${device.attributes.toString}'),
    ]);
    const compiled = compilePolicies([p], device({ hardwareRevision: null }));
    expect(compiled.stats.patterns).toBe(0);
    for (const topic of ['rev/null', 'rev/', 'attr/undefined', 'proto/function Object() { [native code] }']) {
      expect(compiled.decide('publish', topic).effect).toBe('default-deny');
    }
  });

  it('expand ${device.groups} to one pattern per group, the same group everywhere in a resource', () => {
    const p = policy('groups', [
      allow(['publish', 'subscribe'], 'groups/${device.groups}/#'),
      allow(['publish'], 'pairs/${device.groups}/${device.groups}'),
    ]);
    const ctx = device({ groups: ['pilot', 'eu-doors', 'pilot'] });
    expectDecisions([p], ctx, [
      ['publish', 'groups/pilot/x', 'allow'],
      ['publish', 'groups/eu-doors/x', 'allow'],
      ['publish', 'groups/us-doors/x', 'default-deny'],
      ['subscribe', 'groups/pilot/#', 'allow'],
      ['subscribe', 'groups/+/x', 'default-deny'],
      ['publish', 'pairs/pilot/pilot', 'allow'],
      ['publish', 'pairs/pilot/eu-doors', 'default-deny'],
    ]);
    expect(compilePolicies([p], ctx).stats.patterns).toBe(2 * 2 + 2);
    const none = compilePolicies([p], device({ groups: [] }));
    expect(none.stats.patterns).toBe(0);
    expect(none.decide('publish', 'groups/pilot/x').effect).toBe('default-deny');
  });

  it.each([
    ['a slash', 'eu/x'],
    ['a plus', '+'],
    ['a hash', '#'],
    ['a plus inside', 'e+u'],
    ['nothing', ''],
    ['NUL', 'eu\u0000'],
  ])('cannot inject levels or wildcards: an attribute with %s matches nothing', (_what, region) => {
    const p = policy('inject', [
      allow(TOPIC, 'regions/${device.attributes.region}/data'),
      allow(['connect'], '${device.attributes.region}'),
    ]);
    const compiled = compilePolicies([p], device({ attributes: { region } }));
    expect(compiled.stats.patterns).toBe(0);
    for (const topic of ['regions/eu/x/data', 'regions/eu/data', 'regions/anything/data', 'regions//data']) {
      expect(compiled.decide('publish', topic).effect).toBe('default-deny');
    }
    expect(compiled.decide('subscribe', 'regions/+/data').effect).toBe('default-deny');
    expect(compiled.decide('connect', 'anyone').effect).toBe('default-deny');
  });

  it('a number that prints with + (1e+21) is no level either; a group with / is skipped alone', () => {
    const p = policy('p', [allow(['publish'], 'n/${device.attributes.big}', 'g/${device.groups}')]);
    const compiled = compilePolicies([p], device({ attributes: { big: 1e21 }, groups: ['ok', 'a/b'] }));
    expect(compiled.decide('publish', 'n/1e+21').effect).toBe('default-deny');
    expect(compiled.decide('publish', 'g/ok').effect).toBe('allow');
    expect(compiled.decide('publish', 'g/a/b').effect).toBe('default-deny');
    expect(compiled.stats.patterns).toBe(1);
  });

  it('a deny whose value is missing denies nothing (document it; lint warns)', () => {
    const p = policy('p', [
      allow(['publish'], 'regions/#'),
      deny(['publish'], 'regions/${device.attributes.region}/#'),
    ]);
    expectDecisions([p], device(), [['publish', 'regions/eu/x', 'deny']]);
    expectDecisions([p], device({ attributes: {} }), [['publish', 'regions/eu/x', 'allow']]);
  });
});

describe('connect', () => {
  it.each<[string, string, DecisionEffect]>([
    ['${device.id}', 'd1', 'allow'],
    ['${device.id}', 'D1', 'default-deny'],
    ['${device.id}', 'd1 ', 'default-deny'],
    ['+', 'anyone', 'allow'],
    ['+', 'with/slash', 'allow'],
    ['+', '$weird', 'allow'],
    ['#', 'anyone', 'allow'],
    ['factory-test', 'factory-test', 'allow'],
    ['factory-test', 'factory-test2', 'default-deny'],
    ['${device.model}-${device.id}', 'DW100-d1', 'allow'],
    ['${device.model}-${device.id}', 'd1', 'default-deny'],
  ])('resource %j, client id %j → %s', (resource, clientId, effect) => {
    expectDecisions([policy('c', [allow(['connect'], resource)])], device(), [['connect', clientId, effect]]);
  });

  it('takes the client id as one level: a slash in it matches no multi-level idea', () => {
    const p = policy('c', [allow(['connect'], '${device.id}'), deny(['connect'], 'd1')]);
    expectDecisions([p], device(), [['connect', 'd1', 'deny']]);
    expectDecisions([policy('c', [allow(['connect'], 'd1')])], device(), [
      ['connect', 'd1/x', 'default-deny'],
      ['connect', 'd1/', 'default-deny'],
    ]);
  });
});

describe('quarantine', () => {
  const q = device({ status: 'quarantined' });

  it.each<Case>([
    ['connect', 'd1', 'allow'],
    ['connect', 'd2', 'default-deny'],
    ['publish', '$rampart/devices/d1/reports/health', 'allow'],
    ['publish', '$rampart/devices/d1/updates/status', 'allow'],
    ['receive', '$rampart/devices/d1/updates/v2', 'allow'],
    ['subscribe', '$rampart/devices/d1/updates/#', 'allow'],
    ['subscribe', '$rampart/devices/d1/reports/+', 'allow'],
    ['publish', '$rampart/devices/d1/updates', 'allow'],
    ['publish', 'devices/d1/telemetry', 'quarantine'],
    ['receive', 'devices/d1/commands', 'quarantine'],
    ['publish', '$rampart/devices/d1/shadow', 'quarantine'],
    ['subscribe', '$rampart/devices/d1/#', 'quarantine'],
    ['subscribe', '$rampart/devices/d1/+/x', 'quarantine'],
    ['publish', '$rampart/devices/d2/updates/x', 'quarantine'],
    ['subscribe', 'devices/d1/#', 'quarantine'],
  ])('%s %s → %s', (action, resource, effect) => {
    expectDecisions([defaultPolicy], q, [[action, resource, effect]]);
  });

  it('allows nothing beyond the quarantine topics, whatever the policies say', () => {
    const wide = policy('wide', [allow(TOPIC, '#'), allow(TOPIC, '$rampart/#')]);
    expectDecisions([wide], q, [
      ['publish', 'x', 'quarantine'],
      ['publish', '$rampart/fleet/x', 'quarantine'],
      ['publish', '$rampart/devices/d1/updates/x', 'allow'],
    ]);
  });

  it('still needs a policy to allow the quarantine topics', () => {
    const only = policy('telemetry', [
      allow(['connect'], '${device.id}'),
      allow(TOPIC, 'devices/${device.id}/#'),
    ]);
    expectDecisions([only], q, [
      ['connect', 'd1', 'allow'],
      ['publish', '$rampart/devices/d1/updates/x', 'default-deny'],
      ['publish', 'devices/d1/x', 'quarantine'],
    ]);
  });

  it('keeps deny statements', () => {
    const p = policy('no-reports', [deny(['publish'], '$rampart/devices/+/reports/debug/#')]);
    expectDecisions([defaultPolicy, p], q, [
      ['publish', '$rampart/devices/d1/reports/debug/x', 'deny'],
      ['publish', '$rampart/devices/d1/reports/health', 'allow'],
    ]);
  });

  it('explains itself and names the allow it overrides', () => {
    const d = compilePolicies([defaultPolicy], q).decide('publish', 'devices/d1/telemetry');
    expect(d).toMatchObject({
      allowed: false,
      effect: 'quarantine',
      statement: { policy: 'default', index: 1, sid: 'own-topics' },
    });
    expect(d.reason).toBe(
      "the device is quarantined: it keeps connect and its quarantine topics ('$rampart/devices/d1/updates/#', '$rampart/devices/d1/reports/#') only, not publish on 'devices/d1/telemetry'; statement 1 (sid own-topics) of policy 'default' v1 attached by default would allow it",
    );
    const none = compilePolicies([], q).decide('publish', 'x');
    expect(none).toMatchObject({ effect: 'quarantine', statement: null });
    expect(none.reason).not.toContain('would allow');
  });
});

describe('disabled and pending devices', () => {
  it.each([
    ['disabled', 'the device is disabled: it may not connect, publish, subscribe or receive'],
    [
      'pending',
      'the device is pending (not yet activated): it may not connect, publish, subscribe or receive',
    ],
  ] as const)('%s: everything is denied', (status, reason) => {
    const wide = policy('wide', [allow(TOPIC, '#'), allow(['connect'], '+')]);
    const compiled = compilePolicies([defaultPolicy, wide], device({ status }));
    for (const [action, resource] of [
      ['connect', 'd1'],
      ['publish', 'devices/d1/x'],
      ['subscribe', 'devices/d1/#'],
      ['receive', '$rampart/devices/d1/updates/x'],
    ] as const) {
      expect(compiled.decide(action, resource)).toEqual({
        allowed: false,
        effect: 'deny',
        statement: null,
        reason,
      });
    }
    expect(compiled.stats.patterns).toBe(0);
  });
});

describe('compilation', () => {
  it('refuses an invalid document, naming the policy and the problems', () => {
    const bad: AttachedPolicy = {
      ...policy('broken', [allow(['publish'], 'a/#/b')], { version: 4 }),
    };
    let error: unknown;
    try {
      compilePolicies([defaultPolicy, bad], device());
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(RampartError);
    expect(error).toMatchObject({
      code: 'VALIDATION',
      message:
        "policy 'broken' v4 is not valid: statements.0.resources.0 'a/#/b' has '#' at level 2: '#' may only be the last level",
      errors: [
        {
          field: 'statements.0.resources.0',
          message: "'a/#/b' has '#' at level 2: '#' may only be the last level",
        },
      ],
    });
    const unknownVariable = {
      ...defaultPolicy,
      document: { statements: [allow(['publish'], '${device.serial}')] },
    };
    expect(() => compilePolicies([unknownVariable], device())).toThrow(/unknown variable/);
    const shape = { ...defaultPolicy, document: { statements: [] } as unknown as PolicyDocument };
    expect(() => compilePolicies([shape], device({ status: 'disabled' }))).toThrow(RampartError);
  });

  it('counts patterns and nodes', () => {
    const compiled = compilePolicies([defaultPolicy], device());
    // connect: 1; publish, subscribe, receive: 2 each
    expect(compiled.stats.patterns).toBe(7);
    expect(compiled.stats.nodes).toBeGreaterThan(7);
  });
});

describe('version (cache key)', () => {
  const vars = policy('vars', [allow(['publish'], 'r/${device.attributes.region}/${device.groups}')]);

  it('is the same for the same inputs, and for changes the policies do not use', () => {
    const a = compilePolicies([defaultPolicy, vars], device());
    expect(compilePolicies([defaultPolicy, vars], device()).version).toBe(a.version);
    expect(a.isCurrent([defaultPolicy, vars], device())).toBe(true);
    for (const ctx of [
      device({ attributes: { region: 'eu', floor: 4 } }),
      device({ model: 'DW100' }),
      device({ hardwareRevision: 'A' }),
      device({ groups: ['pilot', 'eu-doors'] }),
      device({ groups: ['pilot', 'eu-doors', 'pilot'] }),
    ]) {
      expect(a.isCurrent([defaultPolicy, vars], ctx)).toBe(true);
      expect(compilePolicies([defaultPolicy, vars], ctx).version).toBe(a.version);
    }
  });

  it('changes with the policies, their versions and attachments, the status and the values used', () => {
    const base = compilePolicies([defaultPolicy, vars], device());
    const changes: [AttachedPolicy[], DeviceContext][] = [
      [[defaultPolicy], device()],
      [[vars, defaultPolicy], device()],
      [[defaultPolicy, { ...vars, version: 2 }], device()],
      [[defaultPolicy, { ...vars, name: 'vars2' }], device()],
      [[defaultPolicy, { ...vars, attachedTo: 'group', target: 'pilot' }], device()],
      [[defaultPolicy, { ...vars, target: 'd2' }], device()],
      [[defaultPolicy, vars], device({ id: 'd2' })],
      [[defaultPolicy, vars], device({ status: 'quarantined' })],
      [[defaultPolicy, vars], device({ attributes: { region: 'us' } })],
      [[defaultPolicy, vars], device({ attributes: {} })],
      [[defaultPolicy, vars], device({ groups: ['pilot'] })],
    ];
    const keys = new Set([base.version]);
    for (const [policies, ctx] of changes) {
      expect(base.isCurrent(policies, ctx)).toBe(false);
      keys.add(compilePolicies(policies, ctx).version);
    }
    expect(keys.size).toBe(changes.length + 1);
  });

  it('lets devices share a compilation when nothing device-specific is used', () => {
    const shared = policy('fleet', [allow(['publish'], 'fleet/${device.model}/#')]);
    const one = compilePolicies([shared], device({ id: 'd1' }));
    const two = compilePolicies([shared], device({ id: 'd2' }));
    expect(one.version).toBe(two.version);
    expect(one.isCurrent([shared], device({ id: 'd3', model: 'DW100' }))).toBe(true);
    expect(one.isCurrent([shared], device({ id: 'd3', model: 'DW200' }))).toBe(false);
    // Quarantine topics name the device, so a quarantined compilation is the device's own.
    const q1 = compilePolicies([shared], device({ id: 'd1', status: 'quarantined' }));
    expect(q1.isCurrent([shared], device({ id: 'd2', status: 'quarantined' }))).toBe(false);
  });
});

describe('explain and simulate', () => {
  const policies = [
    defaultPolicy,
    policy('extra', [
      allow(['publish', 'subscribe'], 'devices/${device.id}/telemetry/#', 'devices/+/status'),
      deny(['publish', 'subscribe'], 'devices/${device.id}/telemetry/raw'),
    ]),
  ];

  it('lists every statement involved', () => {
    const compiled = compilePolicies(policies, device());
    const publish = compiled.explain('publish', 'devices/d1/telemetry/raw');
    expect(publish.decision.effect).toBe('deny');
    expect(publish.denies.map((s) => [s.policy, s.index, s.pattern])).toEqual([
      ['extra', 1, 'devices/d1/telemetry/raw'],
    ]);
    expect(publish.allows.map((s) => [s.policy, s.index, s.pattern]).sort()).toEqual([
      ['default', 1, 'devices/d1/#'],
      ['extra', 0, 'devices/d1/telemetry/#'],
    ]);
    expect(publish.partialAllows).toEqual([]);
    expect(publish.quarantine).toBeNull();

    const subscribe = compiled.explain('subscribe', 'devices/+/status');
    expect(subscribe.decision.effect).toBe('allow');
    expect(subscribe.allows.map((s) => s.pattern)).toEqual(['devices/+/status']);
    expect(subscribe.partialAllows.map((s) => s.pattern)).toEqual(['devices/d1/#']);

    const connect = compiled.explain('connect', 'd1');
    expect(connect.allows.map((s) => s.resource)).toEqual(['${device.id}']);
    expect(compiled.explain('publish', 'a/+')).toMatchObject({ allows: [], denies: [] });
  });

  it('shows the quarantine topics that apply', () => {
    const compiled = compilePolicies(policies, device({ status: 'quarantined' }));
    expect(compiled.explain('publish', '$rampart/devices/d1/updates/x').quarantine).toEqual([
      '$rampart/devices/d1/updates/#',
    ]);
    expect(compiled.explain('subscribe', '$rampart/devices/d1/#').quarantine).toEqual([]);
  });

  it('simulates a list of requests', () => {
    const out = simulatePolicies(policies, device(), [
      { action: 'connect', resource: 'd1' },
      { action: 'publish', resource: 'devices/d2/status' },
      { action: 'subscribe', resource: 'devices/d1/telemetry/#' },
    ]);
    expect(out.map((e) => [e.action, e.resource, e.decision.effect])).toEqual([
      ['connect', 'd1', 'allow'],
      ['publish', 'devices/d2/status', 'allow'],
      ['subscribe', 'devices/d1/telemetry/#', 'deny'],
    ]);
    const disabled = simulatePolicies(policies, device({ status: 'disabled' }), [
      { action: 'connect', resource: 'd1' },
    ]);
    expect(disabled[0]).toMatchObject({ decision: { effect: 'deny' }, allows: [], denies: [] });
  });
});

describe('a larger policy set', () => {
  it('decides 100,000 requests against ~50 statements through the tries', () => {
    const statements: PolicyStatement[] = [];
    for (let i = 0; i < 40; i++) {
      statements.push(allow(TOPIC, `apps/app${i}/\${device.id}/#`, `shared/app${i}/+/status`));
    }
    for (let i = 0; i < 10; i++) statements.push(deny(['publish'], `apps/app${i * 4}/+/secret/#`));
    const compiled = compilePolicies(
      [defaultPolicy, policy('big', statements, { attachedTo: 'group', target: 'pilot' })],
      device(),
    );
    // 40 × 2 allows × 3 actions + 10 denies, and the default policy's 7.
    expect(compiled.stats).toMatchObject({ patterns: 40 * 2 * 3 + 10 + 7 });

    const requests: [PolicyAction, string][] = [
      ['publish', 'apps/app12/d1/telemetry/temp'],
      ['publish', 'apps/app12/d1/secret/key'],
      ['publish', 'apps/app13/d2/telemetry'],
      ['receive', 'shared/app7/x/status'],
      ['subscribe', 'apps/app3/d1/#'],
      ['publish', 'devices/d1/telemetry'],
      ['connect', 'd1'],
      ['publish', 'unrelated/topic/with/many/levels'],
    ];
    const tally: Record<string, number> = {};
    for (let i = 0; i < 100_000; i++) {
      const [action, resource] = requests[i % requests.length]!;
      const d: Decision = compiled.decide(action, resource);
      tally[d.effect] = (tally[d.effect] ?? 0) + 1;
    }
    expect(tally).toEqual({ allow: 62_500, deny: 12_500, 'default-deny': 25_000 });
  });
});

describe('docs/policy.md', () => {
  it('decides the subscription table as the documentation says', () => {
    const text = readFileSync(new URL('../../../../../docs/policy.md', import.meta.url), 'utf8');
    const table = text
      .split('With allow `devices/d1/#` and deny `devices/d1/secret/#`:')[1]!
      .split('\n\n')[1]!;
    const rows = table
      .split('\n')
      .slice(2)
      .map((line) => line.split('|').map((cell) => cell.trim()));
    expect(rows.length).toBeGreaterThanOrEqual(5);
    const p = policy('doc', [
      allow(['subscribe'], 'devices/d1/#'),
      deny(['subscribe'], 'devices/d1/secret/#'),
    ]);
    const compiled = compilePolicies([p], device());
    for (const [, filter, decision] of rows) {
      const effect = compiled.decide('subscribe', filter!.replace(/`/g, '')).effect;
      expect([filter, effect]).toEqual([
        filter,
        { allowed: 'allow', denied: 'deny', 'default deny': 'default-deny' }[decision!],
      ]);
    }
  });
});
