import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ARTIFACT_KINDS,
  type ArtifactKind,
  type ReceiptOutcome,
  type RollbackReason,
} from '@rampart/shared/updates';
import { AgentError } from '../errors.js';
import { writeFileAtomic } from '../identity/files.js';

export type Slot = 'a' | 'b';
export const UPDATE_KINDS = ARTIFACT_KINDS;
export type UpdateKind = ArtifactKind;

export function otherSlot(slot: Slot): Slot {
  return slot === 'a' ? 'b' : 'a';
}

/** The release an artifact carries (from its verified TUF target, or given by hand). */
export interface ReleaseInfo {
  /** The artifact's file name as installed into the slot (its target name without directories). */
  name: string;
  version: string;
  kind: UpdateKind;
  releaseCounter: number;
  /** SHA-256 of the artifact, lowercase hex. */
  sha256: string;
  length: number;
}

export interface SlotContent extends ReleaseInfo {
  /** `pending`: on trial; `committed`: the good one; `failed`: rolled back. */
  status: 'pending' | 'committed' | 'failed';
  installedAt: string;
}

/** An install under way into `slot`: set before the slot is touched, cleared once it is written and checked. */
export interface InstallInProgress {
  slot: Slot;
  release: ReleaseInfo;
  startedAt: string;
}

/** A slot on trial ("try once"): it runs, and is counted, until it is committed or rolled back. */
export interface PendingUpdate {
  slot: Slot;
  release: ReleaseInfo;
  activatedAt: string;
  /** Rolled back when still pending at the first check after this time. */
  deadline: string;
  /** Starts of the pending slot so far. */
  bootAttempts: number;
}

/**
 * The work that follows a decision (commit or roll back), written together with the decision and
 * done step by step after it, each step recorded, so that a power cut in between only delays it.
 */
export interface Finishing {
  outcome: ReceiptOutcome;
  reason?: RollbackReason;
  detail: string;
  slot: Slot;
  release: ReleaseInfo;
  bootAttempts: number;
  /** The commit or rollback hook has run. */
  hookDone: boolean;
  /** The anti-rollback counter has been advanced (only a commit advances it). */
  counterDone: boolean;
  at: string;
}

export interface LastOutcome {
  outcome: ReceiptOutcome;
  reason?: RollbackReason;
  detail: string;
  slot: Slot;
  version: string;
  at: string;
  /** The signed receipt's file, or null when none could be signed (no device id or key yet). */
  receipt: string | null;
}

/** `<dataDir>/slots/state.json`: the one source of truth of which slot runs. */
export interface SlotsState {
  format: 1;
  /** The committed slot: it runs whenever nothing is pending. */
  active: Slot;
  slots: { a: SlotContent | null; b: SlotContent | null };
  install: InstallInProgress | null;
  pending: PendingUpdate | null;
  finishing: Finishing | null;
  last: LastOutcome | null;
}

export function initialState(): SlotsState {
  return {
    format: 1,
    active: 'a',
    slots: { a: null, b: null },
    install: null,
    pending: null,
    finishing: null,
    last: null,
  };
}

/** The slot that runs now: the pending one while it is on trial, else the committed one. */
export function runningSlot(state: SlotsState): Slot {
  return state.pending?.slot ?? state.active;
}

const isSlot = (v: unknown): v is Slot => v === 'a' || v === 'b';

function stateProblem(s: Record<string, unknown>): string | null {
  if (s.format !== 1) return `format ${JSON.stringify(s.format)} is not 1`;
  if (!isSlot(s.active)) return 'active is not a or b';
  const slots = s.slots as Record<string, unknown> | undefined;
  if (typeof slots !== 'object' || slots === null || !('a' in slots) || !('b' in slots))
    return 'slots is missing a or b';
  for (const k of ['install', 'pending', 'finishing', 'last'])
    if (!(k in s) || (s[k] !== null && typeof s[k] !== 'object')) return `${k} is missing`;
  const pending = s.pending as PendingUpdate | null;
  if (pending && (!isSlot(pending.slot) || pending.slot === s.active))
    return 'the pending slot is the active slot';
  return null;
}

/** Reads and writes the state file; every write is atomic (temporary file, fsync, rename, fsync of the directory). */
export class SlotStateFile {
  readonly file: string;

  constructor(readonly dir: string) {
    this.file = join(dir, 'state.json');
  }

  read(): SlotsState {
    if (!existsSync(this.file)) return initialState();
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(this.file, 'utf8'));
    } catch {
      throw new AgentError(
        'UPDATE_STATE',
        `the slot state file ${this.file} is not JSON; it is only ever replaced whole, so it was edited or the storage is failing`,
      );
    }
    const problem =
      typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)
        ? stateProblem(parsed as Record<string, unknown>)
        : 'it is not a JSON object';
    if (problem)
      throw new AgentError('UPDATE_STATE', `the slot state file ${this.file} is not usable: ${problem}`);
    return parsed as SlotsState;
  }

  write(state: SlotsState): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    writeFileAtomic(this.file, JSON.stringify(state, null, 2) + '\n', 0o644);
  }
}
