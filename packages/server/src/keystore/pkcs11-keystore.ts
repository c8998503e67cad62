import {
  createHash,
  createPrivateKey,
  createPublicKey,
  randomBytes,
  timingSafeEqual,
  verify as cryptoVerify,
  type JsonWebKey,
  type KeyObject,
} from 'node:crypto';
import { existsSync, realpathSync } from 'node:fs';
import { endianness } from 'node:os';
import pkcs11js from 'pkcs11js';
import type { PKCS11, Template } from 'pkcs11js';
import { keyIdOf } from '@rampart/shared/audit';
import { RampartError } from '../errors.js';
import { isoNow } from '../time.js';
import {
  SIGNATURE_ALGORITHM,
  KEY_LABEL,
  assertImportable,
  assertKeyLabel,
  type KeyAlgorithm,
  type KeyInfo,
  type KeyStore,
  type PlatformKey,
} from './keystore.js';

/**
 * Platform keys on a PKCS#11 token (an HSM, a smart card, SoftHSM2), through `pkcs11js`.
 *
 * Every key is a private-key object and a public-key object with the same CKA_LABEL (the key's label)
 * and CKA_ID (SHA-1 of the label). The algorithm and exportability are read from the token's own
 * attributes, never from anything Rampart keeps next to them: exportable means CKA_EXTRACTABLE and not
 * CKA_SENSITIVE, which a token lets one turn off but never back on. The creation time is the one thing
 * PKCS#11 has no attribute for (CKA_START_DATE is only a date, and pkcs11js 2.1.7 cannot even read it
 * back), so it lives in a CKO_DATA object on the same token (CKA_APPLICATION "rampart-keystore", same
 * label, JSON value): the token stays the whole key store, with no sidecar file that could drift from it
 * or be lost in a backup of one but not the other.
 *
 * Signatures: the digest is computed here and the token signs it (CKM_ECDSA, whose raw r||s output is
 * re-encoded as DER; CKM_RSA_PKCS over a DigestInfo), so the output is byte-for-byte the format of the
 * file backend. Ed25519 uses CKM_EDDSA over the message (SoftHSM 2.6 supports it; tokens that do not
 * refuse to create such keys with a clear error).
 *
 * One R/W session per store. pkcs11js calls are synchronous and every operation (C_SignInit + C_Sign,
 * C_FindObjectsInit … C_FindObjectsFinal) runs within one tick, so concurrent async callers never
 * interleave on the session.
 */

type Handle = Buffer;

export interface Pkcs11Options {
  /** Path of the PKCS#11 module (shared library). */
  module: string;
  /** CKA label of the token holding the keys. */
  tokenLabel: string;
  /** The token's user PIN. */
  pin: string;
}

// Not defined by pkcs11js 2.1.7 (PKCS#11 3.0 values).
const CKK_EC_EDWARDS = 0x40;
const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
const CKM_EDDSA = 0x1057;

const METADATA_APPLICATION = 'rampart-keystore';

/** DER encodings of the curves' named-curve OIDs (CKA_EC_PARAMS). */
const CURVES = {
  'ec-p256': { params: Buffer.from('06082a8648ce3d030107', 'hex'), crv: 'P-256', size: 32 },
  'ec-p384': { params: Buffer.from('06052b81040022', 'hex'), crv: 'P-384', size: 48 },
} as const;
const ED25519_OID = Buffer.from('06032b6570', 'hex');
/** SoftHSM reports the curve of Ed25519 keys it made as PrintableString "edwards25519". */
const ED25519_NAME = Buffer.concat([Buffer.from([0x13, 12]), Buffer.from('edwards25519')]);

/** DER DigestInfo prefixes for CKM_RSA_PKCS (RFC 8017, section 9.2). */
const DIGEST_INFO: Record<string, Buffer> = {
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
};

// ---------------------------------------------------------------- encoding helpers

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function derOctetString(b: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x04]), derLength(b.length), b]);
}

