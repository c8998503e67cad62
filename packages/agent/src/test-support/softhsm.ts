import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as Pkcs11js from 'pkcs11js';
import type { PKCS11 } from 'pkcs11js';

/** Debian's SoftHSM2 module (package `softhsm2`); RAMPART_TEST_SOFTHSM_MODULE points elsewhere. */
export const SOFTHSM_MODULE = process.env.RAMPART_TEST_SOFTHSM_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';

export interface SoftHsmToken {
  module: string;
  tokenLabel: string;
  /** The user PIN. */
  pin: string;
  /** SOFTHSM2_CONF, for child processes that should see the token. */
  env: { SOFTHSM2_CONF: string };
  /** Delete the token; the last one also removes the configuration. Close every anchor on it first. */
  cleanup(): void;
}

/**
 * SoftHSM2 reads SOFTHSM2_CONF when the module is initialised, and a process initialises a module
 * once while anything uses it. So every token of a test process lives under one configuration (set
 * in this process's environment), created before the first anchor opens the module: tokens made
 * later are seen only once every anchor has closed and the module is initialised again. Vitest runs
 * each test file in its own process, so test files never share tokens.
 */
let current: { dir: string; conf: string; tokens: Set<string>; previous: string | undefined } | null = null;

function softhsmUtil(conf: string, args: string[]): void {
  try {
    execFileSync('softhsm2-util', args, {
      env: { ...process.env, SOFTHSM2_CONF: conf },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT')
      throw new Error(
        'softhsm2-util is missing: run `bash scripts/ensure-system-deps.sh` (apt-get install softhsm2)',
        { cause: err },
      );
    throw new Error(`softhsm2-util ${args[0]} failed: ${e.stderr?.toString() || e.message}`, { cause: err });
  }
}

/** A new, initialised token with random PINs. */
export function createSoftHsmToken(label = `agent-test-${randomBytes(4).toString('hex')}`): SoftHsmToken {
  if (!current) {
    const dir = mkdtempSync(join(tmpdir(), 'rampart-agent-softhsm-'));
    mkdirSync(join(dir, 'tokens'), { mode: 0o700 });
    const conf = join(dir, 'softhsm2.conf');
    writeFileSync(
      conf,
      `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
    );
    current = { dir, conf, tokens: new Set(), previous: process.env.SOFTHSM2_CONF };
  }
  const state = current;
  process.env.SOFTHSM2_CONF = state.conf;
  const pin = randomBytes(6).toString('hex');
  softhsmUtil(state.conf, [
    '--init-token',
    '--free',
    '--label',
    label,
    '--pin',
    pin,
    '--so-pin',
    randomBytes(6).toString('hex'),
  ]);
  state.tokens.add(label);
  return {
    module: SOFTHSM_MODULE,
    tokenLabel: label,
    pin,
    env: { SOFTHSM2_CONF: state.conf },
    cleanup() {
      if (!state.tokens.delete(label)) return;
      softhsmUtil(state.conf, ['--delete-token', '--token', label]);
      if (state.tokens.size > 0 || current !== state) return;
      rmSync(state.dir, { recursive: true, force: true });
      if (state.previous === undefined) delete process.env.SOFTHSM2_CONF;
      else process.env.SOFTHSM2_CONF = state.previous;
      current = null;
    },
  };
}

export interface KeyObjectAttributes {
  token: boolean;
  sensitive: boolean;
  extractable: boolean;
  alwaysSensitive: boolean;
  neverExtractable: boolean;
  sign: boolean;
  derive: boolean;
  /** The return code when asked for the private value (CKA_VALUE); null if the token gave it out. */
  valueRead: string | null;
}

type Pkcs11Module = typeof Pkcs11js;

/**
 * Run `work` in a read/write session on `token`, logged in as the user, through pkcs11js directly
 * (not through an anchor). Works while an anchor of this process has the module open and is logged
 * in: the module is then neither finalised nor logged out here, since both belong to the process.
 */
export async function withTokenSession<T>(
  token: SoftHsmToken,
  work: (lib: PKCS11, session: Buffer, p11: Pkcs11Module) => T,
): Promise<T> {
  const { default: p11 } = await import('pkcs11js');
  const lib = new p11.PKCS11();
  lib.load(token.module);
  const code = (err: unknown) => (err instanceof Error ? /CKR_[A-Z_]+/.exec(err.message)?.[0] : undefined);
  let finalize = true;
  try {
    lib.C_Initialize();
  } catch (err) {
    if (code(err) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw err;
    finalize = false; // an anchor of this process has it open
  }
  try {
    const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === token.tokenLabel);
    if (!slot) throw new Error(`token ${token.tokenLabel} not found`);
    const session = lib.C_OpenSession(slot, p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION);
    let logout = true;
    try {
      lib.C_Login(session, p11.CKU_USER, token.pin);
    } catch (err) {
      if (code(err) !== 'CKR_USER_ALREADY_LOGGED_IN') throw err;
      logout = false;
    }
    try {
      return work(lib, session, p11);
    } finally {
      if (logout) lib.C_Logout(session);
      lib.C_CloseSession(session);
    }
  } finally {
    if (finalize) lib.C_Finalize();
  }
}

/**
 * What the token itself says about the private keys labelled `keyLabel`, read with pkcs11js directly
 * (not through the anchor), and how many public keys carry the label.
 */
export function inspectKeys(
  token: SoftHsmToken,
  keyLabel: string,
): Promise<{ privateKeys: KeyObjectAttributes[]; publicKeys: number }> {
  return withTokenSession(token, (lib, session, p11) => {
    const find = (cls: number) => {
      lib.C_FindObjectsInit(session, [
        { type: p11.CKA_CLASS, value: cls },
        { type: p11.CKA_LABEL, value: keyLabel },
      ]);
      const found = lib.C_FindObjects(session, 100);
      lib.C_FindObjectsFinal(session);
      return found;
    };
    const bool = (handle: Buffer, type: number) => {
      const [a] = lib.C_GetAttributeValue(session, handle, [{ type }]);
      return a!.value[0] === 1;
    };
    const privateKeys = find(p11.CKO_PRIVATE_KEY).map((h) => {
      let valueRead: string | null = null;
      try {
        lib.C_GetAttributeValue(session, h, [{ type: p11.CKA_VALUE }]);
      } catch (err) {
        valueRead = (err instanceof Error ? /CKR_[A-Z_]+/.exec(err.message)?.[0] : undefined) ?? String(err);
      }
      return {
        token: bool(h, p11.CKA_TOKEN),
        sensitive: bool(h, p11.CKA_SENSITIVE),
        extractable: bool(h, p11.CKA_EXTRACTABLE),
        alwaysSensitive: bool(h, p11.CKA_ALWAYS_SENSITIVE),
        neverExtractable: bool(h, p11.CKA_NEVER_EXTRACTABLE),
        sign: bool(h, p11.CKA_SIGN),
        derive: bool(h, p11.CKA_DERIVE),
        valueRead,
      };
    });
    return { privateKeys, publicKeys: find(p11.CKO_PUBLIC_KEY).length };
  });
}

/**
 * A P-256 key pair labelled `keyLabel` as the agent generated it before it unwrapped content keys:
 * sensitive, not extractable, signing only (no CKA_DERIVE). Generated with pkcs11js directly.
 */
export function generateSignOnlyKey(token: SoftHsmToken, keyLabel: string): Promise<void> {
  return withTokenSession(token, (lib, session, p11) => {
    const common = [
      { type: p11.CKA_TOKEN, value: true },
      { type: p11.CKA_LABEL, value: keyLabel },
      { type: p11.CKA_ID, value: randomBytes(16) },
    ];
    lib.C_GenerateKeyPair(
      session,
      { mechanism: p11.CKM_EC_KEY_PAIR_GEN },
      [
        ...common,
        { type: p11.CKA_VERIFY, value: true },
        { type: p11.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') },
      ],
      [
        ...common,
        { type: p11.CKA_PRIVATE, value: true },
        { type: p11.CKA_SIGN, value: true },
        { type: p11.CKA_DERIVE, value: false },
        { type: p11.CKA_SENSITIVE, value: true },
        { type: p11.CKA_EXTRACTABLE, value: false },
      ],
    );
  });
}
