// MQTT topic names, topic filters and the three relations the policy engine needs between a pattern
// and a topic or filter. Patterns and filters are arrays of levels in which `+` and `#` are the
// wildcards; a literal level never equals `+` or `#` (validation and variable expansion see to it).
//
// As in MQTT (3.1.1 §4.7.2, 5.0 §4.7.2), a topic whose first level starts with `$` is not matched by
// a pattern or filter whose first level is a wildcard.
//
// These are the reference versions, level by level; the tries in trie.ts answer the same questions
// for many patterns at once, and the tests check one against the other.

export type Levels = readonly string[];

const DOLLAR = 0x24;

/** Whether a literal first level starts with `$` (and so escapes first-level wildcards). */
function isDollarLiteral(level: string): boolean {
  return level !== '+' && level !== '#' && level.charCodeAt(0) === DOLLAR;
}

/** Whether `pattern` matches the topic name `topic` (no wildcards in `topic`). */
export function matchesTopic(pattern: Levels, topic: Levels): boolean {
  for (let i = 0; ; i++) {
    const p = pattern[i];
    const t = topic[i];
    if (p === '#') return !(i === 0 && t !== undefined && isDollarLiteral(t));
    if (p === undefined || t === undefined) return p === t;
    if (p === '+') {
      if (i === 0 && isDollarLiteral(t)) return false;
      continue;
    }
    if (p !== t) return false;
  }
}

/** Whether every topic the filter matches is matched by the pattern. */
export function covers(pattern: Levels, filter: Levels): boolean {
  for (let i = 0; ; i++) {
    const p = pattern[i];
    const f = filter[i];
    // `#` also matches the parent level, so it covers whatever the filter has left, even nothing.
    if (p === '#') return !(i === 0 && f !== undefined && isDollarLiteral(f));
    if (p === undefined || f === undefined) return p === f;
    // The filter goes on to any depth; the pattern, without `#` here, does not, with one exception:
    // a filter `#` matches no empty topic, so the pattern `+/#` matches everything it does.
    if (f === '#') return i === 0 && p === '+' && pattern[1] === '#';
    if (p === '+') {
      if (i === 0 && isDollarLiteral(f)) return false;
      continue;
    }
    if (f === '+' || p !== f) return false;
  }
}

/** Whether some topic is matched by both the pattern and the filter. */
export function intersects(pattern: Levels, filter: Levels): boolean {
  for (let i = 0; ; i++) {
    const p = pattern[i];
    const f = filter[i];
    if (p === '#' || f === '#') {
      // Matches whatever the other has left (nothing, or any levels), except `$` topics at the top.
      if (i > 0) return true;
      const other = p === '#' ? f : p;
      return other === undefined || !isDollarLiteral(other);
    }
    if (p === undefined || f === undefined) return p === f;
    if (p === '+' || f === '+') {
      if (i === 0 && (isDollarLiteral(p) || isDollarLiteral(f))) return false;
      continue;
    }
    if (p !== f) return false;
  }
}

/** Why `topic` is not a valid MQTT topic name (to publish to or be delivered from), or null. */
export function topicNameProblem(topic: string): string | null {
  if (topic.length === 0) return 'a topic name cannot be empty';
  for (let i = 0; i < topic.length; i++) {
    const c = topic.charCodeAt(i);
    if (c === 0x2b || c === 0x23) return "a topic name cannot contain the wildcards '+' or '#'";
    if (c === 0) return 'a topic name cannot contain NUL';
  }
  return null;
}

/** Why `filter` is not a valid MQTT topic filter (to subscribe to), or null. */
export function topicFilterProblem(filter: string): string | null {
  if (filter.length === 0) return 'a topic filter cannot be empty';
  let levelStart = 0;
  for (let i = 0; i <= filter.length; i++) {
    const c = i === filter.length ? 0x2f : filter.charCodeAt(i);
    if (c === 0) return 'a topic filter cannot contain NUL';
    if (c === 0x2f) {
      levelStart = i + 1;
      continue;
    }
    if (c === 0x2b || c === 0x23) {
      const alone = i === levelStart && (i + 1 === filter.length || filter.charCodeAt(i + 1) === 0x2f);
      if (!alone) return `'${String.fromCharCode(c)}' must be a level of its own`;
      if (c === 0x23 && i + 1 !== filter.length) return "'#' may only be the last level";
    }
  }
  return null;
}

/** Split a topic name, filter or expanded pattern into its levels. */
export function levelsOf(topic: string): string[] {
  return topic.split('/');
}
