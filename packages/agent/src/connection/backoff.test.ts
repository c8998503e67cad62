import { describe, expect, it } from 'vitest';
import { backoffCeiling, backoffDelay, DEFAULT_BACKOFF } from './backoff.js';

const policy = { initialMs: 1000, maxMs: 60_000, factor: 2 };

/** A seeded generator, so that the property test is repeatable. */
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('backoffDelay', () => {
  it('grows the ceiling by the factor per attempt and stops at maxMs', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffCeiling(n, policy))).toEqual([
      1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000,
    ]);
    expect(backoffCeiling(10_000, policy)).toBe(60_000);
    expect(backoffCeiling(0, policy)).toBe(1000);
  });

  it('draws the delay uniformly below the ceiling (full jitter) from the injected random', () => {
    expect(backoffDelay(3, policy, () => 0)).toBe(0);
    expect(backoffDelay(3, policy, () => 0.5)).toBe(2000);
    expect(backoffDelay(3, policy, () => 0.999999)).toBe(3999);
    // An out-of-range random is clamped, never a negative or oversized wait.
    expect(backoffDelay(3, policy, () => -1)).toBe(0);
    expect(backoffDelay(3, policy, () => 7)).toBe(4000);
  });

  it('stays within [0, ceiling) over many draws, and spreads over the interval', () => {
    const rnd = mulberry32(11);
    for (let attempt = 1; attempt <= 12; attempt++) {
      const ceiling = backoffCeiling(attempt, policy);
      let sum = 0;
      const n = 2000;
      for (let i = 0; i < n; i++) {
        const d = backoffDelay(attempt, policy, rnd);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(ceiling);
        sum += d;
      }
      // The mean of a uniform draw is half the ceiling.
      expect(sum / n / ceiling).toBeGreaterThan(0.45);
      expect(sum / n / ceiling).toBeLessThan(0.55);
    }
  });

  it('has defaults that start at a second and cap at two minutes', () => {
    expect(DEFAULT_BACKOFF).toEqual({ initialMs: 1000, maxMs: 120_000, factor: 2, resetAfterMs: 60_000 });
    expect(backoffCeiling(1e9, DEFAULT_BACKOFF)).toBe(120_000);
  });
});
