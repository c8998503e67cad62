import { createHash } from 'node:crypto';
import {
  appendFileSync,
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  PCR_OF,
  ZERO_DIGEST,
  extendDigest,
  measurementEventProblem,
  replayEventLog,
  type MeasuredComponent,
  type MeasurementEvent,
} from '@rampart/shared/attestation';
import { AgentError } from '../errors.js';
import { writeFileAtomic } from '../identity/files.js';
import { runTpm2 } from '../trust-anchor/tpm-tools.js';

/** Where measurements are extended: the TPM's PCRs, or a file that stands in for them (weaker). */
export interface MeasurementRegister {
  readonly kind: 'tpm' | 'software';
  extend(pcr: number, digest: string): Promise<void>;
  read(pcrs: readonly number[]): Promise<Map<number, string>>;
}

/** The TPM's SHA-256 PCR bank, through tpm2-tools. */
export class TpmPcrs implements MeasurementRegister {
  readonly kind = 'tpm';
  constructor(private readonly tcti: string) {}

  async extend(pcr: number, digest: string): Promise<void> {
    await runTpm2('tpm2_pcrextend', [`${pcr}:sha256=${digest}`], this.tcti);
  }

  async read(pcrs: readonly number[]): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    const dir = mkdtempSync(join(tmpdir(), 'rampart-pcr-'));
    try {
      const file = join(dir, 'values');
      // The selected values, 32 bytes each, in ascending PCR order.
      const sorted = [...new Set(pcrs)].sort((a, b) => a - b);
      await runTpm2('tpm2_pcrread', [`sha256:${sorted.join(',')}`, '-o', file], this.tcti);
      const values = readFileSync(file);
      if (values.length !== 32 * sorted.length)
        throw new AgentError(
          'TRUST_ANCHOR',
          `tpm2_pcrread returned ${values.length} bytes for ${sorted.length} SHA-256 PCRs`,
        );
      sorted.forEach((pcr, i) => out.set(pcr, values.subarray(32 * i, 32 * (i + 1)).toString('hex')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    return out;
  }
}

/**
 * A software measurement register: the same arithmetic as a PCR, kept in a file. Anyone who can
 * write the file can set any value, so it is reported as software wherever it is shown; it exists
 * so that devices without a TPM run the same protocol.
 */
export class SoftwareRegister implements MeasurementRegister {
  readonly kind = 'software';
  constructor(private readonly file: string) {}

  private load(): Record<string, string> {
    return existsSync(this.file)
      ? (JSON.parse(readFileSync(this.file, 'utf8')) as Record<string, string>)
      : {};
  }

  async extend(pcr: number, digest: string): Promise<void> {
    const values = this.load();
    values[pcr] = extendDigest(values[pcr] ?? ZERO_DIGEST, digest);
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    writeFileAtomic(this.file, JSON.stringify(values, null, 2) + '\n', 0o600);
  }

  async read(pcrs: readonly number[]): Promise<Map<number, string>> {
    const values = this.load();
    return new Map(pcrs.map((p) => [p, values[p] ?? ZERO_DIGEST]));
  }
}

/**
 * The event log: one JSON line per measurement, appended and flushed before the call returns. A
 * torn last line (a crash mid-write) is reported, not fatal; any other bad line makes the log
 * unusable, because a replay would no longer mean anything.
 */
export class EventLog {
  constructor(readonly file: string) {}

  read(): { events: MeasurementEvent[]; tornTail: boolean } {
    if (!existsSync(this.file)) return { events: [], tornTail: false };
    const lines = readFileSync(this.file, 'utf8').split('\n');
    const last = lines.pop();
    const events: MeasurementEvent[] = [];
    const tornTail = last !== undefined && last.trim() !== '';
    lines.forEach((line, i) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        throw new AgentError(
          'MEASUREMENT_LOG',
          `${this.file} line ${i + 1} is not JSON: the event log is damaged`,
        );
      }
      const problem = measurementEventProblem(parsed);
      if (problem)
        throw new AgentError(
          'MEASUREMENT_LOG',
          `${this.file} line ${i + 1}: ${problem}; the event log is damaged`,
        );
      events.push(parsed as MeasurementEvent);
    });
    return { events, tornTail };
  }

  append(event: MeasurementEvent): void {
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    appendFileSync(this.file, JSON.stringify(event) + '\n', { mode: 0o600 });
    const fd = openSync(this.file, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

export interface MeasureOptions {
  register: MeasurementRegister;
  log: EventLog;
  component: MeasuredComponent;
  /** What to measure: its SHA-256 is extended. */
  data: Uint8Array;
  description: string;
  now?: () => Date;
}

/** Measure: SHA-256 of `data`, extended into the component's PCR, then recorded in the event log. */
export async function measure(o: MeasureOptions): Promise<MeasurementEvent> {
  const { events } = o.log.read();
  const event: MeasurementEvent = {
    seq: events.length + 1,
    pcr: PCR_OF[o.component],
    component: o.component,
    digest: createHash('sha256').update(o.data).digest('hex'),
    description: o.description,
    at: (o.now ?? (() => new Date()))().toISOString(),
  };
  await o.register.extend(event.pcr, event.digest);
  o.log.append(event);
  return event;
}

export interface LocalCheck {
  ok: boolean;
  /** PCR → the value the log replays to and the value the register holds. */
  registers: { pcr: number; replayed: string; actual: string }[];
  events: number;
  tornTail: boolean;
  /** The events that were replayed. */
  log: MeasurementEvent[];
}

/**
 * Replay the log and compare with the register: they differ when the log was edited, an entry was
 * lost, or something was extended without being logged. (The platform's verifier does the same
 * with a signed quote; this is the device's own check.)
 */
export async function checkMeasurements(register: MeasurementRegister, log: EventLog): Promise<LocalCheck> {
  const { events, tornTail } = log.read();
  const replayed = replayEventLog(events);
  const pcrs = [...new Set(Object.values(PCR_OF))].sort((a, b) => a - b);
  const actual = await register.read(pcrs);
  const registers = pcrs.map((pcr) => ({
    pcr,
    replayed: replayed.get(pcr) ?? ZERO_DIGEST,
    actual: actual.get(pcr) ?? ZERO_DIGEST,
  }));
  return {
    ok: registers.every((r) => r.replayed === r.actual),
    registers,
    events: events.length,
    tornTail,
    log: events,
  };
}

/** The register and log the configuration implies: the TPM's PCRs with a TPM anchor, else a file. */
export function measurementStore(
  dataDir: string,
  tpmTcti: string | null,
): { register: MeasurementRegister; log: EventLog } {
  return {
    register: tpmTcti
      ? new TpmPcrs(tpmTcti)
      : new SoftwareRegister(join(dataDir, 'measurements', 'register.json')),
    log: new EventLog(join(dataDir, 'measurements', 'event-log.jsonl')),
  };
}
