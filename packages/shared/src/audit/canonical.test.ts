import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from './canonical.js';
import { GENESIS_HASH, auditEntryHash, hashOfEntry, type AuditEntry } from './entry.js';

describe('canonicalJson', () => {
  it('sorts object keys, at every level of nesting', () => {
    expect(canonicalJson({ b: 1, a: 2 })).toBe('{"a":2,"b":1}');
    expect(canonicalJson({ z: [{ d: 1, c: { f: true, e: null } }], a: { y: 'x', b: [] } })).toBe(
      '{"a":{"b":[],"y":"x"},"z":[{"c":{"e":null,"f":true},"d":1}]}',
    );
    // Arrays keep their order: it is part of the data.
    expect(canonicalJson([3, 1, 2])).toBe('[3,1,2]');
  });

  it('orders keys by UTF-16 code units as RFC 8785 requires (not by code points)', () => {
    // RFC 8785 section 3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+FB33 in UTF-16 order.
    const value = { '\ufb33': 1, '😀': 2, '€': 3, ö: 4, '\u0080': 5, '1': 6, '\r': 7 };
    expect(canonicalJson(value)).toBe('{"\\r":7,"1":6,"\u0080":5,"ö":4,"€":3,"😀":2,"\ufb33":1}');
  });

  it('writes no insignificant whitespace and serializes numbers as ECMAScript does', () => {
    expect(canonicalJson({ a: [1, 2, { b: 'c d' }] })).toBe('{"a":[1,2,{"b":"c d"}]}');
    expect(canonicalJson([1.0, 0.1, -0, 1e21, 1e-7, 123456789012345680000])).toBe(
      '[1,0.1,0,1e+21,1e-7,123456789012345680000]',
    );
  });

  it('escapes strings exactly as JSON.stringify does', () => {
    expect(canonicalJson('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(canonicalJson('line\nbreak\ttab\u0001\u001f')).toBe('"line\\nbreak\\ttab\\u0001\\u001f"');
    // Non-ASCII stays literal; lone surrogates are escaped (well-formed JSON.stringify).
    expect(canonicalJson('é€😀\u2028')).toBe('"é€😀\u2028"');
    expect(canonicalJson('\ud800')).toBe('"\\ud800"');
    expect(canonicalJson({ 'k"\n': 'v' })).toBe('{"k\\"\\n":"v"}');
  });

  it('refuses values JSON cannot represent', () => {
    expect(() => canonicalJson(NaN)).toThrow(/non-finite/);
    expect(() => canonicalJson(Infinity)).toThrow(/non-finite/);
    expect(() => canonicalJson({ a: { b: -Infinity } })).toThrow(/non-finite/);
    expect(() => canonicalJson([1, NaN])).toThrow(/non-finite/);
    expect(() => canonicalJson(undefined)).toThrow(/undefined/);
    expect(() => canonicalJson({ f: () => 1 })).toThrow(TypeError);
    expect(() => canonicalJson({ s: Symbol('s') })).toThrow(TypeError);
    expect(() => canonicalJson({ n: 10n })).toThrow(TypeError);
  });

  it('drops undefined object members and turns undefined array items into null, like JSON.stringify', () => {
    expect(canonicalJson({ a: undefined, b: 1 })).toBe('{"b":1}');
    expect(canonicalJson([undefined, 1])).toBe('[null,1]');
    // eslint-disable-next-line no-sparse-arrays
    expect(canonicalJson([, 1])).toBe('[null,1]');
  });

  it('uses toJSON as JSON.stringify does (dates become their ISO text)', () => {
    const d = new Date('2026-01-02T03:04:05.678Z');
    expect(canonicalJson({ at: d })).toBe('{"at":"2026-01-02T03:04:05.678Z"}');
  });

  it('always yields text that parses back to an equal value', () => {
    const value = { z: 'ü', a: [1, { c: null, b: [true, false] }], m: { '': 0 } };
    expect(JSON.parse(canonicalJson(value))).toEqual(value);
    expect(canonicalJson(JSON.parse(canonicalJson(value)))).toBe(canonicalJson(value));
  });
});

describe('audit entry hash', () => {
  const fields = {
    seq: 1,
    time: '2026-01-01T00:00:00.000Z',
    actor: 'system',
    action: 'platform.start',
    target: '',
    outcome: 'success',
    detailsJson: '{"version":"0.1.0"}',
    prevHash: GENESIS_HASH,
  };

  it('is SHA-256 over the documented JSON array, and stable', () => {
    const material =
      '["rampart-audit-v1",1,"2026-01-01T00:00:00.000Z","system","platform.start","","success",' +
      `"{\\"version\\":\\"0.1.0\\"}","${'0'.repeat(64)}"]`;
    const expected = createHash('sha256').update(material, 'utf8').digest('hex');
    expect(auditEntryHash(fields)).toBe(expected);
    // Pinned: changing the construction breaks every existing log and docs/audit.md.
    expect(auditEntryHash(fields)).toBe('71cd95331f4dcbb98f8ef2252f0a82fb03281e0c56f331bed7c10ce166c13038');
  });

  it('changes when any field changes', () => {
    const base = auditEntryHash(fields);
    const variants = [
      { seq: 2 },
      { time: '2026-01-01T00:00:00.001Z' },
      { actor: 'token:abc' },
      { action: 'platform.stop' },
      { target: 'x' },
      { outcome: 'failure' },
      { detailsJson: '{"version":"0.1.1"}' },
      { prevHash: '1'.repeat(64) },
    ];
    const hashes = variants.map((v) => auditEntryHash({ ...fields, ...v }));
    for (const h of hashes) expect(h).not.toBe(base);
    expect(new Set(hashes).size).toBe(variants.length);
  });

  it('keeps field boundaries unambiguous', () => {
    const a = auditEntryHash({ ...fields, actor: 'ab', action: 'c' });
    const b = auditEntryHash({ ...fields, actor: 'a', action: 'bc' });
    expect(a).not.toBe(b);
  });

  it('hashes details by their canonical text, whatever the key order', () => {
    const entry = (details: Record<string, unknown>): AuditEntry => ({
      seq: 1,
      time: fields.time,
      actor: 'system',
      action: 'token.create',
      target: 'token:abc',
      outcome: 'success',
      details,
      prevHash: GENESIS_HASH,
      hash: '',
    });
    const h1 = hashOfEntry(entry({ name: 'ci', role: 'admin', extra: { b: 1, a: 2 } }));
    const h2 = hashOfEntry(entry({ extra: { a: 2, b: 1 }, role: 'admin', name: 'ci' }));
    expect(h1).toBe(h2);
    expect(hashOfEntry(entry({ name: 'ci', role: 'viewer', extra: { a: 2, b: 1 } }))).not.toBe(h1);
  });
});
