import { createHash, createPublicKey, constants, verify, type KeyObject } from 'node:crypto';
import { der } from '../pki/der.js';

/**
 * TPM 2.0 attestation structures, as the TCG TPM 2.0 Library (Part 2: Structures) defines them and
 * tpm2-tools writes them: the attestation a TPM signs (TPMS_ATTEST, from TPM2_Quote and
 * TPM2_Certify), public areas (TPMT_PUBLIC / TPM2B_PUBLIC) and signatures (TPMT_SIGNATURE, the
 * tools' default "tss" format). No maintained JavaScript library parses these, so they are read here
 * by hand, big-endian, field by field. Every read is bounds-checked: a short, overlong or malformed
 * buffer throws a TpmFormatError naming the structure and the field, never reads past the end, and
 * bytes left over after a structure are refused. Pure functions: no TPM, no sockets.
 */

/** A TPM structure that is not what it claims to be; the message says which field is wrong. */
export class TpmFormatError extends Error {
  override readonly name = 'TpmFormatError';
}

/** What a TPM puts at the start of everything it signs itself (TPM_GENERATED_VALUE, "\xffTCG"). */
export const TPM_GENERATED_VALUE = 0xff544347;

export type TpmHashAlg = 'sha1' | 'sha256' | 'sha384' | 'sha512';

const HASH_OF_ALG: ReadonlyMap<number, TpmHashAlg> = new Map([
  [0x0004, 'sha1'],
  [0x000b, 'sha256'],
  [0x000c, 'sha384'],
  [0x000d, 'sha512'],
]);
const ALG_OF_HASH: ReadonlyMap<TpmHashAlg, number> = new Map([...HASH_OF_ALG].map(([id, h]) => [h, id]));

const TPM_ALG_NULL = 0x0010;
const TPM_ST_ATTEST_CERTIFY = 0x8017;
const TPM_ST_ATTEST_QUOTE = 0x8018;
/** sizeof(TPMU_NAME): a hash algorithm and a SHA-512 digest. Also the largest TPM2B_DATA. */
const MAX_NAME_SIZE = 2 + 64;
const MAX_DIGEST_SIZE = 64;
/** Largest ECC coordinate or signature half (P-521). */
const MAX_ECC_BYTES = 66;
/** Largest RSA modulus a TPM handles (4096 bits). */
const MAX_RSA_BYTES = 512;

const hex16 = (n: number) => `0x${n.toString(16).padStart(4, '0')}`;
const hex32 = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

/** Big-endian reads over one structure; every read checks that the bytes are there. */
class Reader {
  private pos = 0;
  private readonly buf: Buffer;

