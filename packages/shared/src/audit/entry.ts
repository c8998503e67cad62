import { createHash } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from '../schema/index.js';
import { canonicalJson } from './canonical.js';

export const AUDIT_OUTCOMES = ['success', 'failure', 'denied'] as const;
export type AuditOutcome = (typeof AUDIT_OUTCOMES)[number];

/** Hash that precedes the first entry of every chain. */
export const GENESIS_HASH = '0'.repeat(64);

/** An audit entry as exported (JSON lines) and served by the API. */
export const AuditEntry = Type.Object(
  {
    seq: Type.Integer({ minimum: 1, description: 'Position in the chain, starting at 1, without gaps.' }),
    time: Type.String({ description: 'ISO-8601 UTC time the entry was appended.' }),
    actor: Type.String({
      description: 'Who acted: `token:<id>`, `system`, or `anonymous` with the source address.',
    }),
    action: Type.String({ description: 'What was attempted, e.g. `device.create`.' }),
    target: Type.String({
      description: 'What it was attempted on, e.g. `device:DW100-0001`; empty when none.',
    }),
    outcome: StringEnum(AUDIT_OUTCOMES),
    details: Type.Record(Type.String(), Type.Unknown()),
    prevHash: Type.String({ description: 'Hash of the previous entry (64 zeros for the first).' }),
    hash: Type.String({ description: 'SHA-256 over this entry and prevHash; see docs/audit.md.' }),
  },
  { $id: 'AuditEntry' },
);
export type AuditEntry = Static<typeof AuditEntry>;

/** The fields an entry is made of, before it is placed in the chain. */
export interface AuditEvent {
  actor: string;
  action: string;
  target: string;
  outcome: AuditOutcome;
  details?: Record<string, unknown>;
}

/**
 * The hash of an entry: SHA-256 (hex) of the JSON array
 *   ["rampart-audit-v1", seq, time, actor, action, target, outcome, detailsCanonicalJson, prevHash]
 * An array keeps field boundaries unambiguous; details enter as their canonical text.
 */
export function auditEntryHash(fields: {
  seq: number;
  time: string;
  actor: string;
  action: string;
  target: string;
  outcome: string;
  detailsJson: string;
  prevHash: string;
}): string {
  const material = JSON.stringify([
    'rampart-audit-v1',
    fields.seq,
    fields.time,
    fields.actor,
    fields.action,
    fields.target,
    fields.outcome,
    fields.detailsJson,
    fields.prevHash,
  ]);
  return createHash('sha256').update(material).digest('hex');
}

export function hashOfEntry(entry: AuditEntry): string {
  return auditEntryHash({ ...entry, detailsJson: canonicalJson(entry.details) });
}
