import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The SoftHSM2 PKCS#11 module of Debian's `softhsm2` package (RAMPART_TEST_SOFTHSM_MODULE overrides it). */
export const SOFTHSM_MODULE = process.env.RAMPART_TEST_SOFTHSM_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';

export interface SoftHsmToken {
  module: string;
  tokenLabel: string;
  /** User PIN. */
  pin: string;
  soPin: string;
  /** SOFTHSM2_CONF for child processes that should see this token. */
  env: { SOFTHSM2_CONF: string };
  /** Delete the token (and, with the last token, the configuration directory). Close its stores first. */
  cleanup(): void;
}

/**
 * One SoftHSM2 configuration (and token directory) per process, holding every token the process's
 * tests create. Not one per token, because SoftHSM2 reads SOFTHSM2_CONF in C_Initialize and pkcs11js
 * loads the library once per process: while any store is open the module stays initialised on the
 * configuration it started with, so a second configuration would simply not be seen. Tokens created
 * in the same directory are seen on the next C_Initialize, which the key store does when its first
 * store opens (it finalises the module when its last store closes). So: create tokens, open stores,
 * close every store, then clean up, and tokens from several tests coexist in one process.
 * Vitest (pool "forks", isolation on, as configured here) runs each test file in its own process, so
 * test files never share a directory; tests within a file share it.
 */
let shared: { dir: string; conf: string; tokens: Set<string>; previousConf: string | undefined } | null =
  null;

function softhsmUtil(args: string[], conf: string): string {
  try {
    return execFileSync('softhsm2-util', args, {
      env: { ...process.env, SOFTHSM2_CONF: conf },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string; stdout?: string };
    if (e.code === 'ENOENT') {
      throw new Error(
        'softhsm2-util is not installed: run `bash scripts/ensure-system-deps.sh` (apt-get install softhsm2)',
        { cause: err },
      );
    }
    throw new Error(`softhsm2-util ${args[0]} failed: ${e.stderr || e.stdout || e.message}`, { cause: err });
  }
}

/** A fresh, initialised SoftHSM2 token with random PINs; SOFTHSM2_CONF is set for this process. */
export function createSoftHsmToken(label = `rampart-test-${randomBytes(4).toString('hex')}`): SoftHsmToken {
  if (!shared) {
    const dir = mkdtempSync(join(tmpdir(), 'rampart-softhsm-'));
    mkdirSync(join(dir, 'tokens'), { mode: 0o700 });
    const conf = join(dir, 'softhsm2.conf');
    writeFileSync(
      conf,
      [
        `directories.tokendir = ${join(dir, 'tokens')}`,
        'objectstore.backend = file',
        'log.level = ERROR',
        'slots.removable = false',
        '',
      ].join('\n'),
    );
    shared = { dir, conf, tokens: new Set(), previousConf: process.env.SOFTHSM2_CONF };
  }
  const state = shared;
  process.env.SOFTHSM2_CONF = state.conf;
  const pin = randomBytes(8).toString('hex');
  const soPin = randomBytes(8).toString('hex');
  softhsmUtil(['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', soPin], state.conf);
  state.tokens.add(label);
  return {
    module: SOFTHSM_MODULE,
    tokenLabel: label,
    pin,
    soPin,
    env: { SOFTHSM2_CONF: state.conf },
    cleanup() {
      if (!state.tokens.delete(label)) return;
      softhsmUtil(['--delete-token', '--token', label], state.conf);
      if (state.tokens.size === 0 && shared === state) {
        rmSync(state.dir, { recursive: true, force: true });
        if (state.previousConf === undefined) delete process.env.SOFTHSM2_CONF;
        else process.env.SOFTHSM2_CONF = state.previousConf;
        shared = null;
      }
    },
  };
}
