import { randomInt } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { EST_MEDIA, EST_PATH, decodeBase64Body, parseCsr } from '@rampart/shared/pki';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers, deviceCertificateCount } from '../test-support/pki.js';
import { checkCsr, checkDeviceIdentity } from './csr-policy.js';

/**
 * Random and mutated CSR bodies against EST simpleenroll on the platform's real TLS listener,
 * each request carrying a valid, unused enrollment token so that only the body decides. Nothing may
 * crash the server (no 5xx), nothing may be issued for a body that is not a valid CSR for the
 * device, and the server must stay healthy and small. Reproduce a run with `EST_FUZZ_SEED=<seed>`.
 */
const DEVICE = 'DW100-3001';
const CASES = Number(process.env.EST_FUZZ_CASES ?? 10_000);
const CONCURRENCY = 16;
const SEED = process.env.EST_FUZZ_SEED ? Number(process.env.EST_FUZZ_SEED) >>> 0 : randomInt(1, 2 ** 32 - 1);
/**
 * Valid requests for DW100-3001 to mutate, fixed so that a seed reproduces a run exactly: openssl
 * EC P-256 / SHA-256, openssl RSA-2048 / SHA-256, and EC P-384 / SHA-384 with O and a SAN URI.
 */
const BASES = [
  'MIHOMHcCAQAwFTETMBEGA1UEAwwKRFcxMDAtMzAwMTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABBFbIVrwCwgedgpbERt/aGQhcm4WgVt4dAli6VkxD0BElBP/TEsRaWuTKhsS0F362FSlmMUsuTRGVE1va3kl1uegADAKBggqhkjOPQQDAgNHADBEAiAJPlywQ+A3q49steFcFWjnEYfQBeLvdpAY1AQe13ri6wIgA2+Sprx1UA3UI12RtFKkeTwE+JBnMyFsXRvC26zO5+w=',
  'MIICWjCCAUICAQAwFTETMBEGA1UEAwwKRFcxMDAtMzAwMTCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBALVmqdqgMdJv/x7xFqR0YSrG4D8+V9cpGrYrWGkJv73Yb8+64yHTIIek5d6oobXIUeFsQxbNU9q+w2o6Bej3pJP23IOEsPJFylEziJuVqwdcNgZcC0AsvX6LLI3ACBngLSymENSX5dQJyWD2zCcf+tI5ZsOLQuP1hbzEU1oZ2xoBrl75gjaKI8ts9fh1JTZUDFvHmwelFTNgdcU7ymVlm0MbgLNHZEP34e4MbsECQe/6fxmLdKhnNA/rIccNKjb9+U6t9H2G/fo3+/IbCh6jU82H5mEdqjwbGUg59oAclTF12ExiwcIPfpFlC2UjUv5pB4oaHHZQ/FPe49UMSpEXpP0CAwEAAaAAMA0GCSqGSIb3DQEBCwUAA4IBAQCRJrKBgTd7xu/O9Qr8mEhk0ISwms020cV7CIqXYHkI7+ZrLiorjrXSIGuI7Ff6oZIvBSi6G9E/soOZWbH7TsGsTQ4GIYM/ar/GDdF6hZGcL72igIxI1WKGYHBobvAkNcGudWpW6mYBNODxgT0HJ//sWClqmj+Acuvrx9Y3xUwxSkM98wSTUgZzAISB/ednOVY4r9jrjpE9RNv13tGgg7lfk6AZ06TbQQkC/Pp1WvZ/Lu1+XfrdYMqya7QcbWX1nDRvx4CXcoolgLDjcMoFeohIBgo6vBP+CV1topO2HxoUQGe7pkDtZ73uCIf7czJyuqYr6s0mHEsoFXWqJZirQCva',
  'MIIBXjCB5gIBADAsMRUwEwYDVQQKDAxSYW1wYXJ0IGZ1enoxEzARBgNVBAMMCkRXMTAwLTMwMDEwdjAQBgcqhkjOPQIBBgUrgQQAIgNiAAQAIivP+xEZNEcojwlgPb5AozotB7g0P9rQz+KD521klP2rXNIoFUW7eORlnnUzEypNmR3kXfyjSIbB0scmWOJJPbXfdvEeUUEjgAaezsdVRKXnYzLfm/i55JAQpRml4SmgOzA5BgkqhkiG9w0BCQ4xLDAqMCgGA1UdEQQhMB+GHXVybjpyYW1wYXJ0OmRldmljZTpEVzEwMC0zMDAxMAoGCCqGSM49BAMDA2cAMGQCMC0RRLSSyRrsIFn8few1lieK5nopLez+zG7NvrHcDwAT0BtEt01/KpWHtd/TCrkeoAIwRUBMHf/hDpYDkyxO/wfOujA7JsIqsMi5NkW0oW/gz0VxxsZXxAnQ77kp7NBMMlzk',
].map((b64) => Buffer.from(b64, 'base64'));
/** Largest raw body the generators make: base64 of it stays under the EST listener's 64 KiB limit. */
const MAX_RAW = 45_000;

