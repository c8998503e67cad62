import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RampartError } from '../errors.js';

export interface PassphraseSource {
  passphrase: string;
  /** Where it came from, for a log line (never the value). */
  source: 'environment' | 'file' | 'generated';
  warning?: string;
}

/**
 * The key-store passphrase comes from RAMPART_KEYSTORE_PASSPHRASE, else from `keystore.passphraseFile`,
 * else (embedded defaults only) from a random passphrase generated once into the data directory.
 * It is never taken from argv, where other users of the machine could read it.
 */
export function resolvePassphrase(
  env: Record<string, string | undefined>,
  passphraseFile: string | undefined,
  dataDir: string,
  options: { create: boolean } = { create: true },
): PassphraseSource {
  const fromEnv = env.RAMPART_KEYSTORE_PASSPHRASE;
  if (fromEnv) return { passphrase: fromEnv, source: 'environment' };
  const file = passphraseFile ?? join(dataDir, 'keystore.passphrase');
  if (existsSync(file)) {
    const mode = statSync(file).mode & 0o077;
    const passphrase = readFileSync(file, 'utf8').trim();
    if (!passphrase) throw new RampartError('KEYSTORE', `passphrase file ${file} is empty`);
    return {
      passphrase,
      source: 'file',
      ...(mode !== 0
        ? { warning: `passphrase file ${file} is readable by other users; run: chmod 600 ${file}` }
        : {}),
    };
  }
  if (passphraseFile)
    throw new RampartError('KEYSTORE', `keystore.passphraseFile ${passphraseFile} does not exist`);
  if (!options.create) {
    throw new RampartError(
      'KEYSTORE',
      `no key store passphrase: set RAMPART_KEYSTORE_PASSPHRASE or keystore.passphraseFile`,
    );
  }
  const passphrase = randomBytes(32).toString('base64url');
  writeFileSync(file, passphrase + '\n', { mode: 0o600, flag: 'wx' });
  return {
    passphrase,
    source: 'generated',
    warning: `generated a key store passphrase in ${file}; for production keep it elsewhere (RAMPART_KEYSTORE_PASSPHRASE or keystore.passphraseFile)`,
  };
}

export interface PinSource {
  pin: string;
  /** Where it came from, for a log line (never the value). */
  source: 'environment' | 'file';
  warning?: string;
}

/**
 * The user PIN of the PKCS#11 token comes from RAMPART_KEYSTORE_PIN, else from `keystore.pkcs11.pinFile`.
 * Never from argv, and never generated: the token was initialised with it.
 */
export function resolvePin(env: Record<string, string | undefined>, pinFile: string | undefined): PinSource {
  const fromEnv = env.RAMPART_KEYSTORE_PIN;
  if (fromEnv) return { pin: fromEnv, source: 'environment' };
  if (!pinFile) {
    throw new RampartError(
      'KEYSTORE',
      `no PIN for the PKCS#11 key store: set RAMPART_KEYSTORE_PIN, or keystore.pkcs11.pinFile (RAMPART_KEYSTORE_PKCS11_PIN_FILE) to a file holding the token's user PIN`,
    );
  }
  if (!existsSync(pinFile))
    throw new RampartError('KEYSTORE', `keystore.pkcs11.pinFile ${pinFile} does not exist`);
  const mode = statSync(pinFile).mode & 0o077;
  const pin = readFileSync(pinFile, 'utf8').trim();
  if (!pin) throw new RampartError('KEYSTORE', `PIN file ${pinFile} is empty`);
  return {
    pin,
    source: 'file',
    ...(mode !== 0
      ? { warning: `PIN file ${pinFile} is readable by other users; run: chmod 600 ${pinFile}` }
      : {}),
  };
}