  constructor(
    bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  fail(message: string): never {
    throw new TpmFormatError(`${this.what}: ${message}`);
  }

  private take(n: number, field: string): number {
    if (n > this.remaining)
      this.fail(
        `${field} is cut short: it needs ${n} byte${n === 1 ? '' : 's'} at offset ${this.pos}, ` +
          `${this.remaining} remain`,
      );
    const at = this.pos;
    this.pos += n;
    return at;
  }

  u8(field: string): number {
    return this.buf.readUInt8(this.take(1, field));
  }

  u16(field: string): number {
    return this.buf.readUInt16BE(this.take(2, field));
  }

  u32(field: string): number {
    return this.buf.readUInt32BE(this.take(4, field));
  }

  u64(field: string): bigint {
    return this.buf.readBigUInt64BE(this.take(8, field));
  }

  /** A copy of the next `n` bytes. */
  bytes(n: number, field: string): Buffer {
    const at = this.take(n, field);
    return Buffer.from(this.buf.subarray(at, at + n));
  }

  /** A TPM2B: a 16-bit size, then that many bytes (at most `max`). */
  sized(field: string, max: number): Buffer {
    const size = this.u16(`${field} size`);
    if (size > max) this.fail(`${field} is ${size} bytes, more than the ${max} it may have`);
    return this.bytes(size, field);
  }

  hashAlg(field: string): TpmHashAlg {
    const id = this.u16(field);
    const hash = HASH_OF_ALG.get(id);
    if (!hash) this.fail(`${field} is ${hex16(id)}, not SHA-1, SHA-256, SHA-384 or SHA-512`);
    return hash;
  }

  /** The bytes from `start` to the current position (a copy). */
  since(start: number): Buffer {
    return Buffer.from(this.buf.subarray(start, this.pos));
  }

  end(): void {
    if (this.remaining !== 0)
      this.fail(`${this.remaining} byte${this.remaining === 1 ? '' : 's'} follow the structure`);
  }
}

// ---------------------------------------------------------------------------------------------
// TPMS_ATTEST

export interface TpmPcrSelection {
  hash: TpmHashAlg;
  /** Selected PCR indices, ascending. */
  pcrs: number[];
}

/** TPMS_ATTEST: what a TPM signs for TPM2_Quote and TPM2_Certify. */
export interface TpmsAttest {
  /** Always TPM_GENERATED_VALUE: checked while parsing. */
  magic: number;
  type: 'quote' | 'certify';
  /** Qualified Name of the key that signed it. */
  qualifiedSigner: Buffer;
  /** The caller's qualifying data (the nonce), exactly as given to the TPM. */
  extraData: Buffer;
  clock: { clock: bigint; resetCount: number; restartCount: number; safe: boolean };
  firmwareVersion: bigint;
  quote?: { pcrSelections: TpmPcrSelection[]; pcrDigest: Buffer };
  certify?: { name: Buffer; qualifiedName: Buffer };
}

/** Parse a raw TPMS_ATTEST (what `tpm2_quote -m` and `tpm2_certify -o` write). */
export function parseTpmsAttest(buf: Uint8Array): TpmsAttest {
  const r: Reader = new Reader(buf, 'TPMS_ATTEST');
  const magic = r.u32('magic');
  if (magic !== TPM_GENERATED_VALUE)
    r.fail(`magic is ${hex32(magic)}, not TPM_GENERATED_VALUE (${hex32(TPM_GENERATED_VALUE)})`);
  const tag = r.u16('type');
  if (tag !== TPM_ST_ATTEST_QUOTE && tag !== TPM_ST_ATTEST_CERTIFY)
    r.fail(`type is ${hex16(tag)}, not TPM_ST_ATTEST_QUOTE (0x8018) or TPM_ST_ATTEST_CERTIFY (0x8017)`);
  const qualifiedSigner = r.sized('qualifiedSigner', MAX_NAME_SIZE);
  const extraData = r.sized('extraData', MAX_NAME_SIZE);
  const clock = r.u64('clockInfo.clock');
  const resetCount = r.u32('clockInfo.resetCount');
  const restartCount = r.u32('clockInfo.restartCount');
  const safe = r.u8('clockInfo.safe');
  if (safe > 1) r.fail(`clockInfo.safe is ${safe}, not YES (1) or NO (0)`);
  const firmwareVersion = r.u64('firmwareVersion');
  const attest: TpmsAttest = {
    magic,
    type: tag === TPM_ST_ATTEST_QUOTE ? 'quote' : 'certify',
    qualifiedSigner,
    extraData,
    clock: { clock, resetCount, restartCount, safe: safe === 1 },
    firmwareVersion,
  };
  if (tag === TPM_ST_ATTEST_QUOTE) {
    const pcrSelections = readPcrSelections(r);
    attest.quote = { pcrSelections, pcrDigest: r.sized('quote.pcrDigest', MAX_DIGEST_SIZE) };
  } else {
    attest.certify = {
      name: r.sized('certify.name', MAX_NAME_SIZE),
      qualifiedName: r.sized('certify.qualifiedName', MAX_NAME_SIZE),
    };
  }
  r.end();
  return attest;
}

/** TPML_PCR_SELECTION: a count, then per bank a hash algorithm and a bitmap of PCRs. */
function readPcrSelections(r: Reader): TpmPcrSelection[] {
  const count = r.u32('quote.pcrSelect count');
  // One selection per bank; a TPM has a handful.
  if (count > 16) r.fail(`quote.pcrSelect count is ${count}, more than the 16 banks allowed here`);
  const selections: TpmPcrSelection[] = [];
  for (let i = 0; i < count; i++) {
    const hash = r.hashAlg(`quote.pcrSelect[${i}].hash`);
    const size = r.u8(`quote.pcrSelect[${i}].sizeofSelect`);
    if (size > 32) r.fail(`quote.pcrSelect[${i}].sizeofSelect is ${size}, more than 32`);
    const bitmap = r.bytes(size, `quote.pcrSelect[${i}].pcrSelect`);
    const pcrs: number[] = [];
    // Octet n holds PCRs 8n to 8n+7, least significant bit first.
    bitmap.forEach((octet, n) => {
      for (let bit = 0; bit < 8; bit++) if (octet & (1 << bit)) pcrs.push(8 * n + bit);
    });
    selections.push({ hash, pcrs });
  }
  return selections;
}

// ---------------------------------------------------------------------------------------------
// TPMT_PUBLIC

/** TPMA_OBJECT bits, by name. */
export interface TpmObjectFlags {
  fixedTPM: boolean;
  stClear: boolean;
  fixedParent: boolean;
  sensitiveDataOrigin: boolean;
  userWithAuth: boolean;
  adminWithPolicy: boolean;
  noDA: boolean;
  encryptedDuplication: boolean;
  restricted: boolean;
  decrypt: boolean;
  sign: boolean;
}

const OBJECT_FLAG_BITS: Readonly<Record<keyof TpmObjectFlags, number>> = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
};

