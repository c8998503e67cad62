/**
 * A minimal DER writer for the hot paths of the CA (certificates, certs-only replies, OCSP
 * answers). The ASN.1 schemas of @peculiar/asn1-* remain the source of structure everywhere else,
 * but their serializer costs about a millisecond per certificate, which is most of an
 * enrollment's budget; these few functions assemble DER from already-encoded parts instead. Tests
 * compare their output byte for byte with the schema library's encoding.
 */
export function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Tag-length-value with the given tag byte over the concatenated contents. */
export function tlv(tag: number, ...contents: Uint8Array[]): Buffer {
  const body = contents.length === 1 ? Buffer.from(contents[0]!) : Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

export const der = {
  sequence: (...c: Uint8Array[]) => tlv(0x30, ...c),
  set: (...c: Uint8Array[]) => tlv(0x31, ...c),
  octetString: (b: Uint8Array) => tlv(0x04, b),
  /** BIT STRING with no unused bits. */
  bitString: (b: Uint8Array) => tlv(0x03, Buffer.from([0]), b),
  utf8String: (s: string) => tlv(0x0c, Buffer.from(s, 'utf8')),
  ia5String: (s: string) => tlv(0x16, Buffer.from(s, 'ascii')),
  /** Positive INTEGER from unsigned big-endian bytes (a leading zero is added when needed). */
  unsignedInteger(bytes: Uint8Array): Buffer {
    let b = Buffer.from(bytes);
    let i = 0;
    while (i < b.length - 1 && b[i] === 0 && !(b[i + 1]! & 0x80)) i++;
    b = b.subarray(i);
    return tlv(0x02, b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
  },
  smallInteger: (n: number) => tlv(0x02, Buffer.from([n])),
  /** Context-specific constructed tag `[n]` (EXPLICIT, or IMPLICIT over a constructed type). */
  context: (n: number, ...c: Uint8Array[]) => tlv(0xa0 | n, ...c),
  /** UTCTime before 2050, GeneralizedTime from then on (RFC 5280 §4.1.2.5); whole seconds. */
  time(date: Date): Buffer {
    const iso = new Date(Math.floor(date.getTime() / 1000) * 1000).toISOString();
    const digits = iso.slice(0, 19).replace(/[-:T]/g, '') + 'Z';
    const year = date.getUTCFullYear();
    return year < 2050 && year >= 1950
      ? tlv(0x17, Buffer.from(digits.slice(2), 'ascii'))
      : tlv(0x18, Buffer.from(digits, 'ascii'));
  },
  generalizedTime(date: Date): Buffer {
    const iso = new Date(Math.floor(date.getTime() / 1000) * 1000).toISOString();
    return tlv(0x18, Buffer.from(iso.slice(0, 19).replace(/[-:T]/g, '') + 'Z', 'ascii'));
  },
};

export interface DerElement {
  tag: number;
  /** Offset of the content. */
  start: number;
  /** Offset just past the content. */
  end: number;
}

/** Read the element at `offset` (definite lengths only, as DER requires); throws a RangeError saying what is wrong. */
export function readDer(buf: Uint8Array, offset = 0): DerElement {
  let p = offset;
  if (p >= buf.length) throw new RangeError('an element header is cut short');
  const tag = buf[p++]!;
  if ((tag & 0x1f) === 0x1f) while (p < buf.length && buf[p++]! & 0x80);
  if (p >= buf.length) throw new RangeError('an element header is cut short');
  let len = buf[p++]!;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new RangeError('it uses an indefinite length');
    if (n > 4 || p + n > buf.length) throw new RangeError('an element header is cut short');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p++]!;
  }
  const end = p + len;
  if (end > buf.length) throw new RangeError('an element overruns the element containing it');
  return { tag, start: p, end };
}

/**
 * Check that every constructed element of `buf[start, end)` is made of complete elements that fill
 * it exactly; returns what is wrong, or null. Calls `visit` for each element at depth 0.
 */
export function derNestingProblem(
  buf: Uint8Array,
  start: number,
  end: number,
  visit?: (e: DerElement) => string | null,
  depth = 0,
): string | null {
  if (depth > 32) return 'it is nested more than 32 levels deep';
  const view = buf.subarray(0, end);
  for (let p = start; p < end;) {
    let e: DerElement;
    try {
      e = readDer(view, p);
    } catch (err) {
      return (err as Error).message;
    }
    if (depth === 0 && visit) {
      const problem = visit(e);
      if (problem) return problem;
    }
    if (e.tag & 0x20) {
      const inner = derNestingProblem(buf, e.start, e.end, undefined, depth + 1);
      if (inner) return inner;
    }
    p = e.end;
  }
  return null;
}

/** The subjectPublicKey bits (without the unused-bits octet) of a DER SubjectPublicKeyInfo. */
export function subjectPublicKeyBits(spkiDer: Uint8Array): Buffer {
  const outer = readDer(spkiDer);
  const algorithm = readDer(spkiDer, outer.start);
  const bits = readDer(spkiDer, algorithm.end);
  if (outer.tag !== 0x30 || algorithm.tag !== 0x30 || bits.tag !== 0x03)
    throw new RangeError('not a SubjectPublicKeyInfo');
  return Buffer.from(spkiDer.subarray(bits.start + 1, bits.end));
}
