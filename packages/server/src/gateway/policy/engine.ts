// The gateway's policy engine: the policies attached to a device, compiled for that device into one
// allow trie and one deny trie per action, then asked for a decision on every connect, publish,
// subscribe and delivery. Default deny; a matching deny wins over any allow; quarantine and status
// narrow what may be allowed. Pure: no sockets, no database.

import type { DeviceStatus } from '@rampart/shared/api';
import {
  POLICY_ACTIONS,
  QUARANTINE_TOPICS,
  isLiteralLevelValue,
  parseResource,
  validatePolicyDocument,
  type ParsedResource,
  type PolicyAction,
  type PolicyDocument,
  type PolicyEffect,
  type PolicyVariable,
} from '@rampart/shared/policy';
import { RampartError } from '../../errors.js';
import { levelsOf, topicFilterProblem, topicNameProblem } from './topics.js';
import { TopicTrie } from './trie.js';

/** What the engine needs to know about a device; variables in resources take their values here. */
export interface DeviceContext {
  id: string;
  model: string;
  hardwareRevision: string | null;
  attributes: Record<string, string | number | boolean>;
  /** Every group the device is in (static and dynamic). */
  groups: string[];
  status: DeviceStatus;
}

export type PolicyAttachment = 'default' | 'model' | 'group' | 'device';

/** A policy document as attached: to every device (`default`), or to a model, a group or a device. */
export interface AttachedPolicy {
  name: string;
  version: number;
  attachedTo: PolicyAttachment;
  /** The model, group or device id; anything (conventionally `*`) for `default`. */
  target: string;
  document: PolicyDocument;
}

/** The statement a decision rests on. */
export interface DecisionStatement {
  readonly policy: string;
  readonly version: number;
  readonly attachedTo: PolicyAttachment;
  readonly target: string;
  readonly sid?: string;
  /** Position in the document's `statements`, from 0 (as in validation paths). */
  readonly index: number;
  /** The resource as written in the statement. */
  readonly resource: string;
  /** The resource with this device's values substituted. */
  readonly pattern: string;
}

export type DecisionEffect = 'allow' | 'deny' | 'default-deny' | 'quarantine';

export interface Decision {
  readonly allowed: boolean;
  /**
   * `allow`/`deny`: a statement decided; `default-deny`: no statement allows it (or the resource is
   * not a valid topic); `quarantine`: the device is quarantined and this is outside its quarantine
   * topics. A disabled or pending device gets `deny` with no statement.
   */
  readonly effect: DecisionEffect;
  readonly statement: DecisionStatement | null;
  /** One sentence for people: what decided, and why. */
  readonly reason: string;
}

/** A decision with every statement involved, for `rampart policy simulate`. */
export interface Explanation {
  action: PolicyAction;
  resource: string;
  decision: Decision;
  /** Deny statements matching the resource (for subscribe: intersecting the filter). */
  denies: DecisionStatement[];
  /** Allow statements matching the resource (for subscribe: covering the filter). */
  allows: DecisionStatement[];
  /** Subscribe only: allow statements that overlap the filter without covering it. */
  partialAllows: DecisionStatement[];
  /** Quarantined device: its quarantine patterns matching (covering) the resource; otherwise null. */
  quarantine: string[] | null;
}

/**
 * A statement stored in a trie for one action. Its decision (with the reason text) is made the
 * first time it decides something and kept, so that later decisions allocate nothing, while the
 * statements a session never hits cost no reason strings: most of a device's are never used.
 */
class Entry {
  private made: Decision | null = null;

  constructor(
    readonly statement: DecisionStatement,
    private readonly action: PolicyAction,
    private readonly effect: PolicyEffect,
  ) {}

  get decision(): Decision {
    return (this.made ??= statementDecision(this.action, this.effect, this.statement));
  }
}

interface ActionTries {
  allow: TopicTrie<Entry>;
  deny: TopicTrie<Entry>;
}

/** Shared by every action and effect no statement names (most deny tries): never inserted into. */
const NO_ENTRIES = new TopicTrie<Entry>();

const CACHE_KEY_FORMAT = 'policy-key/1';

/**
 * Compile the policies attached to a device. Throws a VALIDATION RampartError when a document is not
 * valid (a policy that cannot be read must not silently allow or stop denying anything).
 */
export function compilePolicies(policies: readonly AttachedPolicy[], device: DeviceContext): CompiledPolicy {
  return new CompiledPolicy(policies, device);
}

/** Compile and explain each request: what `rampart policy simulate` prints. */
export function simulatePolicies(
  policies: readonly AttachedPolicy[],
  device: DeviceContext,
  requests: readonly { action: PolicyAction; resource: string }[],
): Explanation[] {
  const compiled = compilePolicies(policies, device);
  return requests.map((r) => compiled.explain(r.action, r.resource));
}

