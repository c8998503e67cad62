import { describe, expect, it } from 'vitest';
import { ErrorTally, LatencyHistogram, coveringSpan, epochNow, ratePerSecond } from './stats.js';

/** The rule the histogram follows, on the exact values. */
function exactPercentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Deterministic pseudo-random numbers (mulberry32). */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('LatencyHistogram', () => {
  it('gives percentiles within 1 % of the exact ones', () => {
    const next = random(7);
    // Log-normal-ish latencies from 10 µs to several seconds.
    const values = Array.from({ length: 20_000 }, () => Math.exp(next() * 12 - 4.6));
    const h = new LatencyHistogram();
    for (const v of values) h.record(v);
    for (const p of [1, 10, 50, 90, 99, 99.9, 100]) {
      const exact = exactPercentile(values, p);
      expect(Math.abs(h.percentile(p) - exact) / exact).toBeLessThanOrEqual(0.0101);
    }
    expect(h.count).toBe(values.length);
    expect(h.min).toBe(Math.min(...values));
    expect(h.max).toBe(Math.max(...values));
    expect(h.summary().mean).toBeCloseTo(values.reduce((a, b) => a + b, 0) / values.length, 9);
  });

  it('is exact at the extremes and for a single value', () => {
    const h = new LatencyHistogram();
    h.record(3.3);
    expect(h.percentile(0)).toBe(3.3);
    expect(h.percentile(50)).toBe(3.3);
    expect(h.percentile(100)).toBe(3.3);
  });

  it('answers NaN when empty and ignores values that are not latencies', () => {
    const h = new LatencyHistogram();
    h.record(-1);
    h.record(NaN);
    expect(h.count).toBe(0);
    expect(h.percentile(50)).toBeNaN();
    expect(h.summary()).toMatchObject({ count: 0, min: NaN, max: NaN, mean: NaN });
    h.record(0);
    expect(h.percentile(99)).toBe(0);
  });

  it('merges: two halves give what the whole gives, also across JSON', () => {
    const next = random(11);
    const values = Array.from({ length: 5000 }, () => next() * 200);
    const whole = new LatencyHistogram();
    const a = new LatencyHistogram();
    const b = new LatencyHistogram();
    values.forEach((v, i) => {
      whole.record(v);
      (i % 2 ? a : b).record(v);
    });
    const merged = LatencyHistogram.from(
      JSON.parse(JSON.stringify(a)) as ReturnType<LatencyHistogram['toJSON']>,
    );
    merged.merge(b);
    expect(merged.summary()).toEqual(whole.summary());
    expect(merged.toJSON()).toEqual(whole.toJSON());
  });

  it('keeps an empty histogram neutral in a merge', () => {
    const h = new LatencyHistogram();
    h.record(5);
    h.merge(new LatencyHistogram());
    expect(h.summary()).toMatchObject({ count: 1, min: 5, max: 5 });
    h.reset();
    expect(h.count).toBe(0);
  });
});

describe('spans and rates', () => {
  it('covers several processes’ spans', () => {
    expect(
      coveringSpan([
        { startedAt: 100, endedAt: 1100 },
        { startedAt: 90, endedAt: 1000 },
      ]),
    ).toEqual({ startedAt: 90, endedAt: 1100 });
    expect(() => coveringSpan([])).toThrow();
  });

  it('counts events per second', () => {
    expect(ratePerSecond(500, { startedAt: 0, endedAt: 250 })).toBe(2000);
    expect(ratePerSecond(5, { startedAt: 10, endedAt: 10 })).toBe(0);
  });

  it('reads the wall clock in epoch milliseconds', () => {
    expect(Math.abs(epochNow() - Date.now())).toBeLessThan(50);
  });
});

describe('ErrorTally', () => {
  it('counts messages, most frequent first', () => {
    const t = new ErrorTally();
    for (const m of ['ECONNRESET', 'timeout', 'ECONNRESET', 'CONNACK 5', 'ECONNRESET', 'timeout']) t.add(m);
    t.merge({ 'CONNACK 5': 1, other: 1 });
    expect(t.total).toBe(8);
    expect(t.toString(3)).toBe('3× ECONNRESET; 2× timeout; 2× CONNACK 5');
    expect(t.toJSON()).toEqual({ ECONNRESET: 3, timeout: 2, 'CONNACK 5': 2, other: 1 });
  });
});
