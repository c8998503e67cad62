// Findings on a policy document that is valid but probably does not say what its author meant: deny
// statements that leave holes, allow statements that reach everything, other devices' namespaces or
// system topics. Plus the validation errors, so that one call tells everything.

import {
  formatVariable,
  parseResource,
  validatePolicyDocument,
  type ParsedResource,
  type PolicyAction,
  type PolicyDocument,
  type PolicyStatement,
} from '@rampart/shared/policy';
import { covers, intersects } from './topics.js';

export interface Finding {
  severity: 'error' | 'warning';
  /** Position in `statements`, from 0 (as in validation paths); -1 for the document as a whole. */
  statement: number;
  resource?: string;
  code: FindingCode;
  message: string;
}

/** Every finding code: errors (validation) first, then warnings. */
export const FINDING_CODES = [
  // errors (validation)
  'invalid-document',
  'invalid-resource',
  'unknown-variable',
  'connect-resource-levels',
  // warnings: deny statements that deny less than they seem to
  'deny-plus-at-end',
  'deny-exact-leaves-subtopics',
  'deny-wildcard-skips-dollar',
  'deny-read-not-write',
  'deny-subscribe-not-receive',
  'deny-variable-may-vanish',
  // warnings: allow statements that reach too far
  'allow-everything',
  'allow-wildcard-first-level',
  'allow-any-client-id',
  'connect-other-client-id',
  'other-device-namespace',
  'system-topic',
  // warnings: other
  'duplicate-sid',
] as const;
export type FindingCode = (typeof FINDING_CODES)[number];

const OWN_ID = '${device.id}';

/** A statement whose resources parsed, with its patterns as lint compares them. */
interface Checked {
  index: number;
  statement: PolicyStatement;
  resources: { text: string; parsed: ParsedResource; levels: string[] }[];
}

/** Lint a policy document: validation errors first, then warnings, each naming its statement. */
export function lintPolicy(doc: PolicyDocument): Finding[] {
  const findings: Finding[] = [];
  const validation = validatePolicyDocument(doc);
  if (!validation.ok) {
    for (const error of validation.errors) findings.push(validationFinding(doc, error.path, error.message));
  }

  const checked = checkable(doc);
  const sids = new Map<string, number>();
  for (const c of checked) {
    const { statement, index } = c;
    if (statement.sid !== undefined) {
      const first = sids.get(statement.sid);
      if (first === undefined) sids.set(statement.sid, index);
      else {
        findings.push({
          severity: 'warning',
          statement: index,
          code: 'duplicate-sid',
          message: `sid '${statement.sid}' is also the sid of statement ${first}; decisions name statements by sid, so make them unique`,
        });
      }
    }
    const topicActions = statement.actions.filter((a) => a !== 'connect');
    for (const r of c.resources) {
      const add = (code: FindingCode, message: string) =>
        findings.push({ severity: 'warning', statement: index, resource: r.text, code, message });
      if (statement.effect === 'allow') {
        if (statement.actions.includes('connect')) lintAllowConnect(r.parsed, add);
        if (topicActions.length > 0) lintAllowTopic(r.text, r.parsed, topicActions, add);
      } else if (topicActions.length > 0) {
        lintDenyTopic(r, topicActions, checked, add);
      }
    }
  }
  return findings;
}

function validationFinding(doc: PolicyDocument, path: string, message: string): Finding {
  const m = /^statements\.(\d+)(?:\.resources\.(\d+))?/.exec(path);
  const statement = m ? Number(m[1]) : -1;
  if (m?.[2] !== undefined) {
    const resource = (doc.statements as unknown[] | undefined)?.[statement] as PolicyStatement | undefined;
    const text = resource?.resources?.[Number(m[2])];
    if (typeof text === 'string') {
      const parsed = parseResource(text);
      const code: FindingCode = parsed.ok
        ? 'connect-resource-levels'
        : parsed.problem === 'variable'
          ? 'unknown-variable'
          : 'invalid-resource';
      return { severity: 'error', statement, resource: text, code, message: `${path}: ${message}` };
    }
  }
  return { severity: 'error', statement, code: 'invalid-document', message: `${path}: ${message}` };
}