export interface TpmPublic {
  type: 'ecc' | 'rsa';
  nameAlg: TpmHashAlg;
  /** TPMA_OBJECT as the TPM holds it. */
  attributes: number;
  flags: TpmObjectFlags;
  /** The key, for node:crypto (exports as SPKI). */
  publicKey: KeyObject;
  /** The object's Name: the nameAlg's 2-byte id, then H_nameAlg(TPMT_PUBLIC). */
  name: Buffer;
  /** The TPMT_PUBLIC bytes the Name is computed over. */
  tpmtPublic: Buffer;
}

const TPM_ALG_RSA = 0x0001;
const TPM_ALG_ECC = 0x0023;
const TPM_ALG_KEYEDHASH = 0x0008;
const TPM_ALG_SYMCIPHER = 0x0025;

/** TPM_ECC_CURVE → JWK curve and coordinate size. */
const CURVES: ReadonlyMap<number, { crv: string; size: number }> = new Map([
  [0x0003, { crv: 'P-256', size: 32 }],
  [0x0004, { crv: 'P-384', size: 48 }],
]);

/**
 * Parse a public area: a TPM2B_PUBLIC (what `tpm2_create -u` and `tpm2_readpublic -o` write: a
 * 2-byte size, then the TPMT_PUBLIC) or a bare TPMT_PUBLIC. A TPM2B_PUBLIC is recognised by its size
 * matching the bytes that follow; a bare TPMT_PUBLIC starts with its type (0x0001 or 0x0023), which
 * as a size would leave too few bytes for any key.
 */
export function parseTpmPublic(buf: Uint8Array): TpmPublic {
  const bytes = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (bytes.length < 2) throw new TpmFormatError(`TPM2B_PUBLIC: ${bytes.length} bytes, too short for a size`);
  const first = bytes.readUInt16BE(0);
  if (first === bytes.length - 2) return parseTpmtPublic(bytes.subarray(2));
  if (first === TPM_ALG_RSA || first === TPM_ALG_ECC) return parseTpmtPublic(bytes);
  if (first === TPM_ALG_KEYEDHASH || first === TPM_ALG_SYMCIPHER)
    throw new TpmFormatError(
      `TPMT_PUBLIC: type is ${hex16(first)}, a symmetric object, not an RSA or ECC key`,
    );
  throw new TpmFormatError(
    `TPM2B_PUBLIC: size is ${first}, but ${bytes.length - 2} bytes follow (and it does not start like a TPMT_PUBLIC)`,
  );
}

function parseTpmtPublic(bytes: Buffer): TpmPublic {
  const r: Reader = new Reader(bytes, 'TPMT_PUBLIC');
  const typeId = r.u16('type');
  if (typeId !== TPM_ALG_RSA && typeId !== TPM_ALG_ECC)
    r.fail(`type is ${hex16(typeId)}, not RSA (0x0001) or ECC (0x0023)`);
  const nameAlg = r.hashAlg('nameAlg');
  const attributes = r.u32('objectAttributes');
  r.sized('authPolicy', MAX_DIGEST_SIZE);
  readSymmetric(r);
  let publicKey: KeyObject;
  if (typeId === TPM_ALG_RSA) {
    readScheme(r, 'parameters.scheme', RSA_SCHEMES);
    const keyBits = r.u16('parameters.keyBits');
    const exponent = r.u32('parameters.exponent');
    const modulus = r.sized('unique (RSA modulus)', MAX_RSA_BYTES);
    if (modulus.length === 0 || modulus[0] === 0)
      r.fail('unique (RSA modulus) is empty or has a leading zero byte');
    if (modulus.length * 8 !== keyBits)
      r.fail(`unique (RSA modulus) is ${modulus.length * 8} bits, but parameters.keyBits says ${keyBits}`);
    publicKey = rsaKey(r, modulus, exponent === 0 ? 65537 : exponent);
  } else {
    readScheme(r, 'parameters.scheme', ECC_SCHEMES);
    const curveId = r.u16('parameters.curveID');
    const curve = CURVES.get(curveId);
    if (!curve) r.fail(`parameters.curveID is ${hex16(curveId)}, not NIST P-256 (0x0003) or P-384 (0x0004)`);
    readScheme(r, 'parameters.kdf', KDF_SCHEMES);
    const x = r.sized('unique.x', MAX_ECC_BYTES);
    const y = r.sized('unique.y', MAX_ECC_BYTES);
    publicKey = eccKey(r, curve, x, y);
  }
  r.end();
  const flags = Object.fromEntries(
    Object.entries(OBJECT_FLAG_BITS).map(([flag, bit]) => [flag, (attributes & bit) !== 0]),
  ) as unknown as TpmObjectFlags;
  const tpmtPublic = Buffer.from(bytes);
  const algId = Buffer.alloc(2);
  algId.writeUInt16BE(ALG_OF_HASH.get(nameAlg)!);
  const name = Buffer.concat([algId, createHash(nameAlg).update(tpmtPublic).digest()]);
  return {
    type: typeId === TPM_ALG_RSA ? 'rsa' : 'ecc',
    nameAlg,
    attributes,
    flags,
    publicKey,
    name,
    tpmtPublic,
  };
}

