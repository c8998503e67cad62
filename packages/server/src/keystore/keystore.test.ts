import {
  createHash,
  createPublicKey,
  generateKeyPairSync,
  verify as cryptoVerify,
  type KeyObject,
} from 'node:crypto';
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
import pkcs11js from 'pkcs11js';
import type { PKCS11 } from 'pkcs11js';
import { afterEach, describe, expect, it } from 'vitest';
import { checkpointMessage, keyIdOf, verifyCheckpointSignature } from '@rampart/shared/audit';
import { RampartError } from '../errors.js';
import { createSoftHsmToken, type SoftHsmToken } from '../test-support/softhsm.js';
import {
  FileKeyStore,
  getOrCreateKey,
  resolvePassphrase,
  type KeyAlgorithm,
  type KeyStore,
  type PlatformKey,
} from './index.js';
import { Pkcs11KeyStore } from './pkcs11-keystore.js';

const PASSPHRASE = 'correct horse battery staple';
const dirs: string[] = [];
const openStores: KeyStore[] = [];
const tokens: SoftHsmToken[] = [];
afterEach(async () => {
  // Stores first: a token is deleted only once nothing has it open.
  for (const s of openStores.splice(0)) await s.close?.();
  for (const t of tokens.splice(0)) t.cleanup();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function tracked<T extends KeyStore>(store: Promise<T>): Promise<T> {
  const s = await store;
  openStores.push(s);
  return s;
}

function token(label?: string): SoftHsmToken {
  const t = createSoftHsmToken(label);
  tokens.push(t);
  return t;
}

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
});

/** Where a backend keeps its keys; `open` opens a store on it (again and again). */
interface Backend {
  name: 'file' | 'pkcs11';
  fresh(): { open(): Promise<KeyStore> };
}

const BACKENDS: Backend[] = [
  {
    name: 'file',
    fresh() {
      const dir = tempDir();
      return { open: () => tracked(FileKeyStore.open(dir, PASSPHRASE)) };
    },
  },
  {
    name: 'pkcs11',
    fresh() {
      const t = token();
      return { open: () => tracked(Pkcs11KeyStore.open(t)) };
    },
  },
];

const ALGORITHMS: [KeyAlgorithm, string, string | null][] = [
  ['ec-p256', 'ecdsa-p256-sha256', 'sha256'],
  ['ec-p384', 'ecdsa-p384-sha384', 'sha384'],
  ['rsa-2048', 'rsa-pkcs1-sha256', 'sha256'],
  ['rsa-3072', 'rsa-pkcs1-sha256', 'sha256'],
  ['ed25519', 'ed25519', null],
];

const spki = (k: KeyObject) => k.export({ type: 'spki', format: 'der' }).toString('hex');
const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

function newKeyPair(algorithm: KeyAlgorithm): KeyObject {
  switch (algorithm) {
    case 'ec-p256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    case 'ec-p384':
      return generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
    case 'rsa-2048':
      return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    case 'rsa-3072':
      return generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey;
    case 'ed25519':
      return generateKeyPairSync('ed25519').privateKey;
  }
}

/** The key signs so that node:crypto verifies it under the name it reports, and only for that data. */
async function expectVerifiableSignatures(key: PlatformKey, digest: string | null): Promise<void> {
  const data = Buffer.from(`rampart ${key.algorithm}`);
  const sig = await key.sign(data);
  const opts = key.algorithm.startsWith('ec-')
    ? { key: key.publicKey, dsaEncoding: 'der' as const }
    : key.publicKey;
  expect(cryptoVerify(digest, data, opts, sig)).toBe(true);
  expect(cryptoVerify(digest, Buffer.from('something else'), opts, sig)).toBe(false);
  // The audit verifier accepts checkpoints signed by this key under the name it reports.
  const c = { entryCount: 1, headHash: 'a'.repeat(64), time: '2026-01-01T00:00:00.000Z' };
  const signature = (await key.sign(checkpointMessage(c))).toString('base64');
  expect(
    verifyCheckpointSignature(
      { ...c, id: 1, keyId: key.keyId, algorithm: key.signatureAlgorithm, signature },
      key.publicKey,
    ),
  ).toBe(true);
}

