import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkpointMessage, keyIdOf, verifyCheckpointSignature } from '@rampart/shared/audit';
import { RampartError } from '../errors.js';
import { FileKeyStore, getOrCreateKey, resolvePassphrase, type KeyAlgorithm } from './index.js';

const PASSPHRASE = 'correct horse battery staple';
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'rampart-keystore-test-'));
  dirs.push(d);
  return d;
}

async function refusal(p: Promise<unknown>): Promise<RampartError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RampartError);
  return err as RampartError;
}

const mode = (path: string) => statSync(path).mode & 0o777;
const keyFile = (dir: string, label: string) => join(dir, `${label}.key.json`);
const readJson = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;

describe('FileKeyStore', () => {
  it('keeps a key across reopening: same public key, same key id, signatures still verify', async () => {
    const dir = join(tempDir(), 'keys');
    const store = await FileKeyStore.open(dir, PASSPHRASE);
    const created = await store.create('audit-checkpoint', 'ec-p256');
    expect(created.keyId).toBe(keyIdOf(created.publicKey));

    const reopened = await FileKeyStore.open(dir, PASSPHRASE);
    const key = await reopened.get('audit-checkpoint');
    expect(key).not.toBeNull();
    expect(key!.keyId).toBe(created.keyId);
    expect(key!.publicKey.export({ type: 'spki', format: 'pem' })).toBe(
      created.publicKey.export({ type: 'spki', format: 'pem' }),
    );
    const data = Buffer.from('checkpoint');
    const sig = await key!.sign(data);
    expect(cryptoVerify('sha256', data, created.publicKey, sig)).toBe(true);

    expect(await reopened.get('no-such-key')).toBeNull();
    expect(await reopened.list()).toEqual([
      expect.objectContaining({
        label: 'audit-checkpoint',
        algorithm: 'ec-p256',
        keyId: created.keyId,
        exportable: false,
      }),
    ]);
    // getOrCreateKey returns the existing key rather than making a second one.
    expect((await getOrCreateKey(reopened, 'audit-checkpoint', 'ec-p256')).keyId).toBe(created.keyId);
    await expect(reopened.create('audit-checkpoint', 'ec-p256')).rejects.toThrow(/already exists/);
  });

  it('never writes the private key or the passphrase in the clear', async () => {
    const dir = tempDir();
    const store = await FileKeyStore.open(dir, PASSPHRASE);
    await store.create('api-tls', 'ec-p256', { exportable: true });
    const pkcs8 = (await store.exportPrivateKey('api-tls')).export({ type: 'pkcs8', format: 'der' });
    for (const f of ['keystore.json', 'api-tls.key.json']) {
      const text = readFileSync(join(dir, f), 'utf8');
      expect(text).not.toContain(PASSPHRASE);
      expect(text).not.toContain(pkcs8.toString('base64'));
      expect(text).not.toContain('PRIVATE KEY');
    }
  });

  it('refuses a wrong passphrase with a message that says what to do', async () => {
    const dir = tempDir();
    await (await FileKeyStore.open(dir, PASSPHRASE)).create('audit-checkpoint', 'ec-p256');
    const err = await refusal(FileKeyStore.open(dir, 'a different passphrase'));
    expect(err.message).toContain(`the key store passphrase does not open ${dir}`);
    expect(err.message).toContain('RAMPART_KEYSTORE_PASSPHRASE');
  });

  it('refuses a passphrase shorter than 12 characters', async () => {
    const err = await refusal(FileKeyStore.open(tempDir(), 'short'));
    expect(err.message).toContain('at least 12 characters');
  });

  it('writes its files with mode 0600 and its directory with mode 0700', async () => {
    const root = tempDir();
    const dir = join(root, 'keys');
    const store = await FileKeyStore.open(dir, PASSPHRASE);
    await store.create('audit-checkpoint', 'ec-p256');
    expect(mode(dir)).toBe(0o700);
    expect(mode(join(dir, 'keystore.json'))).toBe(0o600);
    expect(mode(keyFile(dir, 'audit-checkpoint'))).toBe(0o600);
  });

  describe('refuses tampered key files', () => {
    async function storeWithTwoKeys() {
      const dir = tempDir();
      const store = await FileKeyStore.open(dir, PASSPHRASE);
      await store.create('alpha', 'ec-p256');
      await store.create('beta', 'ec-p256');
      return dir;
    }

    it('a flipped bit in the ciphertext', async () => {
      const dir = await storeWithTwoKeys();
      const path = keyFile(dir, 'alpha');
      const file = readJson(path) as { privateKey: { data: string } };
      const data = Buffer.from(file.privateKey.data, 'base64');
      data[10] = data[10]! ^ 0x01;
      file.privateKey.data = data.toString('base64');
      writeFileSync(path, JSON.stringify(file));
      const err = await refusal((await FileKeyStore.open(dir, PASSPHRASE)).get('alpha'));
      expect(err.message).toContain(`key file ${path} cannot be decrypted: it was altered`);
    });

    it('a key file copied over another label', async () => {
      const dir = await storeWithTwoKeys();
      copyFileSync(keyFile(dir, 'beta'), keyFile(dir, 'alpha'));
      const err = await refusal((await FileKeyStore.open(dir, PASSPHRASE)).get('alpha'));
      expect(err.message).toContain('holds key "beta", not "alpha"');
    });

    it('a key file copied over another label and relabelled (the label is authenticated)', async () => {
      const dir = await storeWithTwoKeys();
      const file = readJson(keyFile(dir, 'beta'));
      writeFileSync(keyFile(dir, 'alpha'), JSON.stringify({ ...file, label: 'alpha' }));
      const err = await refusal((await FileKeyStore.open(dir, PASSPHRASE)).get('alpha'));
      expect(err.message).toContain('cannot be decrypted');
    });

    it('ciphertexts swapped between two key files', async () => {
      const dir = await storeWithTwoKeys();
      const a = readJson(keyFile(dir, 'alpha'));
      const b = readJson(keyFile(dir, 'beta'));
      writeFileSync(keyFile(dir, 'alpha'), JSON.stringify({ ...a, privateKey: b.privateKey }));
      const err = await refusal((await FileKeyStore.open(dir, PASSPHRASE)).get('alpha'));
      expect(err.message).toContain('cannot be decrypted');
    });

    it('a changed algorithm', async () => {
      const dir = await storeWithTwoKeys();
      const a = readJson(keyFile(dir, 'alpha'));
      writeFileSync(keyFile(dir, 'alpha'), JSON.stringify({ ...a, algorithm: 'ec-p384' }));
      await expect((await FileKeyStore.open(dir, PASSPHRASE)).get('alpha')).rejects.toThrow(
        /cannot be decrypted/,
      );
    });

    it('a public key that is not the private key’s', async () => {
      const dir = await storeWithTwoKeys();
      const a = readJson(keyFile(dir, 'alpha'));
      const b = readJson(keyFile(dir, 'beta'));
      writeFileSync(keyFile(dir, 'alpha'), JSON.stringify({ ...a, publicKey: b.publicKey }));
      await expect((await FileKeyStore.open(dir, PASSPHRASE)).get('alpha')).rejects.toThrow(
        /public key does not belong to the private key/,
      );
    });

    it('a key file from another key store', async () => {
      const dir = await storeWithTwoKeys();
      const other = tempDir();
      await (await FileKeyStore.open(other, PASSPHRASE)).create('alpha', 'ec-p256');
      copyFileSync(keyFile(other, 'alpha'), keyFile(dir, 'alpha'));
      // Same passphrase, different salt: a different key-encryption key.
      await expect((await FileKeyStore.open(dir, PASSPHRASE)).get('alpha')).rejects.toThrow(
        /belongs to another key store/,
      );
    });
  });

  describe('exporting', () => {
    it('gives exportable keys to in-process consumers', async () => {
      const store = await FileKeyStore.open(tempDir(), PASSPHRASE);
      const key = await store.create('api-tls', 'ec-p256', { exportable: true });
      const priv = await store.exportPrivateKey('api-tls');
      expect(createPublicKey(priv).export({ type: 'spki', format: 'pem' })).toBe(
        key.publicKey.export({ type: 'spki', format: 'pem' }),
      );
    });

    it('refuses non-exportable keys, also when the flag in the file is flipped', async () => {
      const dir = tempDir();
      const store = await FileKeyStore.open(dir, PASSPHRASE);
      await store.create('audit-checkpoint', 'ec-p256');
      const err = await refusal(store.exportPrivateKey('audit-checkpoint'));
      expect(err.message).toBe('key "audit-checkpoint" is not exportable');
      await expect(store.exportPrivateKey('nothing')).rejects.toThrow(/no key labelled "nothing"/);

      const path = keyFile(dir, 'audit-checkpoint');
      writeFileSync(path, JSON.stringify({ ...readJson(path), exportable: true }));
      const reopened = await FileKeyStore.open(dir, PASSPHRASE);
      await expect(reopened.exportPrivateKey('audit-checkpoint')).rejects.toThrow(/cannot be decrypted/);
    });
  });

  it('refuses labels that could escape the directory', async () => {
    const store = await FileKeyStore.open(tempDir(), PASSPHRASE);
    await expect(store.create('../evil', 'ec-p256')).rejects.toThrow(/invalid key label/);
    await expect(store.get('a/b')).rejects.toThrow(/invalid key label/);
  });

  const algorithms: [KeyAlgorithm, string, string | null][] = [
    ['ec-p256', 'ecdsa-p256-sha256', 'sha256'],
    ['ec-p384', 'ecdsa-p384-sha384', 'sha384'],
    ['rsa-2048', 'rsa-pkcs1-sha256', 'sha256'],
    ['rsa-3072', 'rsa-pkcs1-sha256', 'sha256'],
    ['ed25519', 'ed25519', null],
  ];
  it.each(algorithms)(
    'signs with %s so that node:crypto verifies it (%s)',
    async (algorithm, name, digest) => {
      const dir = tempDir();
      await (await FileKeyStore.open(dir, PASSPHRASE)).create('k', algorithm);
      // Through a reopened store, so the key has gone through its encrypted file.
      const key = (await (await FileKeyStore.open(dir, PASSPHRASE)).get('k'))!;
      expect(key.signatureAlgorithm).toBe(name);
      const data = Buffer.from(`rampart ${algorithm}`);
      const sig = await key.sign(data);
      expect(cryptoVerify(digest, data, key.publicKey, sig)).toBe(true);
      expect(cryptoVerify(digest, Buffer.from('something else'), key.publicKey, sig)).toBe(false);
      if (algorithm.startsWith('ec-'))
        expect(key.publicKey.asymmetricKeyDetails?.namedCurve).toBe(
          algorithm === 'ec-p256' ? 'prime256v1' : 'secp384r1',
        );
      if (algorithm.startsWith('rsa-'))
        expect(key.publicKey.asymmetricKeyDetails?.modulusLength).toBe(Number(algorithm.slice(4)));
      // The audit verifier accepts checkpoints signed by this key under the name it reports.
      const c = { entryCount: 1, headHash: 'a'.repeat(64), time: '2026-01-01T00:00:00.000Z' };
      const signature = (await key.sign(checkpointMessage(c))).toString('base64');
      expect(
        verifyCheckpointSignature(
          { ...c, id: 1, keyId: key.keyId, algorithm: key.signatureAlgorithm, signature },
          key.publicKey,
        ),
      ).toBe(true);
    },
  );
});