/** TPMT_SYM_DEF_OBJECT: NULL, or a block cipher with key size and mode. */
function readSymmetric(r: Reader): void {
  const alg = r.u16('parameters.symmetric.algorithm');
  if (alg === TPM_ALG_NULL) return;
  // AES, SM4, Camellia: the only symmetric algorithms a key's public area may name.
  if (alg !== 0x0006 && alg !== 0x0013 && alg !== 0x0026)
    r.fail(`parameters.symmetric.algorithm is ${hex16(alg)}, not a block cipher or NULL`);
  r.u16('parameters.symmetric.keyBits');
  r.u16('parameters.symmetric.mode');
}

/** Scheme ids and the number of 16-bit detail fields after each (a hash algorithm, and for ECDAA a count). */
const RSA_SCHEMES: ReadonlyMap<number, number> = new Map([
  [0x0014, 1], // RSASSA
  [0x0015, 0], // RSAES
  [0x0016, 1], // RSAPSS
  [0x0017, 1], // OAEP
]);
const ECC_SCHEMES: ReadonlyMap<number, number> = new Map([
  [0x0018, 1], // ECDSA
  [0x0019, 1], // ECDH
  [0x001a, 2], // ECDAA
  [0x001b, 1], // SM2
  [0x001c, 1], // ECSCHNORR
  [0x001d, 1], // ECMQV
]);
const KDF_SCHEMES: ReadonlyMap<number, number> = new Map([
  [0x0007, 1], // MGF1
  [0x0020, 1], // KDF1_SP800_56A
  [0x0021, 1], // KDF2
  [0x0022, 1], // KDF1_SP800_108
]);

function readScheme(r: Reader, field: string, schemes: ReadonlyMap<number, number>): void {
  const scheme = r.u16(field);
  if (scheme === TPM_ALG_NULL) return;
  const details = schemes.get(scheme);
  if (details === undefined) r.fail(`${field} is ${hex16(scheme)}, not one this key type may have`);
  r.hashAlg(`${field}.hashAlg`);
  if (details === 2) r.u16(`${field}.count`);
}

function rsaKey(r: Reader, modulus: Buffer, exponent: number): KeyObject {
  const e = Buffer.alloc(4);
  e.writeUInt32BE(exponent);
  const firstNonZero = e.findIndex((b) => b !== 0);
  try {
    return createPublicKey({
      key: {
        kty: 'RSA',
        n: modulus.toString('base64url'),
        e: e.subarray(firstNonZero).toString('base64url'),
      },
      format: 'jwk',
    });
  } catch (err) {
    return r.fail(`the RSA key is not usable: ${(err as Error).message}`);
  }
}