describe.each(BACKENDS)('the $name key store', (backend) => {
  it.each(ALGORITHMS)(
    'creates %s keys that survive reopening and sign so that node:crypto verifies them (%s)',
    async (algorithm, name, digest) => {
      const at = backend.fresh();
      const store = await at.open();
      const created = await store.create('k', algorithm);
      expect(created).toMatchObject({ label: 'k', algorithm, signatureAlgorithm: name });
      expect(created.keyId).toBe(keyIdOf(created.publicKey));
      await expectVerifiableSignatures(created, digest);
      await store.close?.();

      // Through a reopened store, so the key has gone through the backend's storage.
      const reopened = await at.open();
      const key = (await reopened.get('k'))!;
      expect(key).toMatchObject({ label: 'k', algorithm, signatureAlgorithm: name, keyId: created.keyId });
      expect(spki(key.publicKey)).toBe(spki(created.publicKey));
      await expectVerifiableSignatures(key, digest);
      if (algorithm.startsWith('ec-'))
        expect(key.publicKey.asymmetricKeyDetails?.namedCurve).toBe(
          algorithm === 'ec-p256' ? 'prime256v1' : 'secp384r1',
        );
      if (algorithm.startsWith('rsa-'))
        expect(key.publicKey.asymmetricKeyDetails?.modulusLength).toBe(Number(algorithm.slice(4)));
      if (algorithm === 'ed25519') expect(key.publicKey.asymmetricKeyType).toBe('ed25519');

      const list = await reopened.list();
      expect(list).toEqual([
        { label: 'k', algorithm, keyId: created.keyId, createdAt: expect.any(String), exportable: false },
      ]);
      expect(list[0]!.createdAt).toMatch(ISO_TIME);
    },
  );

  it('returns null for a missing key, refuses a taken label and invalid labels', async () => {
    const store = await backend.fresh().open();
    expect(await store.get('no-such-key')).toBeNull();
    expect(await store.list()).toEqual([]);
    const created = await store.create('audit-checkpoint', 'ec-p256');
    const err = await refusal(store.create('audit-checkpoint', 'ec-p384'));
    expect(err.message).toBe('a key labelled "audit-checkpoint" already exists');
    // getOrCreateKey returns the existing key rather than making a second one.
    expect((await getOrCreateKey(store, 'audit-checkpoint', 'ec-p256')).keyId).toBe(created.keyId);
    expect(await store.list()).toHaveLength(1);
    await expect(store.create('../evil', 'ec-p256')).rejects.toThrow(/invalid key label/);
    await expect(store.create('Upper', 'ec-p256')).rejects.toThrow(/invalid key label/);
    await expect(store.get('a/b')).rejects.toThrow(/invalid key label/);
  });

  it('lists every key with its algorithm, key id, creation time and exportability', async () => {
    const store = await backend.fresh().open();
    const before = new Date().toISOString();
    const a = await store.create('alpha', 'ec-p256');
    const b = await store.create('beta', 'rsa-2048', { exportable: true });
    const list = (await store.list()).sort((x, y) => x.label.localeCompare(y.label));
    expect(list).toEqual([
      {
        label: 'alpha',
        algorithm: 'ec-p256',
        keyId: a.keyId,
        createdAt: expect.any(String),
        exportable: false,
      },
      {
        label: 'beta',
        algorithm: 'rsa-2048',
        keyId: b.keyId,
        createdAt: expect.any(String),
        exportable: true,
      },
    ]);
    for (const info of list) {
      expect(info.createdAt >= before).toBe(true);
      expect(info.createdAt <= new Date().toISOString()).toBe(true);
    }
  });

  it('refuses to export a key that is not exportable, or is not there', async () => {
    const store = await backend.fresh().open();
    await store.create('audit-checkpoint', 'ec-p256');
    const err = await refusal(store.exportPrivateKey('audit-checkpoint'));
    expect(err.message).toBe('key "audit-checkpoint" is not exportable');
    const missing = await refusal(store.exportPrivateKey('nothing'));
    expect(missing.message).toBe('no key labelled "nothing"');
  });

  it.each(ALGORITHMS)(
    'exports an exportable %s key whose public half is the key’s',
    async (algorithm, _n, digest) => {
      const at = backend.fresh();
      await (await at.open()).create('api-tls', algorithm, { exportable: true });
      const store = await at.open();
      const key = (await store.get('api-tls'))!;
      const priv = await store.exportPrivateKey('api-tls');
      expect(priv.type).toBe('private');
      expect(spki(createPublicKey(priv))).toBe(spki(key.publicKey));
      expect((await store.list())[0]).toMatchObject({ label: 'api-tls', exportable: true });
      // Signatures of the exported key and of the store's verify under the same public key.
      const data = Buffer.from('tls');
      const { sign } = await import('node:crypto');
      expect(cryptoVerify(digest, data, key.publicKey, sign(digest, data, priv))).toBe(true);
      expect(cryptoVerify(digest, data, key.publicKey, await key.sign(data))).toBe(true);
    },
  );

  it('deletes a key: gone from get and list, its label free again, false the second time', async () => {
    const at = backend.fresh();
    const store = await at.open();
    const old = await store.create('root-ca', 'ec-p384');
    await store.create('other', 'ec-p256');
    expect(await store.delete('root-ca')).toBe(true);
    expect(await store.get('root-ca')).toBeNull();
    expect((await store.list()).map((k) => k.label)).toEqual(['other']);
    expect(await store.delete('root-ca')).toBe(false);
    await expect(store.exportPrivateKey('root-ca')).rejects.toThrow(/no key labelled "root-ca"/);
    await expect(store.delete('../x')).rejects.toThrow(/invalid key label/);

    const reopened = await at.open();
    expect(await reopened.get('root-ca')).toBeNull();
    const again = await reopened.create('root-ca', 'ec-p384');
    expect(again.keyId).not.toBe(old.keyId);
    expect((await reopened.list()).map((k) => k.label).sort()).toEqual(['other', 'root-ca']);
  });

  it.each(ALGORITHMS)(
    'imports a %s private key, which then signs as itself',
    async (algorithm, name, digest) => {
      const at = backend.fresh();
      const store = await at.open();
      const priv = newKeyPair(algorithm);
      const imported = await store.importPrivateKey('root-ca', algorithm, priv);
      expect(imported).toMatchObject({ label: 'root-ca', algorithm, signatureAlgorithm: name });
      expect(imported.keyId).toBe(keyIdOf(createPublicKey(priv)));
      await expectVerifiableSignatures(imported, digest);
      // Imported without `exportable`, it stays in the store.
      await expect(store.exportPrivateKey('root-ca')).rejects.toThrow('key "root-ca" is not exportable');
      await store.close?.();

      const reopened = await at.open();
      const key = (await reopened.get('root-ca'))!;
      expect(key.keyId).toBe(imported.keyId);
      await expectVerifiableSignatures(key, digest);
      expect(await reopened.list()).toEqual([
        {
          label: 'root-ca',
          algorithm,
          keyId: imported.keyId,
          createdAt: expect.stringMatching(ISO_TIME),
          exportable: false,
        },
      ]);
    },
  );

  it('imports an exportable key and exports the same key again (a root-key rollover round trip)', async () => {
    // Both places first: SoftHSM2 sees a token made while the module is in use only after the next C_Initialize.
    const [first, second] = [backend.fresh(), backend.fresh()];
    const from = await first.open();
    const original = await from.create('root-ca', 'ec-p384', { exportable: true });
    const exported = await from.exportPrivateKey('root-ca');
    expect(await from.delete('root-ca')).toBe(true);

    const to = await second.open();
    const back = await to.importPrivateKey('root-ca', 'ec-p384', exported, { exportable: true });
    expect(back.keyId).toBe(original.keyId);
    const again = await to.exportPrivateKey('root-ca');
    expect(again.export({ format: 'jwk' })).toEqual(exported.export({ format: 'jwk' }));
  });

  it('refuses to import over a taken label, a key of another algorithm, or a public key', async () => {
    const store = await backend.fresh().open();
    await store.create('root-ca', 'ec-p256');
    await expect(store.importPrivateKey('root-ca', 'ec-p256', newKeyPair('ec-p256'))).rejects.toThrow(
      'a key labelled "root-ca" already exists',
    );
    await expect(store.importPrivateKey('other', 'ec-p256', newKeyPair('ec-p384'))).rejects.toThrow(
      'the key to import is ec-p384, not ec-p256',
    );
    await expect(
      store.importPrivateKey(
        'other',
        'rsa-3072',
        generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey,
      ),
    ).rejects.toThrow(/key store does not support, not rsa-3072/);
    await expect(
      store.importPrivateKey('other', 'ec-p256', createPublicKey(newKeyPair('ec-p256'))),
    ).rejects.toThrow('only a private key can be imported, not a public key');
    expect((await store.list()).map((k) => k.label)).toEqual(['root-ca']);
  });

  it('signs for many concurrent callers with several keys without mixing them up', async () => {
    const store = await backend.fresh().open();
    const keys = await Promise.all([
      store.create('a', 'ec-p256'),
      store.create('b', 'rsa-2048'),
      store.create('c', 'ec-p384'),
    ]);
    const jobs = Array.from({ length: 60 }, (_, i) => {
      const key = keys[i % keys.length]!;
      const data = Buffer.from(`message ${i}`);
      return key.sign(data).then((sig) => ({ key, data, sig }));
    });
    for (const { key, data, sig } of await Promise.all(jobs)) {
      expect(cryptoVerify(key.algorithm === 'ec-p384' ? 'sha384' : 'sha256', data, key.publicKey, sig)).toBe(
        true,
      );
    }
  });
});

