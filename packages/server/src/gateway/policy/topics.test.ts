import { describe, expect, it } from 'vitest';
import { covers, intersects, matchesTopic, topicFilterProblem, topicNameProblem } from './topics.js';
import { TopicTrie } from './trie.js';

const L = (s: string) => s.split('/');

/** Matching as the MQTT specification words it, written independently of topics.ts. */
function specMatches(pattern: string[], topic: string[]): boolean {
  if (topic[0]!.startsWith('$') && (pattern[0] === '+' || pattern[0] === '#')) return false;
  const go = (i: number, j: number): boolean => {
    if (i === pattern.length) return j === topic.length;
    if (pattern[i] === '#') return true;
    if (j === topic.length) return false;
    return (pattern[i] === '+' || pattern[i] === topic[j]) && go(i + 1, j + 1);
  };
  return go(0, 0);
}

/** Every sequence of 1..maxDepth levels over `alphabet`; `last` (if given) also allowed last. */
function sequences(alphabet: string[], maxDepth: number, last: string[] = []): string[][] {
  const out: string[][] = [];
  const grow = (prefix: string[]) => {
    for (const level of [...alphabet, ...last]) out.push([...prefix, level]);
    if (prefix.length + 1 < maxDepth) for (const level of alphabet) grow([...prefix, level]);
  };
  grow([]);
  return out;
}

// Patterns and filters up to 3 levels; topics up to 4 levels, one deeper than any pattern, with `z`
// standing for "any other level" and `$x` for a `$` level.
const PATTERNS = sequences(['a', 'b', '$x', '+'], 3, ['#']);
const TOPICS = sequences(['a', 'b', '$x', 'z'], 4);

describe('matchesTopic', () => {
  it.each<[string, string, boolean]>([
    ['a/b', 'a/b', true],
    ['a/b', 'a/c', false],
    ['a/b', 'a/b/c', false],
    ['a/b/c', 'a/b', false],
    ['a/+', 'a/b', true],
    ['a/+', 'a/b/c', false],
    ['a/+', 'a', false],
    ['a/+', 'a/', true],
    ['+/+', '/x', true],
    ['a/#', 'a', true],
    ['a/#', 'a/b/c/d', true],
    ['a/#', 'ab', false],
    ['#', 'anything/at/all', true],
    ['#', '$rampart/x', false],
    ['+/x', '$rampart/x', false],
    ['+/#', '$SYS/broker', false],
    ['$rampart/#', '$rampart/x', true],
    ['$rampart/+', '$rampart/x', true],
    ['a/+/#', 'a/$x/y', true],
    ['a//b', 'a//b', true],
    ['a/+/b', 'a//b', true],
  ])('%s matches %s: %s', (pattern, topic, expected) => {
    expect(matchesTopic(L(pattern), L(topic))).toBe(expected);
  });

  it('agrees with the specification on every small pattern and topic', () => {
    for (const p of PATTERNS) for (const t of TOPICS) expect(matchesTopic(p, t)).toBe(specMatches(p, t));
  });
});

describe('covers and intersects', () => {
  it.each<[string, string, boolean]>([
    ['devices/d1/#', 'devices/d1/+/temp', true],
    ['devices/d1/#', 'devices/d1/#', true],
    ['devices/d1/#', 'devices/d1', true],
    ['devices/d1/#', 'devices/+/x', false],
    ['devices/d1/#', 'devices/#', false],
    ['devices/d1/#', 'devices/d2/x', false],
    ['devices/+/status', 'devices/d1/status', true],
    ['devices/+/status', 'devices/+/status', true],
    ['devices/+/status', 'devices/+/+', false],
    ['devices/+/status', 'devices/d1/#', false],
    ['a/+', 'a/+/#', false],
    ['a/+/#', 'a/#', false],
    ['a/+/#', 'a/+', true],
    ['a/b', 'a/b', true],
    ['a/b', 'a/+', false],
    ['#', '#', true],
    ['#', '+/x', true],
    ['#', '$rampart/x', false],
    ['+/x', '$rampart/x', false],
    ['+/x', '+/x', true],
    ['$rampart/#', '$rampart/devices/d1/+', true],
    ['$rampart/#', '#', false],
    ['a/#', 'a/b/c/d/e', true],
    ['+/#', '#', true],
    ['+/#', '+/+', true],
    ['+/+/#', '#', false],
    ['a/+/#', 'a/#', false],
  ])('%s covers %s: %s', (pattern, filter, expected) => {
    expect(covers(L(pattern), L(filter))).toBe(expected);
  });

  it.each<[string, string, boolean]>([
    ['devices/d1/secret/#', 'devices/d1/#', true],
    ['devices/d1/secret/#', 'devices/+/secret', true],
    ['devices/d1/secret/#', 'devices/d1/public/#', false],
    ['devices/d1/secret', 'devices/d1/secret/#', true],
    ['devices/d1/secret/#', 'devices/d1', false],
    ['devices/+/firmware/#', 'devices/d1/#', true],
    ['devices/+/firmware/#', '#', true],
    ['devices/+/firmware/#', '+/+/+', true],
    ['devices/+/firmware/#', '+/+', false],
    ['a/+', 'a/b/c', false],
    ['a/+', 'a/#', true],
    ['a/#', 'a', true],
    ['#', '$rampart/x', false],
    ['#', '#', true],
    ['$rampart/#', '#', false],
    ['$rampart/#', '+/devices', false],
    ['$rampart/+', '$rampart/#', true],
    ['+', '$x', false],
    ['a/b', 'a/b', true],
    ['a/b', 'a/c', false],
  ])('%s intersects %s: %s', (pattern, filter, expected) => {
    expect(intersects(L(pattern), L(filter))).toBe(expected);
    expect(intersects(L(filter), L(pattern))).toBe(expected); // symmetric
  });

  it('agree with their definitions over every small pattern, filter and topic', () => {
    const matching = new Map<string[], boolean[]>(
      PATTERNS.map((p) => [p, TOPICS.map((t) => specMatches(p, t))]),
    );
    for (const p of PATTERNS) {
      const byP = matching.get(p)!;
      for (const f of PATTERNS) {
        const byF = matching.get(f)!;
        const coversByDefinition = byF.every((m, i) => !m || byP[i]);
        const intersectsByDefinition = byF.some((m, i) => m && byP[i]);
        if (covers(p, f) !== coversByDefinition || intersects(p, f) !== intersectsByDefinition) {
          throw new Error(`${p.join('/')} vs ${f.join('/')}`);
        }
      }
    }
  });
});