describe('resolvePassphrase', () => {
  it('takes RAMPART_KEYSTORE_PASSPHRASE first', () => {
    const dir = tempDir();
    const file = join(dir, 'pass');
    writeFileSync(file, 'from the file, long enough\n', { mode: 0o600 });
    expect(resolvePassphrase({ RAMPART_KEYSTORE_PASSPHRASE: PASSPHRASE }, file, dir)).toEqual({
      passphrase: PASSPHRASE,
      source: 'environment',
    });
  });

  it('then keystore.passphraseFile, trimmed, warning when others can read it', () => {
    const dir = tempDir();
    const file = join(dir, 'pass');
    writeFileSync(file, 'from the file, long enough\n', { mode: 0o600 });
    expect(resolvePassphrase({}, file, dir)).toEqual({
      passphrase: 'from the file, long enough',
      source: 'file',
    });
    chmodSync(file, 0o644);
    expect(resolvePassphrase({}, file, dir).warning).toContain(`chmod 600 ${file}`);
    expect(() => resolvePassphrase({}, join(dir, 'missing'), dir)).toThrow(/does not exist/);
    writeFileSync(file, '\n');
    expect(() => resolvePassphrase({}, file, dir)).toThrow(/is empty/);
  });

  it('otherwise generates one into the data directory once (mode 0600) and reuses it', () => {
    const dir = tempDir();
    const first = resolvePassphrase({}, undefined, dir);
    expect(first.source).toBe('generated');
    expect(first.passphrase.length).toBeGreaterThanOrEqual(32);
    const path = join(dir, 'keystore.passphrase');
    expect(mode(path)).toBe(0o600);
    const again = resolvePassphrase({}, undefined, dir);
    expect(again).toEqual({ passphrase: first.passphrase, source: 'file' });
  });

  it('does not generate one when asked not to', () => {
    const dir = tempDir();
    expect(() => resolvePassphrase({}, undefined, dir, { create: false })).toThrow(/no key store passphrase/);
    expect(existsSync(join(dir, 'keystore.passphrase'))).toBe(false);
  });
});