export class CompiledPolicy {
  /**
   * Identifies what this compilation depends on: the attached policies (attachment, target, name,
   * version), the device's status and the device values the resources used. Two devices with the
   * same key get the same decisions, so a cache may share one compilation; when the key of the
   * current policies and device (`isCurrent`) differs, recompile.
   */
  readonly version: string;
  private readonly tries: Record<PolicyAction, ActionTries>;
  private readonly quarantineTrie: TopicTrie<string> | null;
  private readonly quarantinePatterns: readonly string[];
  private readonly blocked: Decision | null;
  private readonly usedVariables: readonly string[];

  /** As `compilePolicies`: validates every document first. */
  constructor(policies: readonly AttachedPolicy[], device: DeviceContext) {
    for (const policy of policies) {
      const result = validatePolicyDocument(policy.document);
      if (!result.ok) {
        const first = result.errors[0]!;
        throw new RampartError(
          'VALIDATION',
          `policy '${policy.name}' v${policy.version} is not valid: ${first.path} ${first.message}`,
          result.errors.map((e) => ({ field: e.path, message: e.message })),
        );
      }
    }
    const tries = {} as Record<PolicyAction, ActionTries>;
    for (const action of POLICY_ACTIONS) tries[action] = { allow: NO_ENTRIES, deny: NO_ENTRIES };
    this.tries = tries;
    const expander = new Expander(device);

    if (device.status === 'disabled' || device.status === 'pending') {
      const why =
        device.status === 'disabled' ? 'the device is disabled' : 'the device is pending (not yet activated)';
      this.blocked = Object.freeze({
        allowed: false,
        effect: 'deny',
        statement: null,
        reason: `${why}: it may not connect, publish, subscribe or receive`,
      });
      this.quarantineTrie = null;
      this.quarantinePatterns = [];
    } else {
      this.blocked = null;
      for (const policy of policies) {
        policy.document.statements.forEach((statement, index) => {
          for (const resource of statement.resources) {
            const parsed = parseResource(resource);
            if (!parsed.ok) throw new Error(`unvalidated resource '${resource}': ${parsed.message}`);
            for (const levels of expander.expand(parsed.resource)) {
              const ref: DecisionStatement = Object.freeze({
                policy: policy.name,
                version: policy.version,
                attachedTo: policy.attachedTo,
                target: policy.target,
                ...(statement.sid !== undefined ? { sid: statement.sid } : {}),
                index,
                resource,
                pattern: levels.join('/'),
              });
              for (const action of statement.actions) {
                const forAction = tries[action];
                if (forAction[statement.effect] === NO_ENTRIES) forAction[statement.effect] = new TopicTrie();
                forAction[statement.effect].insert(levels, new Entry(ref, action, statement.effect));
              }
            }
          }
        });
      }
      if (device.status === 'quarantined') {
        const trie = new TopicTrie<string>();
        const patterns: string[] = [];
        for (const topic of QUARANTINE_TOPICS) {
          const parsed = parseResource(topic);
          if (!parsed.ok) throw new Error(`bad quarantine topic '${topic}'`);
          for (const levels of expander.expand(parsed.resource)) {
            const pattern = levels.join('/');
            trie.insert(levels, pattern);
            patterns.push(pattern);
          }
        }
        this.quarantineTrie = trie;
        this.quarantinePatterns = patterns;
      } else {
        this.quarantineTrie = null;
        this.quarantinePatterns = [];
      }
    }
    this.usedVariables = [...expander.used].sort();
    this.version = cacheKey(policies, device, this.usedVariables);
  }

  /** Whether this compilation still holds for these policies and this device (same key). */
  isCurrent(policies: readonly AttachedPolicy[], device: DeviceContext): boolean {
    return cacheKey(policies, device, this.usedVariables) === this.version;
  }

  /** Patterns stored and trie nodes, over every action and both effects. */
  get stats(): { patterns: number; nodes: number } {
    let patterns = 0;
    let nodes = 0;
    for (const action of POLICY_ACTIONS) {
      for (const trie of [this.tries[action].allow, this.tries[action].deny]) {
        patterns += trie.size;
        nodes += trie.nodes;
      }
    }
    return { patterns, nodes };
  }

