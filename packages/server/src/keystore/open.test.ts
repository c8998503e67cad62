import { verify as cryptoVerify } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Logger } from '@rampart/shared/logging';
import { loadServerConfig } from '../config/index.js';
import { createSoftHsmToken, type SoftHsmToken } from '../test-support/softhsm.js';
import { openKeyStore, resolvePin, type KeyStore } from './index.js';

const dirs: string[] = [];
const stores: KeyStore[] = [];
const tokens: SoftHsmToken[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close?.();
  for (const t of tokens.splice(0)) t.cleanup();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'rampart-keystore-open-test-'));
  dirs.push(d);
  return d;
}

function logger() {
  const warn = vi.fn();
  return { warn, logger: { warn } as unknown as Logger };
}

/** The configuration `rampart up` would load from these variables, in a fresh working directory. */
function configFrom(env: Record<string, string>) {
  const cwd = tempDir();
  return { cwd, ...loadServerConfig({ env, cwd }) };
}

async function open(env: Record<string, string>, log?: Logger): Promise<KeyStore> {
  const store = await openKeyStore(configFrom(env).config, env, log);
  stores.push(store);
  return store;
}

describe('keystore settings', () => {
  it('default to the file backend and, for PKCS#11, SoftHSM2 and a token labelled "rampart"', () => {
    const { config, warnings } = configFrom({});
    expect(config.keystore).toEqual({
      backend: 'file',
      pkcs11: { module: '/usr/lib/softhsm/libsofthsm2.so', tokenLabel: 'rampart' },
    });
    expect(warnings).toEqual([]);
  });

  it('come from the environment; RAMPART_KEYSTORE_PIN is a secret, not a setting, and is not warned about', () => {
    const { config, warnings } = configFrom({
      RAMPART_KEYSTORE_BACKEND: 'pkcs11',
      RAMPART_KEYSTORE_PKCS11_MODULE: '/opt/hsm/libhsm.so',
      RAMPART_KEYSTORE_PKCS11_TOKEN_LABEL: 'platform',
      RAMPART_KEYSTORE_PKCS11_PIN_FILE: '/run/secrets/pin',
      RAMPART_KEYSTORE_PIN: '1234',
    });
    expect(config.keystore).toEqual({
      backend: 'pkcs11',
      pkcs11: { module: '/opt/hsm/libhsm.so', tokenLabel: 'platform', pinFile: '/run/secrets/pin' },
    });
    expect(warnings).toEqual([]);
  });

  it('refuse an unknown backend and a token label longer than PKCS#11 allows', () => {
    expect(() => configFrom({ RAMPART_KEYSTORE_BACKEND: 'hsm' })).toThrow(/keystore\.backend/);
    expect(() => configFrom({ RAMPART_KEYSTORE_PKCS11_TOKEN_LABEL: 'x'.repeat(33) })).toThrow(
      /keystore\.pkcs11\.tokenLabel/,
    );
  });
});

describe('resolvePin', () => {
  it('takes RAMPART_KEYSTORE_PIN first, then keystore.pkcs11.pinFile (trimmed, warning when others can read it)', () => {
    const dir = tempDir();
    const file = join(dir, 'pin');
    writeFileSync(file, '  from-the-file\n', { mode: 0o600 });
    expect(resolvePin({ RAMPART_KEYSTORE_PIN: 'from-env' }, file)).toEqual({
      pin: 'from-env',
      source: 'environment',
    });
    expect(resolvePin({}, file)).toEqual({ pin: 'from-the-file', source: 'file' });
    chmodSync(file, 0o644);
    expect(resolvePin({}, file).warning).toBe(
      `PIN file ${file} is readable by other users; run: chmod 600 ${file}`,
    );
  });

  it('refuses a missing PIN, saying how to supply one', () => {
    const dir = tempDir();
    expect(() => resolvePin({}, undefined)).toThrow(
      "no PIN for the PKCS#11 key store: set RAMPART_KEYSTORE_PIN, or keystore.pkcs11.pinFile (RAMPART_KEYSTORE_PKCS11_PIN_FILE) to a file holding the token's user PIN",
    );
    expect(() => resolvePin({}, join(dir, 'missing'))).toThrow(/keystore.pkcs11.pinFile .* does not exist/);
    writeFileSync(join(dir, 'empty'), '\n');
    expect(() => resolvePin({}, join(dir, 'empty'))).toThrow(/is empty/);
  });
});

describe('openKeyStore', () => {
  it('file: creates the store in <dataDir>/keys with a generated passphrase the first time, then reuses it', async () => {
    const env = { RAMPART_DATA_DIR: tempDir() };
    const first = logger();
    const store = await open(env, first.logger);
    expect(store.backend).toBe('file');
    expect(existsSync(join(env.RAMPART_DATA_DIR, 'keys', 'keystore.json'))).toBe(true);
    expect(first.warn).toHaveBeenCalledWith(expect.stringContaining('generated a key store passphrase'));
    const key = await store.create('audit-checkpoint', 'ec-p256');

    const again = await open(env);
    expect((await again.get('audit-checkpoint'))!.keyId).toBe(key.keyId);
  });

  it('file: does not generate a new passphrase for an existing store', async () => {
    const dataDir = tempDir();
    await open({ RAMPART_DATA_DIR: dataDir, RAMPART_KEYSTORE_PASSPHRASE: 'correct horse battery staple' });
    await expect(open({ RAMPART_DATA_DIR: dataDir })).rejects.toThrow(/no key store passphrase/);
  });

  it('pkcs11: opens the configured token with the PIN from the environment or the PIN file', async () => {
    const t = createSoftHsmToken();
    tokens.push(t);
    const settings = {
      RAMPART_DATA_DIR: tempDir(),
      RAMPART_KEYSTORE_BACKEND: 'pkcs11',
      RAMPART_KEYSTORE_PKCS11_MODULE: t.module,
      RAMPART_KEYSTORE_PKCS11_TOKEN_LABEL: t.tokenLabel,
    };
    const store = await open({ ...settings, RAMPART_KEYSTORE_PIN: t.pin });
    expect(store.backend).toBe('pkcs11');
    const key = await store.create('audit-checkpoint', 'ec-p256');
    await store.close?.();

    const pinFile = join(tempDir(), 'pin');
    writeFileSync(pinFile, `${t.pin}\n`, { mode: 0o600 });
    const log = logger();
    const again = await open({ ...settings, RAMPART_KEYSTORE_PKCS11_PIN_FILE: pinFile }, log.logger);
    expect(log.warn).not.toHaveBeenCalled();
    const found = (await again.get('audit-checkpoint'))!;
    expect(found.keyId).toBe(key.keyId);
    const data = Buffer.from('through openKeyStore');
    expect(cryptoVerify('sha256', data, key.publicKey, await found.sign(data))).toBe(true);
    // Nothing of the file backend appears in the data directory.
    expect(existsSync(join(settings.RAMPART_DATA_DIR, 'keys'))).toBe(false);
    expect(existsSync(join(settings.RAMPART_DATA_DIR, 'keystore.passphrase'))).toBe(false);
  });

  it('pkcs11: without a PIN, says how to give one; never falls back to the file backend', async () => {
    const dataDir = tempDir();
    await expect(open({ RAMPART_DATA_DIR: dataDir, RAMPART_KEYSTORE_BACKEND: 'pkcs11' })).rejects.toThrow(
      /no PIN for the PKCS#11 key store: set RAMPART_KEYSTORE_PIN/,
    );
    expect(existsSync(join(dataDir, 'keys'))).toBe(false);
  });
});