/** The statements well-formed enough to lint, with the resources that parse. */
function checkable(doc: PolicyDocument): Checked[] {
  const out: Checked[] = [];
  const statements = Array.isArray(doc?.statements) ? (doc.statements as unknown[]) : [];
  statements.forEach((s, index) => {
    const statement = s as PolicyStatement;
    if (
      typeof statement !== 'object' ||
      statement === null ||
      (statement.effect !== 'allow' && statement.effect !== 'deny') ||
      !Array.isArray(statement.actions) ||
      !Array.isArray(statement.resources)
    ) {
      return;
    }
    const resources: Checked['resources'] = [];
    for (const text of statement.resources as unknown[]) {
      if (typeof text !== 'string') continue;
      const parsed = parseResource(text);
      if (parsed.ok) resources.push({ text, parsed: parsed.resource, levels: lintLevels(parsed.resource) });
    }
    out.push({ index, statement, resources });
  });
  return out;
}

/**
 * Levels for comparing patterns before expansion: a level with variables becomes an opaque token
 * (NUL, which no real level holds, and its text), equal only to the same text and never a `$` level.
 */
function lintLevels(resource: ParsedResource): string[] {
  return resource.text.split('/').map((level, i) => {
    const kind = resource.levels[i]!.kind;
    return kind === 'template' ? `\u0000${level}` : level;
  });
}

type Add = (code: FindingCode, message: string) => void;

function lintAllowConnect(parsed: ParsedResource, add: Add): void {
  const level = parsed.levels[0]!;
  if (parsed.levels.length !== 1) return; // a validation error already
  if (level.kind === 'single' || level.kind === 'multi') {
    add(
      'allow-any-client-id',
      `allows connect with any client id: a device could connect as another device and take over its session (MQTT drops the older connection with the same client id); use '${OWN_ID}'`,
    );
  } else if (!(level.kind === 'template' && level.parts.some(isOwnId))) {
    add(
      'connect-other-client-id',
      `allows connect with the client id '${parsed.text}', which is not made from '${OWN_ID}': every device with this policy may use it, and each would take over the others' sessions`,
    );
  }
}

function lintAllowTopic(text: string, parsed: ParsedResource, actions: PolicyAction[], add: Add): void {
  const what = actions.join(', ');
  const first = parsed.levels[0]!;
  if (first.kind === 'multi') {
    add(
      'allow-everything',
      `allows ${what} on every topic (all but those starting with '$'), every other device's included; name the topics instead`,
    );
    return;
  }
  if (first.kind === 'single') {
    add(
      'allow-wildcard-first-level',
      `allows ${what} under every first level ('${text}'), whatever namespace it is, other devices' included; start with a literal level such as 'devices/${OWN_ID}'`,
    );
    return;
  }
  const deviceLevel = devicesLevel(parsed);
  if (deviceLevel !== null) {
    const level = parsed.levels[deviceLevel];
    if (level === undefined) return; // 'devices' or '$rampart/devices' itself
    if (level.kind === 'template' && level.parts.length === 1 && isOwnId(level.parts[0]!)) return;
    const written = text.split('/')[deviceLevel]!;
    const kind =
      level.kind === 'single' || level.kind === 'multi'
        ? `'${written}', a wildcard`
        : level.kind === 'literal'
          ? `'${written}', a fixed device id`
          : `'${written}'`;
    add(
      'other-device-namespace',
      `allows ${what} in other devices' namespaces: the device level of '${text}' is ${kind}, not '${OWN_ID}'`,
    );
    return;
  }
  if (first.kind === 'literal' && first.text.startsWith('$')) {
    add(
      'system-topic',
      `allows ${what} on '${text}', a '$' topic outside the device's own '$rampart/devices/${OWN_ID}/…'; '$' topics belong to Rampart and the broker`,
    );
  }
}

/** Which level holds the device id when the resource is under `devices/` or `$rampart/devices/`. */
function devicesLevel(parsed: ParsedResource): number | null {
  const literal = (i: number, text: string) => {
    const l = parsed.levels[i];
    return l?.kind === 'literal' && l.text === text;
  };
  if (literal(0, 'devices')) return 1;
  if (literal(0, '$rampart') && literal(1, 'devices')) return 2;
  return null;
}