/** xorshift32: small, seeded, good enough to pick mutations. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  /** 0 ≤ n < max. */
  int(max: number): number {
    return max <= 1 ? 0 : this.next() % max;
  }
  /** lo ≤ n ≤ hi. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.next() & 0xff;
    return out;
  }
}

/** Independent stream for case `i`, so a case reproduces whatever the request order was. */
function caseSeed(seed: number, i: number): number {
  let h = (seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0 || 1;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Offsets of every DER length field in `der` (the TLV tree, descending into constructed types). */
function lengthFields(der: Buffer): { lenAt: number; lenBytes: number }[] {
  const out: { lenAt: number; lenBytes: number }[] = [];
  const walk = (start: number, end: number, depth: number): void => {
    let p = start;
    while (p + 1 < end && depth < 16) {
      const tag = der[p]!;
      if ((tag & 0x1f) === 0x1f) return;
      const l0 = der[p + 1]!;
      let len = l0;
      let lenBytes = 1;
      if (l0 >= 0x80) {
        const n = l0 & 0x7f;
        if (n === 0 || n > 4 || p + 2 + n > end) return;
        len = 0;
        for (let i = 0; i < n; i++) len = len * 256 + der[p + 2 + i]!;
        lenBytes = 1 + n;
      }
      out.push({ lenAt: p + 1, lenBytes });
      const content = p + 1 + lenBytes;
      if (tag & 0x20) walk(content, Math.min(content + len, end), depth + 1);
      p = content + len;
    }
  };
  walk(0, der.length, 0);
  return out;
}

function splice(buf: Buffer, at: number, remove: number, insert: Buffer): Buffer {
  return Buffer.concat([buf.subarray(0, at), insert, buf.subarray(at + remove)]);
}

function flip(rng: Rng, der: Buffer): Buffer {
  const out = Buffer.from(der);
  for (let n = rng.range(1, 8); n > 0; n--) {
    const at = rng.int(out.length);
    out[at] = rng.int(2) ? out[at]! ^ (1 << rng.int(8)) : rng.int(256);
  }
  return out;
}

function corruptLength(rng: Rng, der: Buffer): Buffer {
  const fields = lengthFields(der);
  if (fields.length === 0) return flip(rng, der);
  const f = rng.pick(fields);
  const current = der.subarray(f.lenAt, f.lenAt + f.lenBytes);
  const replacement = rng.pick([
    () => Buffer.from([rng.int(256)]),
    () => Buffer.from([0x80]),
    () => Buffer.from([0x84, 0xff, 0xff, 0xff, 0xff]),
    () => Buffer.from([0x84, 0x7f, 0xff, 0xff, 0xff]),
    () => Buffer.from([0x88, ...rng.bytes(8)]),
    () => Buffer.from([0xff]),
    () => Buffer.from([0x80 | rng.range(1, 127), ...rng.bytes(rng.range(0, 8))]),
    () => {
      const v = Buffer.from(current);
      v[v.length - 1] = (v[v.length - 1]! + rng.pick([1, 2, 3, 253, 254, 255])) & 0xff;
      return v;
    },
  ])();
  return splice(der, f.lenAt, f.lenBytes, replacement);
}

/** `depth` nested constructed elements (definite or indefinite length), at most MAX_RAW bytes. */
function nested(rng: Rng): Buffer {
  const tag = rng.pick([0x30, 0x31, 0xa0, 0xa3, 0x24]);
  if (rng.int(2)) {
    const depth = rng.range(50, Math.floor(MAX_RAW / 4));
    return Buffer.concat([
      Buffer.alloc(depth * 2, Buffer.from([tag, 0x80])),
      Buffer.alloc(rng.int(2) ? depth * 2 : rng.int(64)),
    ]);
  }
  const depth = rng.range(50, Math.floor(MAX_RAW / 4.5));
  let inner = rng.int(2) ? Buffer.from([0x05, 0x00]) : rng.bytes(rng.int(16));
  for (let d = 0; d < depth; d++) {
    const len = inner.length;
    const header =
      len < 0x80
        ? Buffer.from([tag, len])
        : len < 0x100
          ? Buffer.from([tag, 0x81, len])
          : Buffer.from([tag, 0x82, len >> 8, len & 0xff]);
    inner = Buffer.concat([header, inner]);
    if (inner.length > MAX_RAW - 4) break;
  }
  return inner;
}

type Kind =
  | 'random-bytes'
  | 'random-base64'
  | 'raw-binary'
  | 'byte-flips'
  | 'truncated'
  | 'insertions'
  | 'length-field'
  | 'base64-chars'
  | 'huge-length'
  | 'nested'
  | 'empty'
  | 'pem-mutated'
  | 'trailing-bytes';

const KINDS: Kind[] = [
  'random-bytes',
  'random-base64',
  'raw-binary',
  'byte-flips',
  'byte-flips',
  'truncated',
  'insertions',
  'length-field',
  'length-field',
  'base64-chars',
  'huge-length',
  'nested',
  'empty',
  'pem-mutated',
  'trailing-bytes',
];

function lines(b64: string, rng: Rng): string {
  const width = rng.pick([0, 64, 76]);
  return width
    ? (b64.match(new RegExp(`.{1,${width}}`, 'g')) ?? []).join(rng.pick(['\n', '\r\n'])) + '\n'
    : b64;
}

/** Case `i` of a run: its kind and the exact body sent. */
function generate(i: number, bases: readonly Buffer[]): { kind: Kind; body: Buffer } {
  const rng = new Rng(caseSeed(SEED, i));
  const kind = rng.pick(KINDS);
  const der = rng.pick(bases);
  const b64 = (raw: Buffer) => Buffer.from(lines(raw.toString('base64'), rng));
  switch (kind) {
    case 'random-bytes':
      return { kind, body: b64(rng.bytes(rng.int(2048))) };
    case 'random-base64': {
      const n = rng.int(3000);
      let s = '';
      for (let k = 0; k < n; k++) s += B64[rng.int(64)];
      if (rng.int(3) === 0) s += rng.pick(['=', '==', '===']);
      return { kind, body: Buffer.from(s) };
    }
    case 'raw-binary':
      return { kind, body: rng.int(2) ? rng.bytes(rng.int(2048)) : flip(rng, der) };
    case 'byte-flips':
      return { kind, body: b64(flip(rng, der)) };
    case 'truncated':
      return { kind, body: b64(der.subarray(0, rng.int(der.length))) };
    case 'insertions': {
      let out = der;
      for (let n = rng.range(1, 8); n > 0; n--)
        out = splice(out, rng.int(out.length), 0, rng.bytes(rng.range(1, 4)));
      return { kind, body: b64(out) };
    }
    case 'length-field': {
      let out = der;
      for (let n = rng.range(1, 2); n > 0; n--) out = corruptLength(rng, out);
      return { kind, body: b64(out) };
    }
    case 'base64-chars': {
      const text = Buffer.from(lines(der.toString('base64'), rng));
      for (let n = rng.range(1, 8); n > 0; n--) {
        const at = rng.int(text.length);
        text[at] = rng.int(8) ? B64.charCodeAt(rng.int(64)) : rng.int(256);
      }
      return { kind, body: text };
    }
    case 'huge-length': {
      const header = rng.pick([
        [0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        [0x30, 0x84, 0x7f, 0xff, 0xff, 0xff],
        [0x30, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        [0x30, 0xfe, ...rng.bytes(126)],
        [0x30, 0x83, 0x10, 0x00, 0x00, 0x30, 0x84, 0xff, 0xff, 0xff, 0xf0],
      ]);
      return {
        kind,
        body: b64(
          Buffer.concat([Buffer.from(header), rng.int(2) ? der.subarray(2) : rng.bytes(rng.int(512))]),
        ),
      };
    }
    case 'nested':
      return { kind, body: b64(nested(rng)) };
    case 'empty':
      return {
        kind,
        body: Buffer.from(
          rng.pick([
            '',
            ' ',
            '\r\n',
            '\n\n\t ',
            '=',
            '====',
            '-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n',
          ]),
        ),
      };
    case 'pem-mutated': {
      const label = rng.pick(['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST', 'CERTIFICATE', 'X']);
      const inner = rng.int(4) ? flip(rng, der) : der.subarray(0, rng.int(der.length));
      return {
        kind,
        body: Buffer.from(
          `-----BEGIN ${label}-----\n${lines(inner.toString('base64'), rng)}-----END ${label}-----\n`,
        ),
      };
    }
    case 'trailing-bytes':
      return { kind, body: b64(Buffer.concat([der, rng.bytes(rng.range(1, 64))])) };
  }
}

/** The CertificationRequestInfo (what is signed) and the signature BIT STRING of a request, or null. */
function signedParts(der: Buffer): { info: Buffer; signature: Buffer } | null {
  const element = (at: number): { content: number; end: number } | null => {
    const first = der[at + 1];
    if (first === undefined) return null;
    if (first < 0x80) return { content: at + 2, end: at + 2 + first };
    const n = first & 0x7f;
    if (n === 0 || n > 4) return null;
    let length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + (der[at + 2 + i] ?? 0);
    return { content: at + 2 + n, end: at + 2 + n + length };
  };
  const outer = element(0);
  const info = outer && element(outer.content);
  const algorithm = info && element(info.end);
  const signature = algorithm && element(algorithm.end);
  if (!outer || !info || !signature) return null;
  return {
    info: der.subarray(outer.content, info.end),
    signature: der.subarray(algorithm!.end, signature.end),
  };
}

let tp: TestPlatform;
let peers: PkiPeers;
let pool: Pool;

async function token(): Promise<string> {
  return peers.token(DEVICE);
}

async function simpleenroll(
  token: string,
  body: Buffer,
): Promise<{ status: number; type: string; text: string }> {
  const res = await pool.request({
    method: 'POST',
    path: `${EST_PATH}/simpleenroll`,
    headers: {
      'content-type': EST_MEDIA.pkcs10,
      authorization: `Basic ${Buffer.from(`${DEVICE}:${token}`).toString('base64')}`,
    },
    body,
  });
  return {
    status: res.statusCode,
    type: String(res.headers['content-type'] ?? ''),
    text: await res.body.text(),
  };
}

beforeAll(async () => {
  // Every refusal is an audited SQLite commit; without an fsync per commit the run stays well within budget.
  // The per-address refusal limit is off: every one of the 10,000 bodies must reach the parser.
  tp = await startTestPlatform('sqlite', {
    'database.sqliteSynchronous': 'normal',
    'est.refusalsPerMinute': 0,
  });
  peers = new PkiPeers(tp);
  await peers.device(DEVICE);
  for (const der of BASES) {
    const csr = parseCsr(der);
    expect(checkCsr(csr)).toBeNull();
    expect(checkDeviceIdentity(csr, DEVICE)).toBeNull();
  }
  pool = new Pool(new URL(peers.est).origin, {
    connections: CONCURRENCY,
    connect: { ca: readFileSync(join(tp.dataDir, 'ca.pem'), 'utf8') },
  });
}, 60_000);
afterAll(async () => {
  await pool?.close();
  await tp?.close();
});

interface Outcome {
  i: number;
  kind: Kind;
  status: number;
  text: string;
}

describe(`EST simpleenroll fuzz (${CASES} bodies)`, () => {
  it(
    'never fails with a 5xx, issues only for genuinely valid CSRs, and stays healthy and small',
    { timeout: 120_000 },
    async () => {
      onTestFailed(() => {
        console.error(`EST fuzz failed; reproduce with EST_FUZZ_SEED=${SEED}`);
      });
      const certificatesBefore = await deviceCertificateCount(tp);
      const refusalsBefore = await countEnrollAudit();
      const rssBefore = process.memoryUsage().rss;
      const started = Date.now();

      const bad: Outcome[] = [];
      const accepted: (Outcome & { body: Buffer })[] = [];
      const statuses = new Map<number, number>();
      const kinds = new Map<Kind, number>();
      let next = 0;
      let peakRss = rssBefore;
      const worker = async (): Promise<void> => {
        let current = await token();
        for (;;) {
          const i = next++;
          if (i >= CASES) return;
          const { kind, body } = generate(i, BASES);
          kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
          let res: Awaited<ReturnType<typeof simpleenroll>>;
          try {
            res = await simpleenroll(current, body);
          } catch (err) {
            bad.push({ i, kind, status: 0, text: String(err) });
            continue;
          }
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          const outcome = { i, kind, status: res.status, text: res.text.slice(0, 300) };
          if (res.status === 200) {
            accepted.push({ ...outcome, body });
            current = await token();
          } else if (res.status !== 400 && res.status !== 403) bad.push(outcome);
          else if (!res.type.startsWith('text/plain') || res.text.trim() === '') bad.push(outcome);
          if (i % 500 === 0) peakRss = Math.max(peakRss, process.memoryUsage().rss);
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const elapsed = Date.now() - started;
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
      console.info(
        `EST fuzz: seed ${SEED}, ${CASES} cases in ${elapsed} ms; statuses ${JSON.stringify(Object.fromEntries(statuses))}; ` +
          `kinds ${JSON.stringify(Object.fromEntries(kinds))}; accepted ${accepted.length}; ` +
          `RSS +${((peakRss - rssBefore) / 2 ** 20).toFixed(0)} MB`,
      );

      // Every response was a refusal with a message (or a genuine issuance, below): 400 for a bad
      // body, 403 for a good CSR naming another identity. With a valid token and the right media
      // type, 401 and 415 are as wrong as a 5xx or a dropped connection (status 0).
      expect(bad, `EST_FUZZ_SEED=${SEED}`).toEqual([]);

      // An accepted body must really be a valid CSR for the device, signed by the holder of its key: a
      // mutation can land where it changes nothing that is signed or used (the unused bits of the last
      // base64 quantum, a byte flipped back, the unsigned algorithm parameters). Such cases must be
      // rare; each must carry exactly the signed content and signature of one of the real requests,
      // and openssl's opinion of it is reported.
      expect(accepted.length, `EST_FUZZ_SEED=${SEED}: too many mutated bodies accepted`).toBeLessThanOrEqual(
        CASES / 200,
      );
      const genuine: string[] = [];
      for (const a of accepted) {
        const what = `case ${a.i} (${a.kind}), EST_FUZZ_SEED=${SEED}`;
        const der = decodeBase64Body(a.body, 'PKCS#10');
        const csr = parseCsr(der);
        expect(csr.signatureValid, what).toBe(true);
        expect(checkCsr(csr), what).toBeNull();
        expect(checkDeviceIdentity(csr, DEVICE), what).toBeNull();
        const parts = signedParts(der);
        const origin = BASES.findIndex((b) => {
          const p = signedParts(b)!;
          return parts !== null && p.info.equals(parts.info) && p.signature.equals(parts.signature);
        });
        expect(origin, `${what}: accepted a request no device signed`).toBeGreaterThanOrEqual(0);
        writeFileSync(peers.path(`accepted-${a.i}.der`), der);
        const openssl = await peers.opensslStatus(
          'req',
          '-inform',
          'DER',
          '-in',
          `accepted-${a.i}.der`,
          '-verify',
          '-noout',
        );
        genuine.push(
          `case ${a.i} (${a.kind}): ${BASES[origin]!.equals(der) ? 'the very same DER' : 'same signed content'} as base ${origin}, ` +
            `openssl: ${/verify OK/.test(openssl.out) ? 'verify OK' : openssl.out.split('\n')[0]}`,
        );
      }
      if (genuine.length) console.info(`EST fuzz: accepted (genuine):\n  ${genuine.join('\n  ')}`);
      // Nothing else was issued.
      expect(await deviceCertificateCount(tp), `EST_FUZZ_SEED=${SEED}`).toBe(
        certificatesBefore + accepted.length,
      );

      // Every refusal was audited.
      const refusals = CASES - accepted.length;
      const deadline = Date.now() + 10_000;
      let audited = await countEnrollAudit();
      while (audited - refusalsBefore < refusals && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        audited = await countEnrollAudit();
      }
      expect(audited - refusalsBefore).toBe(refusals);

      // Still healthy: the API answers and a good enrollment with a fresh token succeeds.
      const health = await tp.call('GET', '/healthz', { token: null });
      expect(health.status).toBe(200);
      peers.csr('after', DEVICE);
      const good = await simpleenroll(await token(), readFileSync(peers.path('after.csr.b64')));
      expect(good.status, good.text).toBe(200);
      expect(good.type).toBe(EST_MEDIA.certsOnly);

      expect(peakRss - rssBefore, 'RSS growth').toBeLessThan(200 * 2 ** 20);
    },
  );
});

async function countEnrollAudit(): Promise<number> {
  const row = await tp.platform.storage.db
    .selectFrom('audit_entries')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('action', '=', 'certificate.enroll')
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