  /**
   * Decide one action. `resource` is the client id for connect, the topic name for publish and
   * receive, the topic filter for subscribe.
   */
  decide(action: PolicyAction, resource: string): Decision {
    if (this.blocked) return this.blocked;
    const tries = this.tries[action] as ActionTries | undefined;
    if (!tries) return unknownAction(action);
    switch (action) {
      case 'connect': {
        const deny = tries.deny.matchOneLevel(resource);
        if (deny) return deny.decision;
        const allow = tries.allow.matchOneLevel(resource);
        if (allow) return allow.decision;
        return defaultDeny(`no statement allows connect with client id '${resource}' (default deny)`);
      }
      case 'publish':
      case 'receive': {
        const problem = topicNameProblem(resource);
        if (problem) return defaultDeny(`'${resource}' is not a valid topic for ${action}: ${problem}`);
        const deny = tries.deny.match(resource);
        if (deny) return deny.decision;
        if (this.quarantineTrie && this.quarantineTrie.match(resource) === undefined) {
          return this.quarantined(action, resource, tries.allow.match(resource));
        }
        const allow = tries.allow.match(resource);
        if (allow) return allow.decision;
        return defaultDeny(`no statement allows ${action} on '${resource}' (default deny)`);
      }
      case 'subscribe': {
        const problem = topicFilterProblem(resource);
        if (problem)
          return defaultDeny(`'${resource}' is not a valid topic filter for subscribe: ${problem}`);
        const filter = levelsOf(resource);
        const deny = tries.deny.intersecting(filter);
        if (deny) return deny.decision;
        if (this.quarantineTrie && this.quarantineTrie.covering(filter) === undefined) {
          return this.quarantined(action, resource, tries.allow.covering(filter));
        }
        const allow = tries.allow.covering(filter);
        if (allow) return allow.decision;
        const partial = tries.allow.intersecting(filter);
        const hint = partial
          ? `; ${describeStatement(partial.statement)} allows part of it ('${partial.statement.pattern}'), but a subscription needs one resource that covers the whole filter`
          : '';
        return defaultDeny(`no statement allows subscribe on '${resource}' (default deny)${hint}`);
      }
      default: // not a PolicyAction at run time (e.g. '__proto__')
        return unknownAction(action);
    }
  }

  /** `decide`, with every statement that matches (for simulation and troubleshooting). */
  explain(action: PolicyAction, resource: string): Explanation {
    const decision = this.decide(action, resource);
    const out: Explanation = {
      action,
      resource,
      decision,
      denies: [],
      allows: [],
      partialAllows: [],
      quarantine: null,
    };
    const tries = this.tries[action] as ActionTries | undefined;
    if (this.blocked || !tries) return out;
    const statements = (entries: Entry[]) => entries.map((e) => e.statement);
    switch (action) {
      case 'connect':
        out.denies = statements(tries.deny.matchOneLevelAll(resource));
        out.allows = statements(tries.allow.matchOneLevelAll(resource));
        break;
      case 'publish':
      case 'receive':
        if (topicNameProblem(resource)) return out;
        out.denies = statements(tries.deny.matchAll(resource));
        out.allows = statements(tries.allow.matchAll(resource));
        if (this.quarantineTrie) out.quarantine = this.quarantineTrie.matchAll(resource);
        break;
      case 'subscribe': {
        if (topicFilterProblem(resource)) return out;
        const filter = levelsOf(resource);
        out.denies = statements(tries.deny.intersectingAll(filter));
        const covering = tries.allow.coveringAll(filter);
        out.allows = statements(covering);
        out.partialAllows = statements(
          tries.allow.intersectingAll(filter).filter((e) => !covering.includes(e)),
        );
        if (this.quarantineTrie) out.quarantine = this.quarantineTrie.coveringAll(filter);
        break;
      }
    }
    return out;
  }

