import type { KeyObject } from 'node:crypto';
import { GENESIS_HASH, auditEntryHash } from './entry.js';
import { keyIdOf, verifyCheckpointSignature, type AuditCheckpoint } from './checkpoint.js';

/** An entry as stored: details as their canonical JSON text, exactly as hashed. */
export interface StoredAuditEntry {
  seq: number;
  time: string;
  actor: string;
  action: string;
  target: string;
  outcome: string;
  detailsJson: string;
  prevHash: string;
  hash: string;
}

export interface AuditProblem {
  /** The first entry the problem puts in doubt. */
  seq: number;
  message: string;
}

export interface AuditVerification {
  ok: boolean;
  entries: number;
  headHash: string;
  keyId: string | null;
  checkpoints: { total: number; verified: number; lastVerifiedEntryCount: number };
  /** Entries after the last verified checkpoint: chained, but not yet covered by a signature. */
  unanchoredEntries: number;
  firstBad: AuditProblem | null;
  problems: AuditProblem[];
}

const MAX_PROBLEMS = 50;

/** The action under which every checkpoint is also written into the chain itself. */
export const CHECKPOINT_ACTION = 'audit.checkpoint';

/**
 * Verify a whole audit chain and its signed checkpoints.
 *
 * - every entry's hash must match its content (an edit is detected at the edited entry);
 * - sequence numbers run 1..n without gaps and every entry links to the hash of the one before
 *   (a deletion, insertion or reordering is detected where the link breaks);
 * - every checkpoint must carry a valid signature by `publicKey` and match the chain at the entry
 *   count it covers (a chain rewritten after an edit is detected by the first checkpoint it contradicts);
 * - a checkpoint covering more entries than exist reveals a truncated log.
 *
 * Checkpoints come from the caller (the checkpoint table, an external copy) and from the
 * `audit.checkpoint` entries inside the chain, so deleting checkpoint rows does not hide anything.
 */
