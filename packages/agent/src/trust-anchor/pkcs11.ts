import { createHash, createPublicKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { existsSync, realpathSync } from 'node:fs';
import { endianness } from 'node:os';
import type * as Pkcs11js from 'pkcs11js';
import type { PKCS11, Template } from 'pkcs11js';
import { der, readDer } from '@rampart/shared/pki';
import { AgentError } from '../errors.js';
import type { OpensslKey } from '../tls/openssl-tunnel.js';
import { openEcdhEsJwe } from './jwe-ecdh.js';
import type { TrustAnchor } from './trust-anchor.js';

export interface Pkcs11TrustAnchorOptions {
  /** Path of the token's PKCS#11 library, e.g. `/usr/lib/softhsm/libsofthsm2.so`. */
  module: string;
  /** Label of the token that holds the identity key. */
  tokenLabel: string;
  /** The token's user PIN. */
  pin: string;
  /** CKA_LABEL of the identity key pair. Default `rampart-device`. */
  keyLabel?: string;
}

export const DEFAULT_PKCS11_KEY_LABEL = 'rampart-device';

/** The pkcs11js binding: its PKCS11 class and the PKCS#11 constants. */
type Binding = typeof Pkcs11js;
type Handle = Buffer;

/** DER of the named curve P-256 (1.2.840.10045.3.1.7), as in CKA_EC_PARAMS and the SPKI. */
const P256_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');
/** DER of id-ecPublicKey (1.2.840.10045.2.1). */
const EC_PUBLIC_KEY_OID = Buffer.from('06072a8648ce3d0201', 'hex');

/** Return codes after which the session is gone and a new one may succeed. */
const SESSION_LOST = new Set([
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SESSION_CLOSED',
  'CKR_DEVICE_REMOVED',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_CRYPTOKI_NOT_INITIALIZED',
]);

/** The CKR_* name in a pkcs11js error, if it carries one. */
function returnCode(err: unknown): string | undefined {
  return err instanceof Error ? /CKR_[A-Z0-9_]+/.exec(err.message)?.[0] : undefined;
}

function reason(err: unknown): string {
  return returnCode(err) ?? (err instanceof Error ? err.message : String(err));
}

// ------------------------------------------------------------------------------------------------
// The binding and the modules it loads, shared by every anchor of the process.

let binding: Promise<Binding> | null = null;

/** pkcs11js is loaded on first use, so that agents on other trust anchors never load the native addon. */
function loadBinding(): Promise<Binding> {
  binding ??= import('pkcs11js').then(
    (m) => m.default as Binding,
    (err: unknown) => {
      binding = null;
      throw new AgentError(
        'TRUST_ANCHOR',
        `the PKCS#11 binding (pkcs11js) cannot be loaded: ${reason(err)}; reinstall the agent where a C++ compiler is available so that it builds`,
        { cause: err },
      );
    },
  );
  return binding;
}

/**
 * A PKCS#11 library is initialised once per process, and C_Finalize and C_Logout act on all of the
 * process's sessions. So anchors share the loaded library and count their uses: it is initialised
 * by the first anchor that opens a session and finalised when the last one closes, and a token is
 * logged in by the first anchor on it and out when the last one closes.
 */
interface LoadedLibrary {
  api: Binding;
  lib: PKCS11;
  users: number;
  /** False when other code of the process had initialised it: then it is not finalised here. */
  initializedHere: boolean;
  /** Per slot: the anchors logged in and a digest of their PIN (C_Login cannot check it twice). */
  logins: Map<string, { users: number; pinDigest: Buffer; loggedInHere: boolean }>;
}

const libraries = new Map<string, LoadedLibrary>();

function acquireLibrary(api: Binding, path: string): LoadedLibrary {
  const key = existsSync(path) ? realpathSync(path) : path;
  let loaded = libraries.get(key);
  if (!loaded) {
    const lib = new api.PKCS11();
    try {
      lib.load(path);
    } catch (err) {
      throw new AgentError(
        'TRUST_ANCHOR',
        `cannot load the PKCS#11 library ${path}: ${reason(err)}; install the token's PKCS#11 module, or set pkcs11.module (RAMPART_AGENT_PKCS11_MODULE) to its path`,
        { cause: err },
      );
    }
    loaded = { api, lib, users: 0, initializedHere: false, logins: new Map() };
    libraries.set(key, loaded);
  }
  if (loaded.users === 0) {
    try {
      loaded.lib.C_Initialize();
      loaded.initializedHere = true;
    } catch (err) {
      if (returnCode(err) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED')
        throw new AgentError(
          'TRUST_ANCHOR',
          `cannot initialise the PKCS#11 library ${path}: ${reason(err)}`,
          {
            cause: err,
          },
        );
      loaded.initializedHere = false;
    }
  }
  loaded.users++;
  return loaded;
}

function releaseLibrary(loaded: LoadedLibrary): void {
  if (--loaded.users > 0) return;
  loaded.logins.clear();
  if (!loaded.initializedHere) return;
  try {
    loaded.lib.C_Finalize();
  } catch {
    // Nothing left to do: the library stays loaded either way.
  }
}

// ------------------------------------------------------------------------------------------------
// Encoding

/** CK_ULONG attribute values come in the host's width and byte order. */
function ulongOf(value: Buffer): number {
  const le = endianness() === 'LE';
  if (value.length === 8) return Number(le ? value.readBigUInt64LE(0) : value.readBigUInt64BE(0));
  if (value.length === 4) return le ? value.readUInt32LE(0) : value.readUInt32BE(0);
  throw new AgentError('TRUST_ANCHOR', `the PKCS#11 token returned a ${value.length}-byte CK_ULONG`);
}

const boolOf = (value: Buffer) => value.length > 0 && value[0] !== 0;

/**
 * The uncompressed point in CKA_EC_POINT: a DER OCTET STRING around it (PKCS#11 2.40), or, from
 * some tokens, the bare point (65 bytes starting with 04, which a wrapped point never is).
 */
function ecPointOf(value: Buffer): Buffer {
  if (value.length === 65 && value[0] === 0x04) return value;
  try {
    const el = readDer(value);
    if (el.tag === 0x04 && el.end === value.length) {
      const point = value.subarray(el.start, el.end);
      if (point.length === 65 && point[0] === 0x04) return point;
    }
  } catch {
    // reported below
  }
  throw new AgentError(
    'TRUST_ANCHOR',
    'the PKCS#11 token returned a CKA_EC_POINT that is not an uncompressed P-256 point',
  );
}

/** PKCS#11 ECDSA signatures are r || s; X.509 and node:crypto use the DER ECDSA-Sig-Value. */
export function ecdsaSignatureToDer(raw: Uint8Array): Buffer {
  if (raw.length === 0 || raw.length % 2 !== 0)
    throw new AgentError('TRUST_ANCHOR', `the PKCS#11 token returned a ${raw.length}-byte ECDSA signature`);
  const half = raw.length / 2;
  return der.sequence(der.unsignedInteger(raw.subarray(0, half)), der.unsignedInteger(raw.subarray(half)));
}

/** A PKCS#11 URI attribute value (RFC 7512): everything but unreserved characters percent-encoded. */
function pkcs11UriValue(value: string): string {
  return [...Buffer.from(value, 'utf8')]
    .map((b) =>
      /[A-Za-z0-9\-._~]/.test(String.fromCharCode(b))
        ? String.fromCharCode(b)
        : `%${b.toString(16).padStart(2, '0').toUpperCase()}`,
    )
    .join('');
}

// ------------------------------------------------------------------------------------------------
// The anchor

/** An open session on the token, logged in as the user. */
interface TokenSession {
  library: LoadedLibrary;
  slotKey: string;
  handle: Handle;
}

/**
 * A trust anchor on a PKCS#11 token (a secure element, a smart card, an HSM; SoftHSM2 in tests),
 * through pkcs11js. The identity key is an ECDSA P-256 key pair generated inside the token with
 * CKA_SENSITIVE and without CKA_EXTRACTABLE: the private key never leaves it. The token holds
 * everything (the key pair, found again by its CKA_LABEL); the agent keeps no file for it.
 *
 * Signing hashes in Node (SHA-256) and has the token sign the digest with CKM_ECDSA, which every
 * token with EC keys has, and turns the token's r || s into DER.
 *
 * The private key may also derive (CKA_DERIVE), for the content keys of encrypted releases: the
 * ECDH with the sender's ephemeral key is CKM_ECDH1_DERIVE in the token, giving the shared secret
 * as a short-lived session object that is read and destroyed; the rest of the JWE is jwe-ecdh.ts.
 * Keys generated before that are sign-only: they still sign, and `unwrapKey` refuses them.
 *
 * A session is opened and the user logged in on first use, then kept until `close()`. Operations run
 * one at a time; a session the token dropped (removed, reset) is opened again once.
 *
 * Mutual TLS (the gateway, renewal) signs in the token too: `tlsKey()` is null, and `opensslKey()`
 * hands the TLS tunnel (openssl s_client with the libp11 engine) the module, the key's PKCS#11 URI
 * and the PIN; the tunnel opens its own session on the token.
 */
export class Pkcs11TrustAnchor implements TrustAnchor {
  readonly kind = 'pkcs11';
  readonly strength = 'hardware' as const;
  readonly module: string;
  readonly tokenLabel: string;
  readonly keyLabel: string;
  /** Kept out of the object's enumerable state, so that logging the anchor cannot show it. */
  readonly #pin: string;
  private session: TokenSession | null = null;
  private publicKeyObject: KeyObject | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: Pkcs11TrustAnchorOptions) {
    this.module = options.module;
    this.tokenLabel = options.tokenLabel;
    this.keyLabel = options.keyLabel ?? DEFAULT_PKCS11_KEY_LABEL;
    this.#pin = options.pin;
  }

  async ensureKey(): Promise<KeyObject> {
    return this.withSession((s) => {
      const existing = this.findPrivateKey(s);
      if (existing) return this.loadPublic(s, existing);
      this.generate(s);
      const created = this.findPrivateKey(s);
      if (!created)
        throw new AgentError(
          'TRUST_ANCHOR',
          `PKCS#11 token "${this.tokenLabel}" generated key "${this.keyLabel}" but does not find it`,
        );
      return this.loadPublic(s, created);
    });
  }

  async publicKey(): Promise<KeyObject | null> {
    if (this.publicKeyObject) return this.publicKeyObject;
    return this.withSession((s) => {
      const key = this.findPrivateKey(s);
      return key ? this.loadPublic(s, key) : null;
    });
  }

  /** Null: the key cannot leave the token; mutual TLS goes through `opensslKey()`. */
  async tlsKey(): Promise<KeyObject | null> {
    return null;
  }

  /**
   * The identity key as the libp11 engine finds it: the module, the RFC 7512 URI of the private key
   * (token and key label) and the PIN, for the TLS tunnel's configuration file (never its command
   * line). Logs in first, so that a wrong PIN is reported here, once, rather than by every
   * connection attempt; throws TRUST_ANCHOR when the token has no identity key.
   */
  async opensslKey(): Promise<OpensslKey> {
    const present = await this.withSession((s) => this.findPrivateKey(s) !== null);
    if (!present)
      throw new AgentError(
        'TRUST_ANCHOR',
        `PKCS#11 token "${this.tokenLabel}" has no identity key "${this.keyLabel}" yet; run: rampart-agent identity init`,
      );
    const uri = `pkcs11:token=${pkcs11UriValue(this.tokenLabel)};object=${pkcs11UriValue(this.keyLabel)};type=private`;
    return { kind: 'pkcs11', module: this.module, uri, pin: this.#pin };
  }

  async sign(data: Uint8Array): Promise<Buffer> {
    const digest = createHash('sha256').update(data).digest();
    return this.withSession((s) => {
      const key = this.findPrivateKey(s);
      if (!key)
        throw new AgentError(
          'TRUST_ANCHOR',
          `PKCS#11 token "${this.tokenLabel}" has no identity key "${this.keyLabel}" yet; run: rampart-agent identity init`,
        );
      const { api, lib } = s.library;
      let raw: Buffer;
      try {
        lib.C_SignInit(s.handle, { mechanism: api.CKM_ECDSA }, key);
        raw = lib.C_Sign(s.handle, digest, Buffer.alloc(256));
      } catch (err) {
        const code = returnCode(err);
        if (code === 'CKR_KEY_FUNCTION_NOT_PERMITTED' || code === 'CKR_KEY_TYPE_INCONSISTENT')
          throw new AgentError(
            'TRUST_ANCHOR',
            `key "${this.keyLabel}" on PKCS#11 token "${this.tokenLabel}" may not make ECDSA signatures (${code}); delete it and run: rampart-agent identity init`,
            { cause: err },
          );
        if (code === 'CKR_MECHANISM_INVALID')
          throw new AgentError(
            'TRUST_ANCHOR',
            `PKCS#11 token "${this.tokenLabel}" cannot sign with CKM_ECDSA (${code}); it cannot hold the device identity`,
            { cause: err },
          );
        throw this.failure('signing (C_Sign)', err);
      }
      return ecdsaSignatureToDer(raw);
    });
  }

  /**
   * Open a JWE encrypted to the identity key (`ECDH-ES+A256KW` / `A256GCM`): the ECDH is
   * CKM_ECDH1_DERIVE in the token, the rest is jwe-ecdh.ts. Refuses a key generated before this was
   * possible (without CKA_DERIVE).
   */
  async unwrapKey(jwe: string): Promise<Uint8Array> {
    return openEcdhEsJwe(jwe, (epk) => this.ecdh(epk));
  }

  /**
   * Z, the x coordinate of the identity key's private scalar times `peer` (a P-256 point): derived
   * in the token (CKM_ECDH1_DERIVE, CKD_NULL, the peer's uncompressed point) into a 32-byte generic
   * secret that exists only in this session and may be read — the identity key itself stays
   * sensitive and non-extractable —, read, and destroyed at once.
   */
  private ecdh(peer: KeyObject): Promise<Buffer> {
    const jwk = peer.export({ format: 'jwk' });
    const point = Buffer.concat([
      Buffer.from([0x04]),
      Buffer.from(jwk.x ?? '', 'base64url'),
      Buffer.from(jwk.y ?? '', 'base64url'),
    ]);
    return this.withSession((s) => {
      const key = this.findPrivateKey(s);
      if (!key)
        throw new AgentError(
          'TRUST_ANCHOR',
          `PKCS#11 token "${this.tokenLabel}" has no identity key "${this.keyLabel}" yet; run: rampart-agent identity init`,
        );
      const { api, lib } = s.library;
      const [derive] = this.attributes(s, key, [api.CKA_DERIVE]);
      if (!boolOf(derive!)) throw this.cannotDerive();
      let secret: Handle;
      try {
        secret = lib.C_DeriveKey(
          s.handle,
          {
            mechanism: api.CKM_ECDH1_DERIVE,
            parameter: { type: api.CK_PARAMS_EC_DH, kdf: api.CKD_NULL, publicData: point } as Pkcs11js.ECDH1,
          },
          key,
          [
            { type: api.CKA_CLASS, value: api.CKO_SECRET_KEY },
            { type: api.CKA_KEY_TYPE, value: api.CKK_GENERIC_SECRET },
            { type: api.CKA_VALUE_LEN, value: 32 },
            { type: api.CKA_TOKEN, value: false },
            { type: api.CKA_PRIVATE, value: true },
            { type: api.CKA_SENSITIVE, value: false },
            { type: api.CKA_EXTRACTABLE, value: true },
          ],
        );
      } catch (err) {
        const code = returnCode(err);
        if (code === 'CKR_KEY_FUNCTION_NOT_PERMITTED') throw this.cannotDerive(err);
        if (code === 'CKR_MECHANISM_INVALID' || code === 'CKR_MECHANISM_PARAM_INVALID')
          throw new AgentError(
            'TRUST_ANCHOR',
            `PKCS#11 token "${this.tokenLabel}" cannot do ECDH with CKM_ECDH1_DERIVE (${code}), so it cannot open encrypted releases; publish unencrypted releases for this device`,
            { cause: err },
          );
        throw this.failure('deriving the ECDH secret (C_DeriveKey)', err);
      }
      try {
        const [value] = this.attributes(s, secret, [api.CKA_VALUE]);
        return value!;
      } finally {
        try {
          lib.C_DestroyObject(s.handle, secret);
        } catch {
          // a session object goes with the session anyway
        }
      }
    });
  }

  private cannotDerive(cause?: unknown): AgentError {
    return new AgentError(
      'TRUST_ANCHOR',
      `key "${this.keyLabel}" on PKCS#11 token "${this.tokenLabel}" was generated before the agent could unwrap content keys with a PKCS#11 token ` +
        '(it lacks CKA_DERIVE), so it cannot open encrypted releases; re-provision the device (a new identity key and certificate), or publish unencrypted releases for it',
      cause === undefined ? {} : { cause },
    );
  }

  /** Log out (when no other anchor of the process uses the token), close the session, release the library. */
  async close(): Promise<void> {
    await this.exclusive(async () => this.drop());
  }

  // ----------------------------------------------------------------------------------------------
  // Sessions

  /** Run `fn` in the session (opened on first use), one operation at a time; once more in a new session if the token dropped it. */
  private withSession<T>(fn: (s: TokenSession) => T): Promise<T> {
    return this.exclusive(async () => {
      for (let attempt = 1; ; attempt++) {
        const s = this.session ?? (this.session = await this.open());
        try {
          return fn(s);
        } catch (err) {
          const cause = err instanceof AgentError ? err.cause : err;
          if (attempt > 1 || !SESSION_LOST.has(returnCode(cause) ?? '')) throw err;
          this.drop();
        }
      }
    });
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async open(): Promise<TokenSession> {
    const api = await loadBinding();
    const library = acquireLibrary(api, this.module);
    let handle: Handle | null = null;
    try {
      const slot = this.findSlot(library);
      try {
        handle = library.lib.C_OpenSession(slot, api.CKF_RW_SESSION | api.CKF_SERIAL_SESSION);
      } catch (err) {
        throw this.failure('opening a session (C_OpenSession)', err);
      }
      const slotKey = slot.toString('hex');
      this.login(library, slotKey, handle);
      return { library, slotKey, handle };
    } catch (err) {
      if (handle) {
        try {
          library.lib.C_CloseSession(handle);
        } catch {
          // already gone
        }
      }
      releaseLibrary(library);
      throw err;
    }
  }

  /** Give up the session: log out if this was the last anchor logged in to the token, close, release. */
  private drop(): void {
    const s = this.session;
    if (!s) return;
    this.session = null;
    const { lib } = s.library;
    const entry = s.library.logins.get(s.slotKey);
    if (entry && --entry.users === 0) {
      s.library.logins.delete(s.slotKey);
      if (entry.loggedInHere) {
        try {
          lib.C_Logout(s.handle);
        } catch {
          // the session may be gone with the token
        }
      }
    }
    try {
      lib.C_CloseSession(s.handle);
    } catch {
      // as above
    }
    releaseLibrary(s.library);
  }

  /** The slot of the one initialised token with the label; the error lists the labels there are. */
  private findSlot(library: LoadedLibrary): Handle {
    const { api, lib } = library;
    const labels: string[] = [];
    const matching: Handle[] = [];
    let slots: Handle[];
    try {
      slots = lib.C_GetSlotList(true);
    } catch (err) {
      throw this.failure('listing the slots (C_GetSlotList)', err);
    }
    for (const slot of slots) {
      let info;
      try {
        info = lib.C_GetTokenInfo(slot);
      } catch {
        continue; // a token removed meanwhile
      }
      if (!(info.flags & api.CKF_TOKEN_INITIALIZED)) continue;
      // Labels are blank-padded to 32 characters.
      const label = info.label.replace(/[\s\0]+$/, '');
      labels.push(label);
      if (label === this.tokenLabel) matching.push(slot);
    }
    if (matching.length === 1) return matching[0]!;
    if (matching.length > 1)
      throw new AgentError(
        'TRUST_ANCHOR',
        `${matching.length} tokens of PKCS#11 library ${this.module} are labelled "${this.tokenLabel}"; give each a distinct label`,
      );
    throw new AgentError(
      'TRUST_ANCHOR',
      `no PKCS#11 token labelled "${this.tokenLabel}" in ${this.module}; tokens found: ${
        labels.length ? labels.map((l) => `"${l}"`).join(', ') : '(none)'
      }. Set pkcs11.tokenLabel (RAMPART_AGENT_PKCS11_TOKEN_LABEL) to one of them, or initialise the token`,
    );
  }

  private login(library: LoadedLibrary, slotKey: string, session: Handle): void {
    const { api, lib } = library;
    const pinDigest = createHash('sha256').update(this.#pin).digest();
    const existing = library.logins.get(slotKey);
    if (existing) {
      // Already logged in by another anchor of this process: C_Login would not check the PIN, so compare.
      if (!timingSafeEqual(existing.pinDigest, pinDigest)) throw this.wrongPin('CKR_PIN_INCORRECT');
      existing.users++;
      return;
    }
    let loggedInHere = true;
    try {
      lib.C_Login(session, api.CKU_USER, this.#pin);
    } catch (err) {
      const code = returnCode(err);
      if (code === 'CKR_USER_ALREADY_LOGGED_IN') loggedInHere = false;
      else if (code === 'CKR_PIN_INCORRECT' || code === 'CKR_PIN_LEN_RANGE') throw this.wrongPin(code, err);
      else if (code === 'CKR_PIN_LOCKED')
        throw new AgentError(
          'TRUST_ANCHOR',
          `the user PIN of PKCS#11 token "${this.tokenLabel}" is locked after too many wrong attempts (CKR_PIN_LOCKED); unlock it with the token's SO PIN, then set the right PIN`,
          { cause: err },
        );
      else if (code === 'CKR_USER_PIN_NOT_INITIALIZED')
        throw new AgentError(
          'TRUST_ANCHOR',
          `PKCS#11 token "${this.tokenLabel}" has no user PIN yet (CKR_USER_PIN_NOT_INITIALIZED); set one with the token's SO PIN`,
          { cause: err },
        );
      else throw this.failure('logging in (C_Login)', err);
    }
    library.logins.set(slotKey, { users: 1, pinDigest, loggedInHere });
  }

  private wrongPin(code: string, cause?: unknown): AgentError {
    return new AgentError(
      'TRUST_ANCHOR',
      `the PIN does not log in to PKCS#11 token "${this.tokenLabel}" (${code}): set pkcs11.pin or RAMPART_AGENT_PKCS11_PIN to the token's user PIN (each wrong attempt brings the token closer to locking the PIN)`,
      cause === undefined ? {} : { cause },
    );
  }

  private failure(what: string, err: unknown): AgentError {
    if (err instanceof AgentError) return err;
    return new AgentError(
      'TRUST_ANCHOR',
      `PKCS#11 token "${this.tokenLabel}": ${what} failed: ${reason(err)}`,
      { cause: err },
    );
  }

  // ----------------------------------------------------------------------------------------------
  // Objects

  private find(s: TokenSession, template: Template): Handle[] {
    const { lib } = s.library;
    try {
      lib.C_FindObjectsInit(s.handle, template);
    } catch (err) {
      throw this.failure('searching for objects (C_FindObjectsInit)', err);
    }
    const found: Handle[] = [];
    try {
      for (
        let batch = lib.C_FindObjects(s.handle, 64);
        batch.length > 0;
        batch = lib.C_FindObjects(s.handle, 64)
      )
        found.push(...batch);
    } catch (err) {
      throw this.failure('searching for objects (C_FindObjects)', err);
    } finally {
      try {
        lib.C_FindObjectsFinal(s.handle);
      } catch {
        // the search ends with the session anyway
      }
    }
    return found;
  }

  /** The values of the attributes asked for, in that order. */
  private attributes(s: TokenSession, object: Handle, types: number[]): Buffer[] {
    let result;
    try {
      result = s.library.lib.C_GetAttributeValue(
        s.handle,
        object,
        types.map((type) => ({ type })),
      );
    } catch (err) {
      throw this.failure('reading key attributes (C_GetAttributeValue)', err);
    }
    return types.map((type) => result.find((a) => a.type === type)?.value ?? Buffer.alloc(0));
  }

  /** The identity's private key, or null when the token has none; checks that it is one the agent may use. */
  private findPrivateKey(s: TokenSession): Handle | null {
    const { api } = s.library;
    const found = this.find(s, [
      { type: api.CKA_CLASS, value: api.CKO_PRIVATE_KEY },
      { type: api.CKA_LABEL, value: this.keyLabel },
    ]);
    if (found.length === 0) return null;
    if (found.length > 1)
      throw new AgentError(
        'TRUST_ANCHOR',
        `PKCS#11 token "${this.tokenLabel}" holds ${found.length} private keys labelled "${this.keyLabel}"; delete all but one, or set pkcs11.keyLabel to another label`,
      );
    const key = found[0]!;
    const [keyType, sensitive, extractable] = this.attributes(s, key, [
      api.CKA_KEY_TYPE,
      api.CKA_SENSITIVE,
      api.CKA_EXTRACTABLE,
    ]);
    if (ulongOf(keyType!) !== api.CKK_EC)
      throw new AgentError(
        'TRUST_ANCHOR',
        `key "${this.keyLabel}" on PKCS#11 token "${this.tokenLabel}" is not an EC key; the device identity is ECDSA P-256: delete it or set pkcs11.keyLabel to another label`,
      );
    // The hardware strength holds only for a key that cannot be read out of the token.
    if (!boolOf(sensitive!) || boolOf(extractable!))
      throw new AgentError(
        'TRUST_ANCHOR',
        `key "${this.keyLabel}" on PKCS#11 token "${this.tokenLabel}" can be exported (not CKA_SENSITIVE, or CKA_EXTRACTABLE); the agent uses only keys that cannot leave the token: delete it and run: rampart-agent identity init`,
      );
    return key;
  }

  /** The public key of `privateKey`, from the public-key object with its CKA_ID (or label). */
  private loadPublic(s: TokenSession, privateKey: Handle): KeyObject {
    if (this.publicKeyObject) return this.publicKeyObject;
    const { api } = s.library;
    const [id] = this.attributes(s, privateKey, [api.CKA_ID]);
    const publicClass = { type: api.CKA_CLASS, value: api.CKO_PUBLIC_KEY };
    const label = { type: api.CKA_LABEL, value: this.keyLabel };
    let candidates: Handle[];
    if (id && id.length > 0) {
      const byId = { type: api.CKA_ID, value: id };
      candidates = this.find(s, [publicClass, label, byId]);
      if (candidates.length === 0) candidates = this.find(s, [publicClass, byId]);
    } else {
      candidates = this.find(s, [publicClass, label]);
    }
    if (candidates.length !== 1)
      throw new AgentError(
        'TRUST_ANCHOR',
        `PKCS#11 token "${this.tokenLabel}" has ${candidates.length === 0 ? 'no' : candidates.length} public-key objects for key "${this.keyLabel}" (same CKA_ID or label); the agent needs exactly one to know the public key`,
      );
    const [params, point] = this.attributes(s, candidates[0]!, [api.CKA_EC_PARAMS, api.CKA_EC_POINT]);
    if (!params!.equals(P256_PARAMS))
      throw new AgentError(
        'TRUST_ANCHOR',
        `key "${this.keyLabel}" on PKCS#11 token "${this.tokenLabel}" is not on curve P-256; delete it or set pkcs11.keyLabel to another label`,
      );
    const spki = der.sequence(der.sequence(EC_PUBLIC_KEY_OID, P256_PARAMS), der.bitString(ecPointOf(point!)));
    let key: KeyObject;
    try {
      key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    } catch (err) {
      throw new AgentError(
        'TRUST_ANCHOR',
        `the public key of "${this.keyLabel}" on PKCS#11 token "${this.tokenLabel}" is not a valid P-256 point`,
        { cause: err },
      );
    }
    this.publicKeyObject = key;
    return key;
  }

  /**
   * A new P-256 key pair inside the token, for ECDSA and ECDH; the private key is sensitive and not
   * extractable.
   */
  private generate(s: TokenSession): void {
    const { api, lib } = s.library;
    // One CKA_ID for both halves, so that the public key is found again from the private one.
    const id = randomBytes(16);
    const common: Template = [
      { type: api.CKA_TOKEN, value: true },
      { type: api.CKA_LABEL, value: this.keyLabel },
      { type: api.CKA_ID, value: id },
    ];
    try {
      lib.C_GenerateKeyPair(
        s.handle,
        { mechanism: api.CKM_EC_KEY_PAIR_GEN },
        [
          ...common,
          { type: api.CKA_PRIVATE, value: false },
          { type: api.CKA_VERIFY, value: true },
          { type: api.CKA_EC_PARAMS, value: P256_PARAMS },
        ],
        [
          ...common,
          { type: api.CKA_PRIVATE, value: true },
          { type: api.CKA_SIGN, value: true },
          // ECDH for the content keys of encrypted releases (unwrapKey).
          { type: api.CKA_DERIVE, value: true },
          { type: api.CKA_SENSITIVE, value: true },
          { type: api.CKA_EXTRACTABLE, value: false },
        ],
      );
    } catch (err) {
      const code = returnCode(err);
      if (
        code === 'CKR_MECHANISM_INVALID' ||
        code === 'CKR_DOMAIN_PARAMS_INVALID' ||
        code === 'CKR_CURVE_NOT_SUPPORTED' ||
        code === 'CKR_TEMPLATE_INCONSISTENT'
      )
        throw new AgentError(
          'TRUST_ANCHOR',
          `PKCS#11 token "${this.tokenLabel}" cannot generate a non-extractable ECDSA P-256 key (${code}); it cannot hold the device identity`,
          { cause: err },
        );
      if (code === 'CKR_TOKEN_WRITE_PROTECTED' || code === 'CKR_DEVICE_MEMORY')
        throw new AgentError(
          'TRUST_ANCHOR',
          `PKCS#11 token "${this.tokenLabel}" cannot store a new key (${code}); make room on the token or use another one`,
          { cause: err },
        );
      throw this.failure('generating the identity key (C_GenerateKeyPair)', err);
    }
  }
}
