import { describe, expect, it } from 'vitest';
import { RecentMemo } from './recent-memo.js';

describe('RecentMemo', () => {
  it('keeps the last few texts, most recently used last, and never what failed to parse', () => {
    const memo = new RecentMemo<{ text: string }>(2);
    let parses = 0;
    const parse = (text: string) => {
      parses++;
      if (text === 'bad') throw new Error('bad text');
      return { text };
    };
    const a = memo.get('a', parse);
    expect(memo.get('a', parse)).toBe(a);
    memo.get('b', parse);
    memo.get('a', parse); // a is now the most recent
    memo.get('c', parse); // drops b
    expect(parses).toBe(3);
    expect(memo.get('a', parse)).toBe(a);
    memo.get('b', parse);
    expect(parses).toBe(4);
    expect(() => memo.get('bad', parse)).toThrow('bad text');
    expect(() => memo.get('bad', parse)).toThrow('bad text');
    expect(parses).toBe(6);
  });
});