describe('TopicTrie', () => {
  /** A deterministic pseudo-random sequence (mulberry32). */
  function random(seed: number): () => number {
    return () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  it('answers as the reference functions do, for random sets of patterns', () => {
    const next = random(42);
    for (let round = 0; round < 200; round++) {
      const trie = new TopicTrie<string[]>();
      const stored: string[][] = [];
      const count = 1 + Math.floor(next() * 12);
      for (let i = 0; i < count; i++) {
        const p = PATTERNS[Math.floor(next() * PATTERNS.length)]!;
        trie.insert(p, p);
        stored.push(p);
      }
      expect(trie.size).toBe(count);
      const same = (got: string[][], want: string[][]) => {
        expect(new Set(got)).toEqual(new Set(want));
        expect(got.length).toBe(want.length);
      };
      for (const t of TOPICS) {
        const want = stored.filter((p) => matchesTopic(p, t));
        same(trie.matchAll(t.join('/')), want);
        expect(trie.match(t.join('/')) !== undefined).toBe(want.length > 0);
      }
      for (const f of PATTERNS) {
        const wantCover = stored.filter((p) => covers(p, f));
        same(trie.coveringAll(f), wantCover);
        expect(trie.covering(f) !== undefined).toBe(wantCover.length > 0);
        const wantIntersect = stored.filter((p) => intersects(p, f));
        same(trie.intersectingAll(f), wantIntersect);
        expect(trie.intersecting(f) !== undefined).toBe(wantIntersect.length > 0);
      }
    }
  });

  it('matches a value as one level (client ids), whatever it holds', () => {
    const trie = new TopicTrie<string>();
    trie.insert(['dw-1'], 'literal');
    expect(trie.matchOneLevel('dw-1')).toBe('literal');
    expect(trie.matchOneLevel('dw-2')).toBeUndefined();
    expect(trie.matchOneLevel('dw-1/x')).toBeUndefined();
    trie.insert(['+'], 'plus');
    expect(trie.matchOneLevelAll('dw-1')).toEqual(['literal', 'plus']);
    expect(trie.matchOneLevel('a/b')).toBe('plus');
    expect(trie.matchOneLevel('$x')).toBe('plus');
    const hash = new TopicTrie<string>();
    hash.insert(['#'], 'hash');
    expect(hash.matchOneLevel('')).toBe('hash');
    expect(hash.matchOneLevelAll('any/thing')).toEqual(['hash']);
  });

  it('counts nodes and refuses # before the last level', () => {
    const trie = new TopicTrie<number>();
    expect(trie.nodes).toBe(1);
    trie.insert(L('a/b/c'), 1);
    trie.insert(L('a/b/#'), 2);
    trie.insert(L('a/+/c'), 3);
    expect(trie.nodes).toBe(6);
    expect(trie.size).toBe(3);
    expect(() => trie.insert(L('a/#/c'), 4)).toThrow("'#' must be the last level");
  });
});

describe('topic names and filters', () => {
  it.each<[string, string | null]>([
    ['a/b', null],
    ['/', null],
    ['$rampart/devices/d1', null],
    ['', 'a topic name cannot be empty'],
    ['a/+', "a topic name cannot contain the wildcards '+' or '#'"],
    ['a/#', "a topic name cannot contain the wildcards '+' or '#'"],
    ['a+b', "a topic name cannot contain the wildcards '+' or '#'"],
    ['a\u0000', 'a topic name cannot contain NUL'],
  ])('topic name %j: %s', (topic, problem) => {
    expect(topicNameProblem(topic)).toBe(problem);
  });

  it.each<[string, string | null]>([
    ['a/b', null],
    ['#', null],
    ['+', null],
    ['+/+/#', null],
    ['a//+', null],
    ['/#', null],
    ['', 'a topic filter cannot be empty'],
    ['a/#/b', "'#' may only be the last level"],
    ['a/b#', "'#' must be a level of its own"],
    ['a/#b', "'#' must be a level of its own"],
    ['a+', "'+' must be a level of its own"],
    ['++', "'+' must be a level of its own"],
    ['a/+b/c', "'+' must be a level of its own"],
    ['a/\u0000', 'a topic filter cannot contain NUL'],
  ])('topic filter %j: %s', (filter, problem) => {
    expect(topicFilterProblem(filter)).toBe(problem);
  });
});
