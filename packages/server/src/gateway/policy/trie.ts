// A trie of topic patterns, one node per level. A decision walks it level by level: a map lookup for
// the literal level, the `+` child, and the `#` entries of each node on the way; no regex, and no
// allocation but the level strings used as map keys. Same answers as topics.ts, many patterns at once.

import type { Levels } from './topics.js';

const DOLLAR = 0x24;

/**
 * A node's children by literal level. Most nodes of a device's policy have exactly one child, and
 * every session holds its own trie: the first child is kept inline, a Map holds any others.
 */
class Children<T> {
  private more: Map<string, Node<T>> | null = null;

  constructor(
    private readonly firstLevel: string,
    private readonly firstNode: Node<T>,
  ) {}

  get(level: string): Node<T> | undefined {
    return level === this.firstLevel ? this.firstNode : this.more?.get(level);
  }

  add(level: string, node: Node<T>): void {
    (this.more ??= new Map()).set(level, node);
  }

  /** Calls `fn` with each child in insertion order until it returns something other than undefined. */
  find<R>(fn: (level: string, node: Node<T>) => R | undefined): R | undefined {
    const found = fn(this.firstLevel, this.firstNode);
    if (found !== undefined || !this.more) return found;
    for (const [level, node] of this.more) {
      const r = fn(level, node);
      if (r !== undefined) return r;
    }
    return undefined;
  }
}

class Node<T> {
  /** Children by literal level. */
  children: Children<T> | null = null;
  /** The child for `+`. */
  single: Node<T> | null = null;
  /** Patterns ending here. */
  exact: T[] | null = null;
  /** Patterns ending here with `#` (they match this level, the parent, too). */
  multi: T[] | null = null;
}

function isDollarLiteral(level: string): boolean {
  return level !== '+' && level !== '#' && level.charCodeAt(0) === DOLLAR;
}

export class TopicTrie<T> {
  private readonly root = new Node<T>();
  private patternCount = 0;
  private nodeCount = 1;

  /** Patterns stored (a pattern stored twice counts twice). */
  get size(): number {
    return this.patternCount;
  }

  /** Nodes of the trie, the root included. */
  get nodes(): number {
    return this.nodeCount;
  }

  /** Store `value` under `pattern` (levels; `+` and `#` are wildcards, `#` only last). */
  insert(pattern: Levels, value: T): void {
    let node = this.root;
    for (let i = 0; i < pattern.length; i++) {
      const level = pattern[i]!;
      if (level === '#') {
        if (i !== pattern.length - 1) throw new Error(`'#' must be the last level of a pattern`);
        // An array of exactly one to start with: most patterns end at a node of their own.
        if (node.multi) node.multi.push(value);
        else node.multi = [value];
        this.patternCount++;
        return;
      }
      let next: Node<T> | null | undefined;
      if (level === '+') {
        next = node.single ??= this.newNode();
      } else {
        next = node.children?.get(level);
        if (!next) {
          next = this.newNode();
          if (node.children) node.children.add(level, next);
          else node.children = new Children(level, next);
        }
      }
      node = next;
    }
    if (node.exact) node.exact.push(value);
    else node.exact = [value];
    this.patternCount++;
  }

  private newNode(): Node<T> {
    this.nodeCount++;
    return new Node<T>();
  }

  // -------------------------------------------------------------------------------------------
  // Topic names: which patterns match a concrete topic

  /** The first value whose pattern matches the topic name, or undefined. */
  match(topic: string): T | undefined {
    return matchFrom(this.root, topic, 0, null);
  }

  /** Every value whose pattern matches the topic name. */
  matchAll(topic: string): T[] {
    const out: T[] = [];
    matchFrom(this.root, topic, 0, out);
    return out;
  }

  /**
   * The first value whose pattern matches `value` taken as ONE level, whatever it contains (a
   * client id may hold `/`): a literal equal to it, `+` or `#`. No `$` rule.
   */
  matchOneLevel(value: string): T | undefined {
    return oneLevel(this.root, value, null);
  }

