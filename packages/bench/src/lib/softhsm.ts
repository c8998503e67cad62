import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The SoftHSM2 PKCS#11 module of Debian's `softhsm2` package (RAMPART_TEST_SOFTHSM_MODULE overrides it, as in the tests). */
export const SOFTHSM_MODULE = process.env.RAMPART_TEST_SOFTHSM_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';

export interface BenchToken {
  module: string;
  tokenLabel: string;
  pin: string;
  /** Environment for the server process: its SoftHSM2 configuration and the PIN. */
  env: { SOFTHSM2_CONF: string; RAMPART_KEYSTORE_PIN: string };
  cleanup(): void;
}

/**
 * A fresh SoftHSM2 token in its own configuration and token directory, for a server process to use
 * as its PKCS#11 key store (the server's test-support helper does the same for in-process tests but
 * is not part of the built package).
 */
export function createSoftHsmToken(label = `rampart-bench-${randomBytes(3).toString('hex')}`): BenchToken {
  const dir = mkdtempSync(join(tmpdir(), 'rampart-bench-softhsm-'));
  mkdirSync(join(dir, 'tokens'), { mode: 0o700 });
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(
    conf,
    [
      `directories.tokendir = ${join(dir, 'tokens')}`,
      'objectstore.backend = file',
      'log.level = ERROR',
      '',
    ].join('\n'),
  );
  const pin = randomBytes(8).toString('hex');
  try {
    execFileSync(
      'softhsm2-util',
      ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', randomBytes(8).toString('hex')],
      { env: { ...process.env, SOFTHSM2_CONF: conf }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new Error(
        'softhsm2-util is not installed: run `bash scripts/ensure-system-deps.sh` (apt-get install softhsm2)',
        {
          cause: err,
        },
      );
    throw err;
  }
  return {
    module: SOFTHSM_MODULE,
    tokenLabel: label,
    pin,
    env: { SOFTHSM2_CONF: conf, RAMPART_KEYSTORE_PIN: pin },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
