import { describe, expect, it } from 'vitest';
import {
  ZERO_DIGEST,
  extendDigest,
  measurementEventProblem,
  replayEventLog,
  type MeasurementEvent,
} from './index.js';

const d = (n: number) => n.toString(16).padStart(64, '0');
const event = (seq: number, pcr: number, digest: string): MeasurementEvent => ({
  seq,
  pcr,
  component: 'application',
  digest,
  description: `e${seq}`,
  at: '2026-11-21T00:00:00.000Z',
});

describe('measured boot arithmetic', () => {
  it('extends as a TPM does: SHA-256 of the old value and the digest', () => {
    // The value swtpm reports for PCR 10 after tpm2_pcrextend 10:sha256=00…01 from reset.
    expect(extendDigest(ZERO_DIGEST, d(1))).toBe(
      '90f4b39548df55ad6187a1d20d731ecee78c545b94afd16f42ef7592d99cd365',
    );
    expect(() => extendDigest(ZERO_DIGEST, 'XYZ')).toThrow(/64 lowercase hex/);
  });

  it('replays a log per register, in order, and refuses a gap', () => {
    const log = [event(1, 10, d(1)), event(2, 11, d(2)), event(3, 10, d(3))];
    const replayed = replayEventLog(log);
    expect(replayed.get(10)).toBe(extendDigest(extendDigest(ZERO_DIGEST, d(1)), d(3)));
    expect(replayed.get(11)).toBe(extendDigest(ZERO_DIGEST, d(2)));
    // Order matters: the same events in another order replay to another value.
    expect(replayEventLog([event(1, 10, d(3)), event(2, 10, d(1))]).get(10)).not.toBe(replayed.get(10));
    expect(() => replayEventLog([event(1, 10, d(1)), event(3, 10, d(2))])).toThrow(/gap/);
  });

  it('says what is wrong with an event read from a log', () => {
    expect(measurementEventProblem(event(1, 10, d(1)))).toBeNull();
    expect(measurementEventProblem({ ...event(1, 10, d(1)), pcr: 24 })).toMatch(/pcr/);
    expect(measurementEventProblem({ ...event(1, 10, d(1)), component: 'kernel' })).toMatch(/component/);
    expect(measurementEventProblem({ ...event(1, 10, d(1)), digest: 'ABC' })).toMatch(/digest/);
    expect(measurementEventProblem({ ...event(0, 10, d(1)) })).toMatch(/seq/);
    expect(measurementEventProblem(null)).toMatch(/not an object/);
  });
});