  matchOneLevelAll(value: string): T[] {
    const out: T[] = [];
    oneLevel(this.root, value, out);
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Topic filters: which patterns cover or intersect a filter

  /** The first value whose pattern covers the filter (matches every topic the filter matches). */
  covering(filter: Levels): T | undefined {
    return coverFrom(this.root, filter, 0, null);
  }

  coveringAll(filter: Levels): T[] {
    const out: T[] = [];
    coverFrom(this.root, filter, 0, out);
    return out;
  }

  /** The first value whose pattern intersects the filter (some topic matches both). */
  intersecting(filter: Levels): T | undefined {
    return intersectFrom(this.root, filter, 0, null);
  }

  intersectingAll(filter: Levels): T[] {
    const out: T[] = [];
    intersectFrom(this.root, filter, 0, out);
    return out;
  }
}

/**
 * The values stored at a node that match: without `out`, the first of them (the walk stops there);
 * with `out`, all of them are added to it and the walk goes on (undefined).
 */
function take<T>(values: T[] | null | undefined, out: T[] | null): T | undefined {
  if (!values) return undefined;
  if (!out) return values[0];
  out.push(...values);
  return undefined;
}

/**
 * Walk from `node` for the topic's level starting at `start` (past the end: no level left). With
 * `out`, collect every match; without, return the first.
 */
function matchFrom<T>(node: Node<T>, topic: string, start: number, out: T[] | null): T | undefined {
  const wildcardsApply = start !== 0 || topic.charCodeAt(0) !== DOLLAR;
  const multi = wildcardsApply ? take(node.multi, out) : undefined;
  if (multi !== undefined) return multi;
  if (start > topic.length) return take(node.exact, out);
  let end = topic.indexOf('/', start);
  if (end < 0) end = topic.length;
  if (node.children) {
    const child = node.children.get(topic.slice(start, end));
    if (child) {
      const found = matchFrom(child, topic, end + 1, out);
      if (found !== undefined) return found;
    }
  }
  if (node.single && wildcardsApply) return matchFrom(node.single, topic, end + 1, out);
  return undefined;
}

function oneLevel<T>(root: Node<T>, value: string, out: T[] | null): T | undefined {
  // Collecting, each `take` returns undefined, so all three run.
  return (
    take(root.children?.get(value)?.exact, out) ?? take(root.single?.exact, out) ?? take(root.multi, out)
  );
}

function coverFrom<T>(node: Node<T>, filter: Levels, i: number, out: T[] | null): T | undefined {
  const f = filter[i];
  // `#` covers the rest of the filter, even nothing (it matches the parent level), except `$` topics.
  const multi = i === 0 && f !== undefined && isDollarLiteral(f) ? undefined : take(node.multi, out);
  if (multi !== undefined) return multi;
  if (f === undefined) return take(node.exact, out);
  // Only `#` covers `#`; and at the top `+/#` too, since a topic has at least one level.
  if (f === '#') return i === 0 ? take(node.single?.multi, out) : undefined;
  if (f !== '+') {
    const child = node.children?.get(f);
    if (child) {
      const found = coverFrom(child, filter, i + 1, out);
      if (found !== undefined) return found;
    }
    if (i === 0 && isDollarLiteral(f)) return undefined;
  }
  // A `+` in the pattern covers a literal or a `+` in the filter.
  if (node.single) return coverFrom(node.single, filter, i + 1, out);
  return undefined;
}

function intersectFrom<T>(node: Node<T>, filter: Levels, i: number, out: T[] | null): T | undefined {
  const f = filter[i];
  const multi = i === 0 && f !== undefined && isDollarLiteral(f) ? undefined : take(node.multi, out);
  if (multi !== undefined) return multi;
  if (f === undefined) return take(node.exact, out);
  // The filter matches this level (the parent) and anything below: every pattern from here on.
  if (f === '#') return take(node.exact, out) ?? anyBelow(node, i === 0, out);
  if (f === '+') {
    const found = node.children?.find((level, child) =>
      i === 0 && level.charCodeAt(0) === DOLLAR ? undefined : intersectFrom(child, filter, i + 1, out),
    );
    if (found !== undefined) return found;
  } else {
    const child = node.children?.get(f);
    if (child) {
      const found = intersectFrom(child, filter, i + 1, out);
      if (found !== undefined) return found;
    }
    if (i === 0 && isDollarLiteral(f)) return undefined;
  }
  if (node.single) return intersectFrom(node.single, filter, i + 1, out);
  return undefined;
}

/** Every pattern strictly below `node` (in its children's subtrees); at the root, not under `$` levels. */
function anyBelow<T>(node: Node<T>, atRoot: boolean, out: T[] | null): T | undefined {
  const found = node.children?.find((level, child) =>
    atRoot && level.charCodeAt(0) === DOLLAR ? undefined : everything(child, out),
  );
  if (found !== undefined) return found;
  if (node.single) return everything(node.single, out);
  return undefined;
}

function everything<T>(node: Node<T>, out: T[] | null): T | undefined {
  const here = take(node.exact, out) ?? take(node.multi, out);
  if (here !== undefined) return here;
  const found = node.children?.find((_level, child) => everything(child, out));
  if (found !== undefined) return found;
  if (node.single) return everything(node.single, out);
  return undefined;
}