function eccKey(r: Reader, curve: { crv: string; size: number }, x: Buffer, y: Buffer): KeyObject {
  const coordinate = (c: Buffer, field: string) => {
    if (c.length === 0 || c.length > curve.size)
      r.fail(`${field} is ${c.length} bytes, not up to the ${curve.size} of ${curve.crv}`);
    return Buffer.concat([Buffer.alloc(curve.size - c.length), c]).toString('base64url');
  };
  const jwk = { kty: 'EC', crv: curve.crv, x: coordinate(x, 'unique.x'), y: coordinate(y, 'unique.y') };
  try {
    return createPublicKey({ key: jwk, format: 'jwk' });
  } catch (err) {
    return r.fail(`unique is not a point on ${curve.crv}: ${(err as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// TPMT_SIGNATURE

export interface TpmSignature {
  alg: 'ecdsa' | 'rsassa' | 'rsapss';
  hash: TpmHashAlg;
  /**
   * For ECDSA, r and s as a DER SEQUENCE of two INTEGERs (what node:crypto and X.509 use); for RSA,
   * the signature bytes.
   */
  signature: Buffer;
}

const SIGNATURE_ALGS: ReadonlyMap<number, TpmSignature['alg']> = new Map([
  [0x0014, 'rsassa'],
  [0x0016, 'rsapss'],
  [0x0018, 'ecdsa'],
]);

/** Parse a TPMT_SIGNATURE (tpm2-tools' default "tss" signature format). */
export function parseTpmSignature(buf: Uint8Array): TpmSignature {
  const r: Reader = new Reader(buf, 'TPMT_SIGNATURE');
  const algId = r.u16('sigAlg');
  const alg = SIGNATURE_ALGS.get(algId);
  if (!alg) r.fail(`sigAlg is ${hex16(algId)}, not ECDSA (0x0018), RSASSA (0x0014) or RSAPSS (0x0016)`);
  const hash = r.hashAlg('signature.hash');
  let signature: Buffer;
  if (alg === 'ecdsa') {
    const half = (field: string) => {
      const v = r.sized(field, MAX_ECC_BYTES);
      if (v.length === 0) r.fail(`${field} is empty`);
      return v;
    };
    const rValue = half('signature.signatureR');
    const sValue = half('signature.signatureS');
    signature = der.sequence(der.unsignedInteger(rValue), der.unsignedInteger(sValue));
  } else {
    signature = r.sized('signature.sig', MAX_RSA_BYTES);
    if (signature.length === 0) r.fail('signature.sig is empty');
  }
  r.end();
  return { alg, hash, signature };
}

/**
 * Whether `sig` is a signature by `publicKey` over `message` (the whole TPMS_ATTEST, not its
 * digest), with the signature's own hash. False, not an exception, when the key is of another type.
 */
export function verifyTpmSignature(publicKey: KeyObject, message: Uint8Array, sig: TpmSignature): boolean {
  const keyType = publicKey.asymmetricKeyType;
  if (sig.alg === 'ecdsa') {
    if (keyType !== 'ec') return false;
    return verify(sig.hash, message, { key: publicKey, dsaEncoding: 'der' }, sig.signature);
  }
  if (keyType !== 'rsa') return false;
  return verify(
    sig.hash,
    message,
    sig.alg === 'rsassa'
      ? { key: publicKey, padding: constants.RSA_PKCS1_PADDING }
      : // TPMs differ in the PSS salt length they use (the hash's length, or the largest that fits).
        {
          key: publicKey,
          padding: constants.RSA_PKCS1_PSS_PADDING,
          saltLength: constants.RSA_PSS_SALTLEN_AUTO,
        },
    sig.signature,
  );
}

// ---------------------------------------------------------------------------------------------
// What a verifier computes

const PCR_VALUE = /^[0-9a-f]{64}$/;

/**
 * The pcrDigest TPM2_Quote reports for a selection of the SHA-256 bank: SHA-256 over the selected
 * PCRs' values concatenated in ascending PCR order (a selection is a bitmap: order and repetition in
 * `pcrs` do not matter).
 */
export function pcrDigest(values: ReadonlyMap<number, string>, pcrs: readonly number[]): Buffer {
  const hash = createHash('sha256');
  for (const pcr of [...new Set(pcrs)].sort((a, b) => a - b)) {
    const value = values.get(pcr);
    if (value === undefined) throw new RangeError(`there is no value for PCR ${pcr}`);
    if (!PCR_VALUE.test(value)) throw new TypeError(`the value of PCR ${pcr} is not 64 lowercase hex digits`);
    hash.update(Buffer.from(value, 'hex'));
  }
  return hash.digest();
}

const QUALIFYING_LABEL = 'rampart-attestation/1';

/**
 * The qualifying data (TPM2B_DATA, 32 bytes) a device passes to the TPM: SHA-256 over
 * `rampart-attestation/1`, a zero byte, the server's nonce, a zero byte, and SHA-256 of the DER
 * SubjectPublicKeyInfo of the key being attested. It ties the TPM's signature to this nonce (so it
 * cannot be replayed) and to that key (so it cannot be presented for another).
 */
export function attestationQualifyingData(nonce: string, keySpkiDer: Uint8Array): Buffer {
  return createHash('sha256')
    .update(Buffer.from(QUALIFYING_LABEL, 'utf8'))
    .update(Buffer.from([0]))
    .update(Buffer.from(nonce, 'utf8'))
    .update(Buffer.from([0]))
    .update(createHash('sha256').update(keySpkiDer).digest())
    .digest();
}