  private quarantined(action: PolicyAction, resource: string, wouldAllow: Entry | undefined): Decision {
    const topics = this.quarantinePatterns.map((p) => `'${p}'`).join(', ');
    const allowedBy = wouldAllow ? `; ${describeStatement(wouldAllow.statement)} would allow it` : '';
    return {
      allowed: false,
      effect: 'quarantine',
      statement: wouldAllow?.statement ?? null,
      reason: `the device is quarantined: it keeps connect and its quarantine topics (${topics}) only, not ${action} on '${resource}'${allowedBy}`,
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Variables

/**
 * Expands a resource for one device, recording which device values it used. Every variable becomes
 * one literal level; an expansion whose value is missing, empty or holds `/`, `+`, `#` or NUL is
 * dropped (matches nothing). `${device.groups}` gives one expansion per group, every occurrence in
 * the resource taking the same group.
 */
class Expander {
  readonly used = new Set<string>();
  private readonly groups: string[];

  constructor(private readonly device: DeviceContext) {
    this.groups = [...new Set(device.groups)].sort();
  }

  expand(resource: ParsedResource): string[][] {
    if (!resource.hasVariables) return [resource.levels.map(plainLevel)];
    const usesGroups = resource.levels.some(
      (l) => l.kind === 'template' && l.parts.some((p) => typeof p !== 'string' && p.kind === 'groups'),
    );
    const out: string[][] = [];
    for (const group of usesGroups ? this.groups : [null]) {
      const levels = this.substitute(resource, group);
      if (levels) out.push(levels);
    }
    if (usesGroups) this.used.add('groups');
    return out;
  }

  private substitute(resource: ParsedResource, group: string | null): string[] | null {
    const levels: string[] = [];
    let ok = true;
    for (const level of resource.levels) {
      if (level.kind !== 'template') {
        levels.push(plainLevel(level));
        continue;
      }
      let text = '';
      for (const part of level.parts) {
        if (typeof part === 'string') {
          text += part;
          continue;
        }
        const value = this.value(part, group);
        // Keep going, so that every variable of the resource is recorded as used.
        if (value === null || !isLiteralLevelValue(value)) ok = false;
        else text += value;
      }
      levels.push(text);
    }
    return ok ? levels : null;
  }

  private value(variable: PolicyVariable, group: string | null): string | null {
    this.used.add(variableKey(variable));
    return variableValue(this.device, variable, group);
  }
}

function plainLevel(level: ParsedResource['levels'][number]): string {
  switch (level.kind) {
    case 'literal':
      return level.text;
    case 'single':
      return '+';
    case 'multi':
      return '#';
    case 'template':
      throw new Error('a template level needs expanding');
  }
}

function variableKey(variable: PolicyVariable): string {
  return variable.kind === 'attribute' ? `attributes.${variable.name}` : variable.kind;
}

function variableValue(device: DeviceContext, variable: PolicyVariable, group: string | null): string | null {
  switch (variable.kind) {
    case 'id':
      return device.id;
    case 'model':
      return device.model;
    case 'hardwareRevision':
      return device.hardwareRevision;
    case 'groups':
      return group;
    case 'attribute': {
      // Own properties only: `${device.attributes.constructor}` must not find Object's.
      if (!Object.hasOwn(device.attributes, variable.name)) return null;
      const value = device.attributes[variable.name];
      return value === undefined ? null : String(value);
    }
  }
}

function cacheKey(
  policies: readonly AttachedPolicy[],
  device: DeviceContext,
  used: readonly string[],
): string {
  const values = used.map((key): [string, unknown] => {
    if (key === 'groups') return [key, [...new Set(device.groups)].sort()];
    if (key.startsWith('attributes.')) {
      const name = key.slice('attributes.'.length);
      return [key, Object.hasOwn(device.attributes, name) ? device.attributes[name] : null];
    }
    return [key, device[key as 'id' | 'model' | 'hardwareRevision']];
  });
  return JSON.stringify([
    CACHE_KEY_FORMAT,
    policies.map((p) => [p.attachedTo, p.target, p.name, p.version]),
    device.status,
    values,
  ]);
}

// ---------------------------------------------------------------------------------------------
// Reasons

function statementDecision(
  action: PolicyAction,
  effect: PolicyEffect,
  statement: DecisionStatement,
): Decision {
  const verb =
    action === 'subscribe'
      ? effect === 'allow'
        ? 'covers the filter'
        : 'overlaps the filter'
      : action === 'connect'
        ? 'matches the client id'
        : 'matches';
  const expanded =
    statement.pattern !== statement.resource ? ` (for this device '${statement.pattern}')` : '';
  const outcome = effect === 'allow' ? 'allowed' : 'denied';
  // Joined, not concatenated: a session keeps its decisions, and one flat string is a fraction of
  // the rope a template literal leaves behind.
  const reason = [
    outcome,
    ' by ',
    describeStatement(statement),
    `: resource '`,
    statement.resource,
    `'`,
    expanded,
    ' ',
    verb,
  ].join('');
  return Object.freeze({ allowed: effect === 'allow', effect, statement, reason });
}

/** E.g. `statement 2 (sid no-firmware) of policy 'factory' v3 on model DW100`. */
export function describeStatement(s: DecisionStatement): string {
  const sid = s.sid !== undefined ? ` (sid ${s.sid})` : '';
  return `statement ${s.index}${sid} of policy '${s.policy}' v${s.version} ${describeAttachment(s.attachedTo, s.target)}`;
}

function describeAttachment(attachedTo: PolicyAttachment, target: string): string {
  return attachedTo === 'default' ? 'attached by default' : `on ${attachedTo} ${target}`;
}

function unknownAction(action: unknown): Decision {
  return defaultDeny(`'${String(action)}' is not an action (default deny)`);
}

function defaultDeny(reason: string): Decision {
  return { allowed: false, effect: 'default-deny', statement: null, reason };
}
