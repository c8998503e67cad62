import { createHash } from 'node:crypto';

/**
 * Measured boot, as both sides see it: what a device measures, into which register, and how an
 * event log replays to the register values a TPM quote (or the software register) reports. The
 * verifier on the server replays the same way.
 */
export const MEASURED_COMPONENTS = ['bootloader', 'os', 'application', 'configuration'] as const;
export type MeasuredComponent = (typeof MEASURED_COMPONENTS)[number];

/**
 * The PCR each component is extended into: 8–11, registers the TCG PC Client profile leaves to the
 * operating system (0–7 belong to the firmware, which measures itself where it can).
 */
export const PCR_OF: Readonly<Record<MeasuredComponent, number>> = {
  bootloader: 8,
  os: 9,
  application: 10,
  configuration: 11,
};

/** One entry of the event log: a SHA-256 digest extended into a register. */
export interface MeasurementEvent {
  seq: number;
  pcr: number;
  component: MeasuredComponent;
  /** SHA-256 of what was measured, lowercase hex. */
  digest: string;
  /** What was measured, for people (a file name, a version). */
  description: string;
  at: string;
}

const HEX64 = /^[0-9a-f]{64}$/;
export const ZERO_DIGEST = '0'.repeat(64);

/** The register value after extending `digest` into `current`: SHA-256(current ‖ digest). */
export function extendDigest(current: string, digest: string): string {
  if (!HEX64.test(current) || !HEX64.test(digest)) throw new TypeError('digests are 64 lowercase hex digits');
  return createHash('sha256')
    .update(Buffer.concat([Buffer.from(current, 'hex'), Buffer.from(digest, 'hex')]))
    .digest('hex');
}

/** What `event` would be wrong in, or null: for logs read from disk or received from a device. */
export function measurementEventProblem(event: unknown): string | null {
  if (typeof event !== 'object' || event === null) return 'is not an object';
  const e = event as Record<string, unknown>;
  if (!Number.isInteger(e.seq) || (e.seq as number) < 1) return 'seq is not a positive integer';
  if (!Number.isInteger(e.pcr) || (e.pcr as number) < 0 || (e.pcr as number) > 23) return 'pcr is not 0–23';
  if (!(MEASURED_COMPONENTS as readonly unknown[]).includes(e.component))
    return `component is not one of ${MEASURED_COMPONENTS.join(', ')}`;
  if (typeof e.digest !== 'string' || !HEX64.test(e.digest))
    return 'digest is not a SHA-256 in lowercase hex';
  if (typeof e.description !== 'string') return 'description is not text';
  if (typeof e.at !== 'string' || Number.isNaN(Date.parse(e.at))) return 'at is not a time';
  return null;
}

/**
 * Replay an event log: every register it touches, from all zeros (a register's value after reset),
 * extended by its events in order. Events must be numbered 1, 2, 3… without gaps.
 */
export function replayEventLog(events: readonly MeasurementEvent[]): Map<number, string> {
  const registers = new Map<number, string>();
  events.forEach((e, i) => {
    if (e.seq !== i + 1)
      throw new RangeError(`event ${i + 1} of the log is numbered ${e.seq}: the log has a gap`);
    registers.set(e.pcr, extendDigest(registers.get(e.pcr) ?? ZERO_DIGEST, e.digest));
  });
  return registers;
}

// TPM 2.0 structures: quotes, certifications, public areas, signatures.
export * from './tpm.js';