/** A session of our own on the token, to look at objects the way another PKCS#11 application would. */
function rawSession<T>(t: SoftHsmToken, fn: (lib: PKCS11, session: Buffer) => T): T {
  const lib = new pkcs11js.PKCS11();
  lib.load(t.module);
  // A store is open in this process, so the module is initialised and the token logged in.
  expect(() => lib.C_Initialize()).toThrow(/CKR_CRYPTOKI_ALREADY_INITIALIZED/);
  const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === t.tokenLabel)!;
  const session = lib.C_OpenSession(slot, pkcs11js.CKF_RW_SESSION | pkcs11js.CKF_SERIAL_SESSION);
  try {
    return fn(lib, session);
  } finally {
    lib.C_CloseSession(session);
  }
}

function findObjects(lib: PKCS11, session: Buffer, cls: number, label: string): Buffer[] {
  lib.C_FindObjectsInit(session, [
    { type: pkcs11js.CKA_CLASS, value: cls },
    { type: pkcs11js.CKA_LABEL, value: label },
  ]);
  try {
    return lib.C_FindObjects(session, 10);
  } finally {
    lib.C_FindObjectsFinal(session);
  }
}

describe('Pkcs11KeyStore (SoftHSM2)', () => {
  it('refuses a wrong PIN with a message that says what to do', async () => {
    const t = token();
    const err = await refusal(tracked(Pkcs11KeyStore.open({ ...t, pin: 'not-the-pin' })));
    expect(err.code).toBe('KEYSTORE');
    expect(err.message).toBe(
      `the PIN does not log in to PKCS#11 token "${t.tokenLabel}": set RAMPART_KEYSTORE_PIN (or keystore.pkcs11.pinFile) to the token's user PIN`,
    );
    // And the right one still works afterwards.
    const store = await tracked(Pkcs11KeyStore.open(t));
    expect(await store.list()).toEqual([]);
  });

  it('refuses a wrong PIN also while another store of the process has the token logged in', async () => {
    const t = token();
    const first = await tracked(Pkcs11KeyStore.open(t));
    await expect(tracked(Pkcs11KeyStore.open({ ...t, pin: 'not-the-pin' }))).rejects.toThrow(
      /the PIN does not log in/,
    );
    // Two stores on one token: closing one leaves the other working.
    const second = await tracked(Pkcs11KeyStore.open(t));
    const key = await first.create('k', 'ec-p256');
    await second.close();
    const data = Buffer.from('still logged in');
    expect(cryptoVerify('sha256', data, key.publicKey, await key.sign(data))).toBe(true);
    expect((await first.list()).map((k) => k.label)).toEqual(['k']);
  });

  it('names the tokens that are there when the configured one is not', async () => {
    const a = token();
    const b = token();
    const err = await refusal(tracked(Pkcs11KeyStore.open({ ...a, tokenLabel: 'no-such-token' })));
    expect(err.message).toContain(`no token labelled "no-such-token" in PKCS#11 module ${a.module}`);
    expect(err.message).toContain(`"${a.tokenLabel}"`);
    expect(err.message).toContain(`"${b.tokenLabel}"`);
    expect(err.message).toContain('softhsm2-util --init-token');
  });

  it('says so when the module cannot be loaded', async () => {
    const t = token();
    const err = await refusal(tracked(Pkcs11KeyStore.open({ ...t, module: '/nonexistent/libpkcs11.so' })));
    expect(err.message).toContain('cannot load the PKCS#11 module /nonexistent/libpkcs11.so');
    expect(err.message).toContain('keystore.pkcs11.module');
  });

  it('keeps keys, creation times and exportability across close and reopen', async () => {
    const t = token();
    const store = await tracked(Pkcs11KeyStore.open(t));
    const a = await store.create('audit-checkpoint', 'ec-p256');
    await store.create('api-tls', 'ec-p256', { exportable: true });
    const listed = await store.list();
    await store.close();
    await store.close(); // idempotent
    await expect(a.sign(Buffer.from('x'))).rejects.toThrow('the PKCS#11 key store is closed');
    await expect(store.get('audit-checkpoint')).rejects.toThrow('the PKCS#11 key store is closed');

    const reopened = await tracked(Pkcs11KeyStore.open(t));
    expect(await reopened.list()).toEqual(listed);
    const key = (await reopened.get('audit-checkpoint'))!;
    expect(key.keyId).toBe(a.keyId);
    const data = Buffer.from('after reopening');
    expect(cryptoVerify('sha256', data, a.publicKey, await key.sign(data))).toBe(true);
  });

  it('generates keys on the token with the attributes that keep them there', async () => {
    const t = token();
    const store = await tracked(Pkcs11KeyStore.open(t));
    await store.create('audit-checkpoint', 'ec-p256');
    await store.create('api-tls', 'ec-p256', { exportable: true });
    rawSession(t, (lib, session) => {
      const read = (h: Buffer, type: number) => lib.C_GetAttributeValue(session, h, [{ type }])[0]!.value;
      const flag = (h: Buffer, type: number) => read(h, type)[0] === 1;
      for (const [label, exportable] of [
        ['audit-checkpoint', false],
        ['api-tls', true],
      ] as const) {
        const [priv] = findObjects(lib, session, pkcs11js.CKO_PRIVATE_KEY, label);
        const [pub] = findObjects(lib, session, pkcs11js.CKO_PUBLIC_KEY, label);
        const id = createHash('sha1').update(label).digest();
        expect(read(priv!, pkcs11js.CKA_ID)).toEqual(id);
        expect(read(pub!, pkcs11js.CKA_ID)).toEqual(id);
        expect(flag(priv!, pkcs11js.CKA_TOKEN)).toBe(true);
        expect(flag(priv!, pkcs11js.CKA_PRIVATE)).toBe(true);
        expect(flag(priv!, pkcs11js.CKA_SIGN)).toBe(true);
        expect(flag(priv!, pkcs11js.CKA_SENSITIVE)).toBe(!exportable);
        expect(flag(priv!, pkcs11js.CKA_EXTRACTABLE)).toBe(exportable);
        // Generated on the token, never seen outside it.
        expect(flag(priv!, pkcs11js.CKA_LOCAL)).toBe(true);
      }
      // The token itself refuses to reveal a non-exportable key, whatever Rampart's code does.
      const [priv] = findObjects(lib, session, pkcs11js.CKO_PRIVATE_KEY, 'audit-checkpoint');
      expect(() => read(priv!, pkcs11js.CKA_VALUE)).toThrow(/CKR_ATTRIBUTE_SENSITIVE/);
      // …and will not be talked into making it exportable.
      expect(() =>
        lib.C_SetAttributeValue(session, priv!, [{ type: pkcs11js.CKA_SENSITIVE, value: false }]),
      ).toThrow(/CKR_ATTRIBUTE_READ_ONLY/);
    });
    await expect(store.exportPrivateKey('audit-checkpoint')).rejects.toThrow('is not exportable');
  });

  it('refuses a key whose public key object was replaced by another key’s', async () => {
    const t = token();
    const store = await tracked(Pkcs11KeyStore.open(t));
    await store.create('alpha', 'ec-p256');
    await store.create('beta', 'ec-p256');
    rawSession(t, (lib, session) => {
      const [alphaPub] = findObjects(lib, session, pkcs11js.CKO_PUBLIC_KEY, 'alpha');
      const [betaPub] = findObjects(lib, session, pkcs11js.CKO_PUBLIC_KEY, 'beta');
      // EC_POINT is read-only: put a new public key object, holding beta's point, in alpha's place.
      const [point, params] = lib.C_GetAttributeValue(session, betaPub!, [
        { type: pkcs11js.CKA_EC_POINT },
        { type: pkcs11js.CKA_EC_PARAMS },
      ]);
      lib.C_DestroyObject(session, alphaPub!);
      lib.C_CreateObject(session, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
        { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC },
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_LABEL, value: 'alpha' },
        { type: pkcs11js.CKA_EC_PARAMS, value: params!.value },
        { type: pkcs11js.CKA_EC_POINT, value: point!.value },
      ]);
    });
    const reopened = await tracked(Pkcs11KeyStore.open(t));
    await expect(reopened.get('alpha')).rejects.toThrow(
      `key "alpha" on PKCS#11 token "${t.tokenLabel}": the public key does not belong to the private key`,
    );
    expect(await reopened.get('beta')).not.toBeNull();
  });
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
