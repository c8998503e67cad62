import { describe, expect, it } from 'vitest';
import { shareOf, widthPerWorker } from './protocol.js';

describe('shareOf', () => {
  it('gives each worker exactly its devices of a range', () => {
    for (const workers of [1, 2, 3, 5])
      for (let from = 0; from < 12; from++)
        for (let count = 0; count < 14; count++) {
          const seen: number[] = [];
          for (let w = 0; w < workers; w++) {
            const s = shareOf(from, count, w, workers);
            expect(s.count).toBeGreaterThanOrEqual(0);
            for (let k = 0; k < s.count; k++) seen.push((s.from + k) * workers + w);
          }
          expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: count }, (_, k) => from + k));
        }
  });

  it('continues where the previous range ended', () => {
    // Devices 0..9 then 10..19 over two workers: worker 1 holds 1,3,…,19 at positions 0..9.
    expect(shareOf(0, 10, 1, 2)).toEqual({ from: 0, count: 5 });
    expect(shareOf(10, 10, 1, 2)).toEqual({ from: 5, count: 5 });
    expect(shareOf(10, 1, 1, 2)).toEqual({ from: 5, count: 0 });
  });
});

describe('widthPerWorker', () => {
  it('splits the width, at least one each', () => {
    expect(widthPerWorker(64, 2)).toBe(32);
    expect(widthPerWorker(5, 2)).toBe(3);
    expect(widthPerWorker(1, 4)).toBe(1);
  });
});
