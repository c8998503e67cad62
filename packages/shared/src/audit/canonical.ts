/**
 * JSON canonicalization in the manner of RFC 8785 (JCS): object keys sorted by UTF-16 code units,
 * no insignificant whitespace, strings and numbers serialized as ECMAScript's JSON.stringify does.
 * Audit entry details are stored in this form so that their hash is reproducible by anyone.
 */
export function canonicalJson(value: unknown): string {
  if (
    value !== null &&
    typeof value === 'object' &&
    typeof (value as { toJSON?: unknown }).toJSON === 'function'
  ) {
    // As JSON.stringify does: a Date becomes its ISO text.
    return canonicalJson((value as { toJSON(): unknown }).toJSON());
  }
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw new TypeError('canonical JSON cannot represent a non-finite number');
    }
    if (value === undefined) throw new TypeError('canonical JSON cannot represent undefined');
    if (typeof value === 'function' || typeof value === 'symbol' || typeof value === 'bigint') {
      throw new TypeError(`canonical JSON cannot represent a ${typeof value}`);
    }
    return JSON.stringify(value);
  }
  // Array.from visits holes of sparse arrays too; like undefined items, they become null.
  if (Array.isArray(value))
    return `[${Array.from(value, (v: unknown) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}
