import { describe, expect, it } from 'vitest';
import { mergePatch, shadowDelta, shadowStateProblem, shadowTopics } from './index.js';

describe('shadow state', () => {
  it('merges as RFC 7396 says: objects recursively, null removes, arrays replace', () => {
    expect(
      mergePatch({ a: 1, b: { c: 2, d: 3 }, e: [1, 2] }, { b: { c: null, x: 1 }, e: [3], f: 'n' }),
    ).toEqual({
      a: 1,
      b: { d: 3, x: 1 },
      e: [3],
      f: 'n',
    });
    expect(mergePatch({ a: { b: 1 } }, { a: 5 })).toEqual({ a: 5 });
  });

  it('computes the delta as the desired values the reported state does not have', () => {
    expect(
      shadowDelta(
        { led: 'on', cfg: { rate: 5, mode: 'a' }, list: [1, 2] },
        { led: 'on', cfg: { rate: 1, mode: 'a' }, list: [1, 2] },
      ),
    ).toEqual({
      cfg: { rate: 5 },
    });
    expect(shadowDelta({ a: 1 }, {})).toEqual({ a: 1 });
    expect(shadowDelta({}, { a: 1 })).toEqual({});
    expect(shadowDelta({ a: { b: 1 } }, { a: 7 })).toEqual({ a: { b: 1 } });
  });

  it('refuses states that are not objects, too large or too deep', () => {
    expect(shadowStateProblem([1], 'reported')).toMatch(/JSON object/);
    expect(shadowStateProblem({ a: 'x'.repeat(20_000) }, 'reported')).toMatch(/at most 16384/);
    expect(shadowStateProblem({ a: { b: { c: { d: { e: { f: { g: 1 } } } } } } }, 'desired')).toMatch(
      /deeper than 6/,
    );
    expect(shadowStateProblem({ a: 1 }, 'desired')).toBeNull();
  });

  it('names the reserved topics under the device namespace', () => {
    expect(shadowTopics('d1').delta).toBe('$rampart/devices/d1/shadow/update/delta');
  });
});
