import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '@rampart/shared/logging';
import type { ServerConfig } from '../config/index.js';
import { FileKeyStore } from './file-keystore.js';
import type { KeyStore } from './keystore.js';
import { resolvePassphrase, resolvePin } from './passphrase.js';

/** The file backend's directory: `dataFiles(dataDir).keys` in platform.ts (which imports this module). */
export const fileKeyStoreDir = (dataDir: string): string => join(dataDir, 'keys');

/**
 * Open the configured key store: encrypted files in the data directory with the configured or generated
 * passphrase, or a PKCS#11 token with the PIN from RAMPART_KEYSTORE_PIN or `keystore.pkcs11.pinFile`.
 */
export async function openKeyStore(
  config: ServerConfig,
  env: Record<string, string | undefined>,
  logger?: Logger,
): Promise<KeyStore> {
  if (config.keystore.backend === 'pkcs11') {
    const { module, tokenLabel, pinFile } = config.keystore.pkcs11;
    if (config.keystore.passphraseFile || env.RAMPART_KEYSTORE_PASSPHRASE) {
      logger?.warn('the key store passphrase is ignored: keystore.backend is pkcs11, which uses a PIN');
    }
    const source = resolvePin(env, pinFile);
    if (source.warning) logger?.warn(source.warning);
    // Loaded only when configured, so the native module is never needed by the file backend.
    const { Pkcs11KeyStore } = await import('./pkcs11-keystore.js');
    return Pkcs11KeyStore.open({ module, tokenLabel, pin: source.pin });
  }
  const dir = fileKeyStoreDir(config.dataDir);
  const source = resolvePassphrase(env, config.keystore.passphraseFile, config.dataDir, {
    // Generate a passphrase only for a new key store: an existing one needs the passphrase it was made with.
    create: !existsSync(join(dir, 'keystore.json')),
  });
  if (source.warning) logger?.warn(source.warning);
  return FileKeyStore.open(dir, source.passphrase);
}
