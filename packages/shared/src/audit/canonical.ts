/**
 * JSON canonicalization in the manner of RFC 8785 (JCS): object keys sorted by UTF-16 code units,
 * no insignificant whitespace, strings and numbers serialized as ECMAScript's JSON.stringify does.
 * Audit entry details are stored in this form so that their hash is reproducible by anyone.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw new TypeError('canonical JSON cannot represent a non-finite number');
    }
    if (value === undefined) throw new TypeError('canonical JSON cannot represent undefined');
    return JSON.stringify(value);
  }
  if (Array.isArray(value))
    return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}