function isOwnId(part: string | { kind: string }): boolean {
  return typeof part !== 'string' && part.kind === 'id';
}

function lintDenyTopic(
  r: Checked['resources'][number],
  actions: PolicyAction[],
  all: Checked[],
  add: Add,
): void {
  const { levels } = r;
  const last = levels[levels.length - 1]!;

  const fragile = fragileVariables(r.parsed);
  if (fragile.length > 0) {
    add(
      'deny-variable-may-vanish',
      `uses ${fragile.join(', ')}: for a device without a usable value (missing, empty, or holding '/', '+' or '#'${fragile.includes('${device.groups}') ? '; for groups, a device in no group' : ''}) '${r.text}' matches nothing, so this deny denies nothing; if that matters, deny without the variable`,
    );
  }

  if (levels.every((l) => l === '+' || l === '#') && last === '#') {
    add(
      'deny-wildcard-skips-dollar',
      `'${r.text}' does not match topics starting with '$' (as in MQTT), so '$rampart/…' topics are not denied by it; add '$rampart/#' to deny them too`,
    );
  }

  if (last === '+') {
    const parent = levels.length === 1 ? null : r.text.slice(0, r.text.length - 2);
    add(
      'deny-plus-at-end',
      parent === null
        ? `'+' matches exactly one level, so '${r.text}' does not deny 'x/y'; to deny every topic, use '#'`
        : `'+' matches exactly one level, so '${r.text}' does not deny '${parent}/x/y'; to deny everything below '${parent}', use '${parent}/#'`,
    );
  } else if (last !== '#') {
    // Topics strictly below the denied one: `<resource>/+/#`.
    const below = [...levels, '+', '#'];
    const denied = all.some(
      (o) =>
        o.statement.effect === 'deny' &&
        o.resources.some((or) => covers(or.levels, below)) &&
        actions.every((a) => o.statement.actions.includes(a)),
    );
    const allowing = denied ? undefined : findAllow(all, actions, below);
    if (allowing) {
      add(
        'deny-exact-leaves-subtopics',
        `denies only the topic '${r.text}' itself: topics below it, such as '${r.text}/x', stay allowed by statement ${allowing.index} ('${allowing.resource}'); to deny them too, use '${r.text}/#' (which also denies '${r.text}')`,
      );
    }
  }

  const reads = actions.filter((a) => a === 'subscribe' || a === 'receive');
  if (reads.length > 0 && !actions.includes('publish')) {
    const allowing = findAllow(all, ['publish'], levels);
    if (allowing) {
      add(
        'deny-read-not-write',
        `denies ${reads.join(' and ')} on '${r.text}' but not publish: statement ${allowing.index} still allows publishing to it ('${allowing.resource}'); add 'publish' if the topic should be closed entirely`,
      );
    }
  }
  if (actions.includes('subscribe') && !actions.includes('receive')) {
    add(
      'deny-subscribe-not-receive',
      `denies subscribing to '${r.text}' but not receiving: subscriptions made before this policy applied (a persistent session) still deliver it; add 'receive'`,
    );
  }
}

/** Variables a device may have no usable value for (ids and model ids always are one level). */
function fragileVariables(parsed: ParsedResource): string[] {
  const out = new Set<string>();
  for (const level of parsed.levels) {
    if (level.kind !== 'template') continue;
    for (const part of level.parts) {
      if (typeof part !== 'string' && part.kind !== 'id' && part.kind !== 'model')
        out.add(formatVariable(part));
    }
  }
  return [...out];
}

/** An allow statement (for one of `actions`) with a resource overlapping `filter`. */
function findAllow(
  all: Checked[],
  actions: readonly PolicyAction[],
  filter: string[],
): { index: number; resource: string } | undefined {
  for (const o of all) {
    if (o.statement.effect !== 'allow' || !actions.some((a) => o.statement.actions.includes(a))) continue;
    for (const or of o.resources) {
      if (intersects(or.levels, filter)) return { index: o.index, resource: or.text };
    }
  }
  return undefined;
}