export async function verifyAuditChain(
  entries: AsyncIterable<StoredAuditEntry> | Iterable<StoredAuditEntry>,
  options: { checkpoints?: readonly AuditCheckpoint[]; publicKey: KeyObject | null },
): Promise<AuditVerification> {
  const problems: AuditProblem[] = [];
  // The first bad entry is kept apart from the (capped) list, so that it is right however many problems there are.
  let firstBad: AuditProblem | null = null;
  const report = (seq: number, message: string) => {
    if (!firstBad || seq < firstBad.seq) firstBad = { seq, message };
    if (problems.length < MAX_PROBLEMS) problems.push({ seq, message });
  };
  const keyId = options.publicKey ? keyIdOf(options.publicKey) : null;

  const checkpoints = new Map<string, AuditCheckpoint>();
  const addCheckpoint = (c: AuditCheckpoint) => checkpoints.set(`${c.entryCount}:${c.signature}`, c);
  for (const c of options.checkpoints ?? []) addCheckpoint(c);

  // Head hash at each entry count, kept only for counts that a checkpoint may ask about.
  const headAt = new Map<number, string>([[0, GENESIS_HASH]]);
  const wanted = new Set<number>([...checkpoints.values()].map((c) => c.entryCount));
  const embedded: AuditCheckpoint[] = [];
  // entry count covered by a checkpoint -> sequence number of the entry that records that checkpoint
  const recordedAt = new Map<number, number>();

  let expected = 1;
  let prev = GENESIS_HASH;
  let prevSeq = 0;
  let lastSeq = 0;
  let count = 0;
  for await (const e of entries) {
    count++;
    if (e.seq !== expected) {
      if (e.seq > expected) {
        report(expected, `entry ${expected} is missing: the entry after ${expected - 1} is ${e.seq}`);
      } else {
        report(e.seq, `entry ${e.seq} appears out of order, after entry ${expected - 1}`);
      }
    }
    const recomputed = auditEntryHash(e);
    if (recomputed !== e.hash) {
      report(e.seq, `entry ${e.seq} was modified: its content does not match its recorded hash`);
    }
    if (e.prevHash !== prev && e.seq === expected) {
      report(
        e.seq,
        `entry ${e.seq} does not link to entry ${e.seq - 1}: an entry was removed, inserted or reordered`,
      );
    }
    if (e.action === CHECKPOINT_ACTION) {
      const c = readCheckpoint(e.detailsJson);
      if (c) {
        embedded.push(c);
        wanted.add(c.entryCount);
        recordedAt.set(c.entryCount, e.seq);
        // A checkpoint is recorded right after the head it signs, which has already gone by.
        if (c.entryCount === prevSeq && !headAt.has(prevSeq)) headAt.set(prevSeq, prev);
      } else {
        report(e.seq, `entry ${e.seq} records a checkpoint that cannot be read`);
      }
    }
    if (wanted.has(e.seq)) headAt.set(e.seq, e.hash);
    prev = e.hash;
    prevSeq = e.seq;
    lastSeq = Math.max(lastSeq, e.seq);
    expected = e.seq + 1;
  }
  for (const c of embedded) addCheckpoint(c);

  const sorted = [...checkpoints.values()].sort((a, b) => a.entryCount - b.entryCount || a.id - b.id);
  let verified = 0;
  let lastVerified = 0;
  for (const c of sorted) {
    const label = `checkpoint ${c.id ? `#${c.id} ` : ''}over ${c.entryCount} entries (${c.time})`;
    if (!options.publicKey) break;
    if (c.keyId !== keyId) {
      report(
        lastVerified + 1,
        `${label} was signed by key ${c.keyId.slice(0, 16)}…, not by the trusted key ${keyId!.slice(0, 16)}…`,
      );
      continue;
    }
    if (!verifyCheckpointSignature(c, options.publicKey)) {
      report(lastVerified + 1, `${label} has an invalid signature`);
      continue;
    }
    if (c.entryCount > lastSeq) {
      report(
        lastSeq + 1,
        `the log ends at entry ${lastSeq} but ${label} is signed: entries ${lastSeq + 1}..${c.entryCount} were deleted`,
      );
      continue;
    }
    const head = headAt.get(c.entryCount);
    if (head !== c.headHash) {
      report(
        lastVerified + 1,
        `the chain does not match ${label}: entries ${lastVerified + 1}..${c.entryCount} were rewritten`,
      );
      continue;
    }
    verified++;
    lastVerified = Math.max(lastVerified, c.entryCount);
  }

  problems.sort((a, b) => a.seq - b.seq);
  // The entry that records the last checkpoint holds nothing but that signature: it needs no cover of its own.
  const anchoredThrough = recordedAt.get(lastVerified) === lastVerified + 1 ? lastVerified + 1 : lastVerified;
  return {
    ok: firstBad === null,
    entries: count,
    headHash: prev,
    keyId,
    checkpoints: { total: sorted.length, verified, lastVerifiedEntryCount: lastVerified },
    unanchoredEntries: Math.max(count - anchoredThrough, 0),
    firstBad,
    problems,
  };
}

/** The checkpoint an `audit.checkpoint` entry records, or null when its details are not one. */
function readCheckpoint(detailsJson: string): AuditCheckpoint | null {
  let c: Partial<AuditCheckpoint>;
  try {
    c = JSON.parse(detailsJson) as Partial<AuditCheckpoint>;
  } catch {
    return null;
  }
  if (
    typeof c !== 'object' ||
    c === null ||
    !Number.isInteger(c.entryCount) ||
    typeof c.headHash !== 'string' ||
    typeof c.time !== 'string' ||
    typeof c.keyId !== 'string' ||
    typeof c.algorithm !== 'string' ||
    typeof c.signature !== 'string'
  )
    return null;
  return { ...(c as AuditCheckpoint), id: typeof c.id === 'number' ? c.id : 0 };
}