function stripZeros(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

function derInteger(unsigned: Buffer): Buffer {
  let v = stripZeros(unsigned);
  if (v[0]! & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
  return Buffer.concat([Buffer.from([0x02]), derLength(v.length), v]);
}

/** PKCS#11 ECDSA signatures are r || s; Rampart's (and node:crypto's default) are DER ECDSA-Sig-Value. */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  const half = raw.length / 2;
  const body = Buffer.concat([derInteger(raw.subarray(0, half)), derInteger(raw.subarray(half))]);
  return Buffer.concat([Buffer.from([0x30]), derLength(body.length), body]);
}

/** CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 2.40); some tokens give the bare point. */
function ecPointOf(value: Buffer): Buffer {
  if (value.length > 2 && value[0] === 0x04) {
    let length = value[1]!;
    let offset = 2;
    if (length & 0x80) {
      const n = length & 0x7f;
      if (n >= 1 && n <= 4 && value.length > 2 + n) {
        length = value.readUIntBE(2, n);
        offset = 2 + n;
      } else {
        return value;
      }
    }
    if (offset + length === value.length) return value.subarray(offset);
  }
  return value;
}

/** Left-pad an unsigned big-endian integer to `size` bytes. */
function padTo(b: Buffer, size: number): Buffer {
  const v = stripZeros(b);
  return v.length >= size ? v : Buffer.concat([Buffer.alloc(size - v.length), v]);
}

const b64u = (b: Buffer) => stripZeros(b).toString('base64url');
const fromB64u = (s: string | undefined) => Buffer.from(s ?? '', 'base64url');

/** CK_ULONG attribute values come back in the host's byte order and width. */
function ulong(b: Buffer): number {
  if (b.length === 8) return Number(endianness() === 'LE' ? b.readBigUInt64LE(0) : b.readBigUInt64BE(0));
  if (b.length === 4) return endianness() === 'LE' ? b.readUInt32LE(0) : b.readUInt32BE(0);
  throw new RampartError('KEYSTORE', `unexpected CK_ULONG attribute of ${b.length} bytes`);
}

const bool = (b: Buffer) => b.length > 0 && b[0] !== 0;

// ---------------------------------------------------------------- errors

/** The CKR_* name of a pkcs11js error, if it is one. */
export function pkcs11Code(err: unknown): string | undefined {
  return err instanceof Error ? /CKR_[A-Z0-9_]+/.exec(err.message)?.[0] : undefined;
}

function failure(what: string, err: unknown): RampartError {
  if (err instanceof RampartError) return err;
  return new RampartError(
    'KEYSTORE',
    `PKCS#11 ${what} failed: ${pkcs11Code(err) ?? (err instanceof Error ? err.message : String(err))}`,
    [],
    { cause: err },
  );
}

// ---------------------------------------------------------------- loaded modules

/**
 * A PKCS#11 module is initialised once per process: a second C_Initialize fails with
 * CKR_CRYPTOKI_ALREADY_INITIALIZED, and C_Finalize (or C_Logout) ends every session of the process,
 * not just the caller's. So the stores of one process share the loaded module and its login per token,
 * counting references: the module is finalised when the last store closes (and re-initialised by the
 * next open, which is when SoftHSM2 re-reads SOFTHSM2_CONF and sees tokens created since), and a token
 * is logged out when the last store on it closes.
 */
interface LoadedModule {
  lib: PKCS11;
  /** Open stores; the module is initialised while this is above zero. */
  refs: number;
  /** False when other code in the process had initialised the module: then it is not finalised here. */
  owned: boolean;
  /** Per slot: the stores logged in, and a hash of their PIN (a second open must present the same one). */
  logins: Map<string, { refs: number; pinHash: Buffer; logout: boolean }>;
}

const modules = new Map<string, LoadedModule>();

function acquireModule(path: string): LoadedModule {
  const key = existsSync(path) ? realpathSync(path) : path;
  let loaded = modules.get(key);
  if (!loaded) {
    const lib = new pkcs11js.PKCS11();
    try {
      lib.load(path);
    } catch (err) {
      throw new RampartError(
        'KEYSTORE',
        `cannot load the PKCS#11 module ${path}: ${err instanceof Error ? err.message : String(err)}; install it (for SoftHSM2: apt-get install softhsm2) or set keystore.pkcs11.module`,
        [],
        { cause: err },
      );
    }
    loaded = { lib, refs: 0, owned: false, logins: new Map() };
    modules.set(key, loaded);
  }
  if (loaded.refs === 0) {
    try {
      loaded.lib.C_Initialize();
      loaded.owned = true;
    } catch (err) {
      if (pkcs11Code(err) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw failure('C_Initialize', err);
      loaded.owned = false;
    }
  }
  loaded.refs++;
  return loaded;
}

function releaseModule(loaded: LoadedModule): void {
  loaded.refs--;
  if (loaded.refs > 0) return;
  loaded.logins.clear();
  if (loaded.owned) {
    try {
      loaded.lib.C_Finalize();
    } catch {
      // Nothing useful to do: the process keeps the library loaded either way.
    }
  }
}

function tokenLabelOf(label: string): string {
  return label.replace(/[\s\0]+$/, '');
}

function findSlot(lib: PKCS11, module: string, tokenLabel: string): Handle {
  const present: string[] = [];
  const matching: Handle[] = [];
  for (const slot of lib.C_GetSlotList(true)) {
    const info = lib.C_GetTokenInfo(slot);
    if (!(info.flags & pkcs11js.CKF_TOKEN_INITIALIZED)) continue;
    const label = tokenLabelOf(info.label);
    present.push(label);
    if (label === tokenLabel) matching.push(slot);
  }
  if (matching.length === 1) return matching[0]!;
  if (matching.length > 1) {
    throw new RampartError(
      'KEYSTORE',
      `${matching.length} tokens of PKCS#11 module ${module} are labelled "${tokenLabel}"; give each token a distinct label`,
    );
  }
  throw new RampartError(
    'KEYSTORE',
    `no token labelled "${tokenLabel}" in PKCS#11 module ${module}; tokens present: ${
      present.length ? present.map((l) => `"${l}"`).join(', ') : '(none)'
    }. Set keystore.pkcs11.tokenLabel, or create the token (SoftHSM2: softhsm2-util --init-token --free --label ${tokenLabel})`,
  );
}

function wrongPin(tokenLabel: string): RampartError {
  return new RampartError(
    'KEYSTORE',
    `the PIN does not log in to PKCS#11 token "${tokenLabel}": set RAMPART_KEYSTORE_PIN (or keystore.pkcs11.pinFile) to the token's user PIN`,
  );
}

function login(loaded: LoadedModule, slot: Handle, session: Handle, tokenLabel: string, pin: string): string {
  const slotKey = slot.toString('hex');
  const pinHash = createHash('sha256').update(pin).digest();
  const existing = loaded.logins.get(slotKey);
  if (existing) {
    // The token is already logged in for this process, so C_Login cannot check the PIN: compare it.
    if (!timingSafeEqual(existing.pinHash, pinHash)) throw wrongPin(tokenLabel);
    existing.refs++;
    return slotKey;
  }
  let logout = true;
  try {
    loaded.lib.C_Login(session, pkcs11js.CKU_USER, pin);
  } catch (err) {
    const code = pkcs11Code(err);
    if (code === 'CKR_USER_ALREADY_LOGGED_IN') {
      logout = false; // by other code in this process; leave its login alone
    } else if (code === 'CKR_PIN_INCORRECT' || code === 'CKR_PIN_LEN_RANGE') {
      throw wrongPin(tokenLabel);
    } else if (code === 'CKR_PIN_LOCKED') {
      throw new RampartError(
        'KEYSTORE',
        `the user PIN of PKCS#11 token "${tokenLabel}" is locked after too many wrong attempts; unlock it with the token's SO PIN`,
      );
    } else if (code === 'CKR_USER_PIN_NOT_INITIALIZED') {
      throw new RampartError(
        'KEYSTORE',
        `PKCS#11 token "${tokenLabel}" has no user PIN yet; initialise it (SoftHSM2: softhsm2-util --init-token sets both PINs)`,
      );
    } else {
      throw failure('C_Login', err);
    }
  }
  loaded.logins.set(slotKey, { refs: 1, pinHash, logout });
  return slotKey;
}

// ---------------------------------------------------------------- the store

class Pkcs11PlatformKey implements PlatformKey {
  readonly keyId: string;
  readonly signatureAlgorithm: string;
  constructor(
    readonly label: string,
    readonly algorithm: KeyAlgorithm,
    readonly publicKey: KeyObject,
    private readonly signer: (data: Uint8Array) => Buffer,
  ) {
    this.keyId = keyIdOf(publicKey);
    this.signatureAlgorithm = SIGNATURE_ALGORITHM[algorithm].name;
  }

  async sign(data: Uint8Array): Promise<Buffer> {
    return this.signer(data);
  }
}

export class Pkcs11KeyStore implements KeyStore {
  readonly backend = 'pkcs11';
  private readonly cache = new Map<string, Pkcs11PlatformKey>();
  private closed = false;

  private constructor(
    private readonly loaded: LoadedModule,
    private readonly slotKey: string,
    private readonly sessionHandle: Handle,
    readonly tokenLabel: string,
  ) {}

  /** Load the module, find the token by label, open a R/W session and log in as the user. */
  static async open(options: Pkcs11Options): Promise<Pkcs11KeyStore> {
    const loaded = acquireModule(options.module);
    let session: Handle | null = null;
    try {
      const slot = findSlot(loaded.lib, options.module, options.tokenLabel);
      session = loaded.lib.C_OpenSession(slot, pkcs11js.CKF_RW_SESSION | pkcs11js.CKF_SERIAL_SESSION);
      const slotKey = login(loaded, slot, session, options.tokenLabel, options.pin);
      return new Pkcs11KeyStore(loaded, slotKey, session, options.tokenLabel);
    } catch (err) {
      if (session) {
        try {
          loaded.lib.C_CloseSession(session);
        } catch {
          // already gone
        }
      }
      releaseModule(loaded);
      throw failure('opening the token', err);
    }
  }

  /** Log out (when this is the last store on the token), close the session, finalise the module (when last). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cache.clear();
    const { lib } = this.loaded;
    const entry = this.loaded.logins.get(this.slotKey);
    if (entry && --entry.refs === 0) {
      this.loaded.logins.delete(this.slotKey);
      if (entry.logout) {
        try {
          lib.C_Logout(this.sessionHandle);
        } catch {
          // the session may already be gone with the token
        }
      }
    }
    try {
      lib.C_CloseSession(this.sessionHandle);
    } catch {
      // as above
    }
    releaseModule(this.loaded);
  }

  private get lib(): PKCS11 {
    return this.loaded.lib;
  }

  private session(): Handle {
    if (this.closed) throw new RampartError('KEYSTORE', 'the PKCS#11 key store is closed');
    return this.sessionHandle;
  }

  // -------------------------------------------------------------- object access

  private find(template: Template): Handle[] {
    const s = this.session();
    this.lib.C_FindObjectsInit(s, template);
    try {
      const found: Handle[] = [];
      for (;;) {
        const batch = this.lib.C_FindObjects(s, 100);
        if (batch.length === 0) return found;
        found.push(...batch);
      }
    } finally {
      this.lib.C_FindObjectsFinal(s);
    }
  }

  /** Attribute values in the order asked for; throws when one is missing or sensitive. */
  private attrs(handle: Handle, types: number[]): Buffer[] {
    const result = this.lib.C_GetAttributeValue(
      this.session(),
      handle,
      types.map((type) => ({ type })),
    );
    return types.map((type) => result.find((a) => a.type === type)?.value ?? Buffer.alloc(0));
  }

  /** One attribute, or null when the object does not have it. */
  private attr(handle: Handle, type: number): Buffer | null {
    try {
      return this.attrs(handle, [type])[0]!;
    } catch (err) {
      if (pkcs11Code(err) === 'CKR_ATTRIBUTE_TYPE_INVALID') return null;
      throw err;
    }
  }

  /** The single object of `cls` labelled `label`, or null. */
  private findOne(cls: number, label: string, extra: Template = []): Handle | null {
    const found = this.find([
      { type: pkcs11js.CKA_CLASS, value: cls },
      { type: pkcs11js.CKA_LABEL, value: label },
      ...extra,
    ]);
    if (found.length > 1) {
      const what = cls === pkcs11js.CKO_PRIVATE_KEY ? 'private keys' : 'public keys';
      throw new RampartError(
        'KEYSTORE',
        `PKCS#11 token "${this.tokenLabel}" holds ${found.length} ${what} labelled "${label}"; remove all but one`,
      );
    }
    return found[0] ?? null;
  }

  private metadataObjects(label: string): Handle[] {
    return this.find([
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_APPLICATION, value: METADATA_APPLICATION },
    ]);
  }

  private createdAtOf(label: string): string {
    for (const handle of this.metadataObjects(label)) {
      const value = this.attr(handle, pkcs11js.CKA_VALUE);
      try {
        const meta = JSON.parse(value?.toString('utf8') ?? '') as { createdAt?: unknown };
        if (typeof meta.createdAt === 'string') return meta.createdAt;
      } catch {
        // not ours after all; keep looking
      }
    }
    // A key made by other tooling: PKCS#11 has no creation time Rampart could read.
    return '';
  }

  /** The algorithm of a private key from its own attributes, or null for one Rampart does not use. */
  private algorithmOfObject(handle: Handle): KeyAlgorithm | null {
    const keyType = ulong(this.attrs(handle, [pkcs11js.CKA_KEY_TYPE])[0]!);
    if (keyType === pkcs11js.CKK_EC) {
      const params = this.attr(handle, pkcs11js.CKA_EC_PARAMS);
      if (params?.equals(CURVES['ec-p256'].params)) return 'ec-p256';
      if (params?.equals(CURVES['ec-p384'].params)) return 'ec-p384';
      return null;
    }
    if (keyType === CKK_EC_EDWARDS) {
      const params = this.attr(handle, pkcs11js.CKA_EC_PARAMS);
      return params?.equals(ED25519_OID) || params?.equals(ED25519_NAME) ? 'ed25519' : null;
    }
    if (keyType === pkcs11js.CKK_RSA) {
      const modulus = this.attr(handle, pkcs11js.CKA_MODULUS);
      const bits = modulus ? stripZeros(modulus).length * 8 : 0;
      return bits === 2048 ? 'rsa-2048' : bits === 3072 ? 'rsa-3072' : null;
    }
    return null;
  }

  private publicKeyOf(label: string, privateHandle: Handle, algorithm: KeyAlgorithm): KeyObject {
    const pub = this.findOne(pkcs11js.CKO_PUBLIC_KEY, label);
    if (algorithm === 'rsa-2048' || algorithm === 'rsa-3072') {
      // RSA private-key objects carry the public components too: use them when the public half is missing.
      const [n, e] = this.attrs(pub ?? privateHandle, [pkcs11js.CKA_MODULUS, pkcs11js.CKA_PUBLIC_EXPONENT]);
      return createPublicKey({ key: { kty: 'RSA', n: b64u(n!), e: b64u(e!) }, format: 'jwk' });
    }
    if (!pub) {
      throw new RampartError(
        'KEYSTORE',
        `PKCS#11 token "${this.tokenLabel}" has no public key labelled "${label}" for its private key`,
      );
    }
    const point = ecPointOf(this.attrs(pub, [pkcs11js.CKA_EC_POINT])[0]!);
    if (algorithm === 'ed25519') {
      return createPublicKey({
        key: { kty: 'OKP', crv: 'Ed25519', x: point.toString('base64url') },
        format: 'jwk',
      });
    }
    const { crv, size } = CURVES[algorithm];
    if (point.length !== 1 + 2 * size || point[0] !== 0x04) {
      throw new RampartError('KEYSTORE', `public key "${label}" is not an uncompressed ${crv} point`);
    }
    return createPublicKey({
      key: {
        kty: 'EC',
        crv,
        x: point.subarray(1, 1 + size).toString('base64url'),
        y: point.subarray(1 + size).toString('base64url'),
      },
      format: 'jwk',
    });
  }

  private exportableOf(handle: Handle): boolean {
    const [extractable, sensitive] = this.attrs(handle, [pkcs11js.CKA_EXTRACTABLE, pkcs11js.CKA_SENSITIVE]);
    return bool(extractable!) && !bool(sensitive!);
  }

  // -------------------------------------------------------------- signing

  private signWith(handle: Handle, algorithm: KeyAlgorithm, data: Uint8Array): Buffer {
    const s = this.session();
    const { digest } = SIGNATURE_ALGORITHM[algorithm];
    try {
      if (algorithm === 'ec-p256' || algorithm === 'ec-p384') {
        const hash = createHash(digest!).update(data).digest();
        this.lib.C_SignInit(s, { mechanism: pkcs11js.CKM_ECDSA }, handle);
        const raw = this.lib.C_Sign(s, hash, Buffer.alloc(2 * CURVES[algorithm].size));
        return ecdsaRawToDer(raw);
      }
      if (algorithm === 'ed25519') {
        this.lib.C_SignInit(s, { mechanism: CKM_EDDSA }, handle);
        return Buffer.from(this.lib.C_Sign(s, Buffer.from(data), Buffer.alloc(64)));
      }
      const hash = createHash(digest!).update(data).digest();
      this.lib.C_SignInit(s, { mechanism: pkcs11js.CKM_RSA_PKCS }, handle);
      const size = algorithm === 'rsa-2048' ? 256 : 384;
      return Buffer.from(
        this.lib.C_Sign(s, Buffer.concat([DIGEST_INFO[digest!]!, hash]), Buffer.alloc(size)),
      );
    } catch (err) {
      throw failure(`signing (C_Sign, ${algorithm})`, err);
    }
  }

  /**
   * Build the key for a private-key object, checking that the public key found for it is its own
   * (a public object can be planted on a token without the user PIN; the file store makes the same check).
   */
  private keyOf(label: string, handle: Handle): Pkcs11PlatformKey {
    const algorithm = this.algorithmOfObject(handle);
    if (!algorithm) {
      throw new RampartError(
        'KEYSTORE',
        `key "${label}" on PKCS#11 token "${this.tokenLabel}" is of a type the key store does not use`,
      );
    }
    const publicKey = this.publicKeyOf(label, handle, algorithm);
    const challenge = randomBytes(32);
    const signature = this.signWith(handle, algorithm, challenge);
    if (!cryptoVerify(SIGNATURE_ALGORITHM[algorithm].digest, challenge, publicKey, signature)) {
      throw new RampartError(
        'KEYSTORE',
        `key "${label}" on PKCS#11 token "${this.tokenLabel}": the public key does not belong to the private key`,
      );
    }
    return new Pkcs11PlatformKey(label, algorithm, publicKey, (data) =>
      this.signWith(handle, algorithm, data),
    );
  }

  // -------------------------------------------------------------- KeyStore

  async get(label: string): Promise<PlatformKey | null> {
    assertKeyLabel(label);
    const cached = this.cache.get(label);
    if (cached) return cached;
    try {
      const handle = this.findOne(pkcs11js.CKO_PRIVATE_KEY, label);
      if (!handle) return null;
      const key = this.keyOf(label, handle);
      this.cache.set(label, key);
      return key;
    } catch (err) {
      throw failure(`reading key "${label}"`, err);
    }
  }

  async list(): Promise<KeyInfo[]> {
    try {
      const infos: KeyInfo[] = [];
      for (const handle of this.find([{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }])) {
        const label = this.attr(handle, pkcs11js.CKA_LABEL)?.toString('utf8') ?? '';
        // Keys other tools keep on the same token, under labels or algorithms Rampart does not use.
        if (!KEY_LABEL.test(label)) continue;
        const algorithm = this.algorithmOfObject(handle);
        if (!algorithm) continue;
        infos.push({
          label,
          algorithm,
          keyId: keyIdOf(this.publicKeyOf(label, handle, algorithm)),
          createdAt: this.createdAtOf(label),
          exportable: this.exportableOf(handle),
        });
      }
      return infos.sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
    } catch (err) {
      throw failure('listing keys', err);
    }
  }

  async create(
    label: string,
    algorithm: KeyAlgorithm,
    options: { exportable?: boolean } = {},
  ): Promise<PlatformKey> {
    assertKeyLabel(label);
    const exportable = options.exportable ?? false;
    return this.add(label, () => {
      const s = this.session();
      const common = this.commonTemplates(label, exportable);
      let mechanism: number;
      let pubExtra: Template;
      if (algorithm === 'ec-p256' || algorithm === 'ec-p384') {
        mechanism = pkcs11js.CKM_EC_KEY_PAIR_GEN;
        pubExtra = [{ type: pkcs11js.CKA_EC_PARAMS, value: CURVES[algorithm].params }];
      } else if (algorithm === 'ed25519') {
        mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
        pubExtra = [{ type: pkcs11js.CKA_EC_PARAMS, value: ED25519_OID }];
      } else {
        mechanism = pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN;
        pubExtra = [
          { type: pkcs11js.CKA_MODULUS_BITS, value: algorithm === 'rsa-2048' ? 2048 : 3072 },
          { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([0x01, 0x00, 0x01]) },
        ];
      }
      try {
        this.lib.C_GenerateKeyPair(s, { mechanism }, [...common.public, ...pubExtra], common.private);
      } catch (err) {
        const code = pkcs11Code(err);
        if (
          code === 'CKR_MECHANISM_INVALID' ||
          code === 'CKR_MECHANISM_PARAM_INVALID' ||
          code === 'CKR_DOMAIN_PARAMS_INVALID' ||
          code === 'CKR_CURVE_NOT_SUPPORTED'
        ) {
          throw new RampartError(
            'KEYSTORE',
            `PKCS#11 token "${this.tokenLabel}" cannot generate ${algorithm} keys (${code}); choose another algorithm or token`,
            [],
            { cause: err },
          );
        }
        throw failure(`generating a ${algorithm} key (C_GenerateKeyPair)`, err);
      }
    });
  }

  async importPrivateKey(
    label: string,
    algorithm: KeyAlgorithm,
    privateKey: KeyObject,
    options: { exportable?: boolean } = {},
  ): Promise<PlatformKey> {
    assertKeyLabel(label);
    assertImportable(privateKey, algorithm);
    const exportable = options.exportable ?? false;
    const jwk = privateKey.export({ format: 'jwk' });
    return this.add(label, () => {
      const s = this.session();
      const common = this.commonTemplates(label, exportable);
      let keyType: number;
      let pub: Template;
      let priv: Template;
      if (algorithm === 'ec-p256' || algorithm === 'ec-p384') {
        const { params, size } = CURVES[algorithm];
        keyType = pkcs11js.CKK_EC;
        const point = Buffer.concat([
          Buffer.from([0x04]),
          padTo(fromB64u(jwk.x), size),
          padTo(fromB64u(jwk.y), size),
        ]);
        pub = [
          { type: pkcs11js.CKA_EC_PARAMS, value: params },
          { type: pkcs11js.CKA_EC_POINT, value: derOctetString(point) },
        ];
        priv = [
          { type: pkcs11js.CKA_EC_PARAMS, value: params },
          { type: pkcs11js.CKA_VALUE, value: padTo(fromB64u(jwk.d), size) },
        ];
      } else if (algorithm === 'ed25519') {
        keyType = CKK_EC_EDWARDS;
        pub = [
          { type: pkcs11js.CKA_EC_PARAMS, value: ED25519_OID },
          { type: pkcs11js.CKA_EC_POINT, value: derOctetString(fromB64u(jwk.x)) },
        ];
        priv = [
          { type: pkcs11js.CKA_EC_PARAMS, value: ED25519_OID },
          { type: pkcs11js.CKA_VALUE, value: fromB64u(jwk.d) },
        ];
      } else {
        keyType = pkcs11js.CKK_RSA;
        const n = { type: pkcs11js.CKA_MODULUS, value: fromB64u(jwk.n) };
        const e = { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: fromB64u(jwk.e) };
        pub = [n, e];
        priv = [
          n,
          e,
          { type: pkcs11js.CKA_PRIVATE_EXPONENT, value: fromB64u(jwk.d) },
          { type: pkcs11js.CKA_PRIME_1, value: fromB64u(jwk.p) },
          { type: pkcs11js.CKA_PRIME_2, value: fromB64u(jwk.q) },
          { type: pkcs11js.CKA_EXPONENT_1, value: fromB64u(jwk.dp) },
          { type: pkcs11js.CKA_EXPONENT_2, value: fromB64u(jwk.dq) },
          { type: pkcs11js.CKA_COEFFICIENT, value: fromB64u(jwk.qi) },
        ];
      }
      const typeOf = (cls: number): Template => [
        { type: pkcs11js.CKA_CLASS, value: cls },
        { type: pkcs11js.CKA_KEY_TYPE, value: keyType },
      ];
      let pubHandle: Handle | null = null;
      try {
        pubHandle = this.lib.C_CreateObject(s, [
          ...typeOf(pkcs11js.CKO_PUBLIC_KEY),
          ...common.public,
          ...pub,
        ]);
        this.lib.C_CreateObject(s, [...typeOf(pkcs11js.CKO_PRIVATE_KEY), ...common.private, ...priv]);
      } catch (err) {
        if (pubHandle) this.destroyQuietly(pubHandle);
        throw failure(`importing a ${algorithm} key (C_CreateObject)`, err);
      }
    });
  }

  async exportPrivateKey(label: string): Promise<KeyObject> {
    assertKeyLabel(label);
    let handle: Handle | null;
    let exportable: boolean;
    try {
      handle = this.findOne(pkcs11js.CKO_PRIVATE_KEY, label);
      exportable = handle ? this.exportableOf(handle) : false;
    } catch (err) {
      throw failure(`reading key "${label}"`, err);
    }
    if (!handle) throw new RampartError('KEYSTORE', `no key labelled "${label}"`);
    if (!exportable) throw new RampartError('KEYSTORE', `key "${label}" is not exportable`);
    try {
      const key = (await this.get(label))!;
      const pub = key.publicKey.export({ format: 'jwk' });
      let jwk: JsonWebKey;
      if (key.algorithm === 'ec-p256' || key.algorithm === 'ec-p384') {
        const [d] = this.attrs(handle, [pkcs11js.CKA_VALUE]);
        jwk = { ...pub, d: padTo(d!, CURVES[key.algorithm].size).toString('base64url') };
      } else if (key.algorithm === 'ed25519') {
        const [d] = this.attrs(handle, [pkcs11js.CKA_VALUE]);
        jwk = { ...pub, d: d!.toString('base64url') };
      } else {
        const [d, p, q, dp, dq, qi] = this.attrs(handle, [
          pkcs11js.CKA_PRIVATE_EXPONENT,
          pkcs11js.CKA_PRIME_1,
          pkcs11js.CKA_PRIME_2,
          pkcs11js.CKA_EXPONENT_1,
          pkcs11js.CKA_EXPONENT_2,
          pkcs11js.CKA_COEFFICIENT,
        ]);
        jwk = { ...pub, d: b64u(d!), p: b64u(p!), q: b64u(q!), dp: b64u(dp!), dq: b64u(dq!), qi: b64u(qi!) };
      }
      const privateKey = createPrivateKey({ key: jwk, format: 'jwk' });
      if (keyIdOf(createPublicKey(privateKey)) !== key.keyId) {
        throw new RampartError(
          'KEYSTORE',
          `key "${label}": the exported private key does not match its public key`,
        );
      }
      return privateKey;
    } catch (err) {
      throw failure(`exporting key "${label}"`, err);
    }
  }

  async delete(label: string): Promise<boolean> {
    assertKeyLabel(label);
    this.cache.delete(label);
    try {
      const priv = this.findOne(pkcs11js.CKO_PRIVATE_KEY, label);
      // The private key first: once it is gone the key is gone, whatever happens to the rest.
      if (priv) this.lib.C_DestroyObject(this.session(), priv);
      for (const handle of [
        ...this.find([
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
          { type: pkcs11js.CKA_LABEL, value: label },
        ]),
        ...this.metadataObjects(label),
      ]) {
        this.lib.C_DestroyObject(this.session(), handle);
      }
      return priv !== null;
    } catch (err) {
      throw failure(`deleting key "${label}"`, err);
    }
  }

  // -------------------------------------------------------------- creating objects

  private commonTemplates(label: string, exportable: boolean): { public: Template; private: Template } {
    const id = createHash('sha1').update(label).digest();
    return {
      public: [
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_PRIVATE, value: false },
        { type: pkcs11js.CKA_VERIFY, value: true },
        { type: pkcs11js.CKA_LABEL, value: label },
        { type: pkcs11js.CKA_ID, value: id },
      ],
      private: [
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_PRIVATE, value: true },
        { type: pkcs11js.CKA_SIGN, value: true },
        { type: pkcs11js.CKA_SENSITIVE, value: !exportable },
        { type: pkcs11js.CKA_EXTRACTABLE, value: exportable },
        { type: pkcs11js.CKA_LABEL, value: label },
        { type: pkcs11js.CKA_ID, value: id },
      ],
    };
  }

  /**
   * Add a key: refuse a taken label, write the metadata object, then the key objects (`make`), so that
   * an interruption leaves at most a metadata object without a key, which the next attempt replaces.
   */
  private add(label: string, make: () => void): Promise<PlatformKey> {
    const s = this.session();
    let meta: Handle | null = null;
    try {
      if (this.findOne(pkcs11js.CKO_PRIVATE_KEY, label)) {
        throw new RampartError('KEYSTORE', `a key labelled "${label}" already exists`);
      }
      for (const stale of this.metadataObjects(label)) this.lib.C_DestroyObject(s, stale);
      for (const stale of this.find([
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
        { type: pkcs11js.CKA_LABEL, value: label },
      ])) {
        this.lib.C_DestroyObject(s, stale);
      }
      meta = this.lib.C_CreateObject(s, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_PRIVATE, value: true },
        { type: pkcs11js.CKA_LABEL, value: label },
        { type: pkcs11js.CKA_APPLICATION, value: METADATA_APPLICATION },
        { type: pkcs11js.CKA_VALUE, value: Buffer.from(JSON.stringify({ version: 1, createdAt: isoNow() })) },
      ]);
      make();
    } catch (err) {
      if (meta) this.destroyQuietly(meta);
      throw failure(`adding key "${label}"`, err);
    }
    this.cache.delete(label);
    return this.get(label).then((key) => {
      if (!key)
        throw new RampartError('KEYSTORE', `key "${label}" was added but cannot be found on the token`);
      return key;
    });
  }

  private destroyQuietly(handle: Handle): void {
    try {
      this.lib.C_DestroyObject(this.session(), handle);
    } catch {
      // best effort while reporting the original failure
    }
  }
}
