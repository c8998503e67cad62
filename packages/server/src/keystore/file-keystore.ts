import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  scrypt as scryptCb,
  sign as cryptoSign,
  timingSafeEqual,
  type KeyObject,
  type ScryptOptions,
} from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { keyIdOf } from '@rampart/shared/audit';
import { RampartError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import { isoNow } from '../time.js';
import {
  SIGNATURE_ALGORITHM,
  assertImportable,
  assertKeyLabel,
  type KeyAlgorithm,
  type KeyInfo,
  type KeyStore,
  type PlatformKey,
} from './keystore.js';

/**
 * Keys encrypted at rest in a directory: AES-256-GCM under a key-encryption key derived from a
 * passphrase with scrypt. Each key file binds its label and algorithm as additional authenticated
 * data, so files cannot be swapped or relabelled unnoticed.
 */

const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

interface StoreMeta {
  version: 1;
  kdf: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: string;
  /** Encryption of a fixed string, to tell a wrong passphrase from a damaged key file. */
  check: Sealed;
}

interface Sealed {
  iv: string;
  tag: string;
  data: string;
}

interface KeyFile {
  version: 1;
  label: string;
  algorithm: KeyAlgorithm;
  createdAt: string;
  exportable: boolean;
  publicKey: string;
  privateKey: Sealed;
}

function scrypt(pass: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((res, rej) => scryptCb(pass, salt, 32, opts, (err, key) => (err ? rej(err) : res(key))));
}

function seal(kek: Buffer, plaintext: Buffer, aad: string): Sealed {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', kek, iv);
  c.setAAD(Buffer.from(aad));
  const data = Buffer.concat([c.update(plaintext), c.final()]);
  return { iv: iv.toString('base64'), tag: c.getAuthTag().toString('base64'), data: data.toString('base64') };
}

function open(kek: Buffer, s: Sealed, aad: string): Buffer {
  const d = createDecipheriv('aes-256-gcm', kek, Buffer.from(s.iv, 'base64'));
  d.setAAD(Buffer.from(aad));
  d.setAuthTag(Buffer.from(s.tag, 'base64'));
  return Buffer.concat([d.update(Buffer.from(s.data, 'base64')), d.final()]);
}

function generate(algorithm: KeyAlgorithm): KeyObject {
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

class FilePlatformKey implements PlatformKey {
  readonly keyId: string;
  readonly signatureAlgorithm: string;
  constructor(
    readonly label: string,
    readonly algorithm: KeyAlgorithm,
    readonly publicKey: KeyObject,
    private readonly privateKey: KeyObject,
  ) {
    this.keyId = keyIdOf(publicKey);
    this.signatureAlgorithm = SIGNATURE_ALGORITHM[algorithm].name;
  }

  async sign(data: Uint8Array): Promise<Buffer> {
    return cryptoSign(SIGNATURE_ALGORITHM[this.algorithm].digest, data, this.privateKey);
  }
}

export class FileKeyStore implements KeyStore {
  readonly backend = 'file';
  private readonly cache = new Map<string, FilePlatformKey>();

  private constructor(
    private readonly dir: string,
    private readonly kek: Buffer,
  ) {}

  /** Open (or initialise) the store in `dir`. A wrong passphrase is reported, never guessed around. */
  static async open(dir: string, passphrase: string): Promise<FileKeyStore> {
    if (passphrase.length < 12) {
      throw new RampartError('KEYSTORE', 'the key store passphrase must be at least 12 characters long');
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const metaPath = join(dir, 'keystore.json');
    if (!existsSync(metaPath)) {
      const salt = randomBytes(16);
      const kek = await scrypt(passphrase, salt, SCRYPT);
      const meta: StoreMeta = {
        version: 1,
        kdf: 'scrypt',
        N: SCRYPT.N,
        r: SCRYPT.r,
        p: SCRYPT.p,
        salt: salt.toString('base64'),
        check: seal(kek, Buffer.from('rampart-keystore'), 'check'),
      };
      writeFileAtomic(metaPath, JSON.stringify(meta, null, 2), 0o600);
      return new FileKeyStore(dir, kek);
    }
    const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as StoreMeta;
    const kek = await scrypt(passphrase, Buffer.from(meta.salt, 'base64'), {
      N: meta.N,
      r: meta.r,
      p: meta.p,
      maxmem: SCRYPT.maxmem,
    });
    try {
      const check = open(kek, meta.check, 'check');
      if (!timingSafeEqual(check, Buffer.from('rampart-keystore'))) throw new Error('mismatch');
    } catch {
      throw new RampartError(
        'KEYSTORE',
        `the key store passphrase does not open ${dir}: set RAMPART_KEYSTORE_PASSPHRASE (or keystore.passphraseFile) to the passphrase it was created with`,
      );
    }
    return new FileKeyStore(dir, kek);
  }

  private pathOf(label: string): string {
    assertKeyLabel(label);
    return join(this.dir, `${label}.key.json`);
  }

  private load(label: string): { file: KeyFile; key: FilePlatformKey } | null {
    const path = this.pathOf(label);
    if (!existsSync(path)) return null;
    const file = JSON.parse(readFileSync(path, 'utf8')) as KeyFile;
    if (file.label !== label)
      throw new RampartError('KEYSTORE', `key file ${path} holds key "${file.label}", not "${label}"`);
    let der: Buffer;
    try {
      der = open(this.kek, file.privateKey, `${file.label}\n${file.algorithm}\n${file.exportable}`);
    } catch {
      throw new RampartError(
        'KEYSTORE',
        `key file ${path} cannot be decrypted: it was altered or belongs to another key store`,
      );
    }
    const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    const publicKey = createPublicKey(privateKey);
    if (publicKey.export({ format: 'pem', type: 'spki' }) !== file.publicKey) {
      throw new RampartError(
        'KEYSTORE',
        `key file ${path}: the public key does not belong to the private key`,
      );
    }
    return { file, key: new FilePlatformKey(label, file.algorithm, publicKey, privateKey) };
  }

  async get(label: string): Promise<PlatformKey | null> {
    const cached = this.cache.get(label);
    if (cached) return cached;
    const loaded = this.load(label);
    if (!loaded) return null;
    this.cache.set(label, loaded.key);
    return loaded.key;
  }

  async create(
    label: string,
    algorithm: KeyAlgorithm,
    options: { exportable?: boolean } = {},
  ): Promise<PlatformKey> {
    this.refuseExisting(label);
    return this.store(label, algorithm, generate(algorithm), options);
  }

  async importPrivateKey(
    label: string,
    algorithm: KeyAlgorithm,
    privateKey: KeyObject,
    options: { exportable?: boolean } = {},
  ): Promise<PlatformKey> {
    this.refuseExisting(label);
    assertImportable(privateKey, algorithm);
    return this.store(label, algorithm, privateKey, options);
  }

  /** Unlinking the key file is the whole deletion, so it is atomic: the key is there or it is not. */
  async delete(label: string): Promise<boolean> {
    const path = this.pathOf(label);
    this.cache.delete(label);
    if (!existsSync(path)) return false;
    rmSync(path);
    return true;
  }

  /** Nothing to release: every operation opens and closes its own files. */
  async close(): Promise<void> {}

  private refuseExisting(label: string): void {
    if (existsSync(this.pathOf(label)))
      throw new RampartError('KEYSTORE', `a key labelled "${label}" already exists`);
  }

  private store(
    label: string,
    algorithm: KeyAlgorithm,
    privateKey: KeyObject,
    options: { exportable?: boolean },
  ): PlatformKey {
    const path = this.pathOf(label);
    const publicKey = createPublicKey(privateKey);
    const exportable = options.exportable ?? false;
    const der = privateKey.export({ format: 'der', type: 'pkcs8' });
    const file: KeyFile = {
      version: 1,
      label,
      algorithm,
      createdAt: isoNow(),
      exportable,
      publicKey: publicKey.export({ format: 'pem', type: 'spki' }) as string,
      privateKey: seal(this.kek, der, `${label}\n${algorithm}\n${exportable}`),
    };
    writeFileAtomic(path, JSON.stringify(file, null, 2), 0o600);
    const key = new FilePlatformKey(label, algorithm, publicKey, privateKey);
    this.cache.set(label, key);
    return key;
  }

  async list(): Promise<KeyInfo[]> {
    return readdirSync(this.dir)
      .filter((f) => f.endsWith('.key.json'))
      .map((f) => {
        const file = JSON.parse(readFileSync(join(this.dir, f), 'utf8')) as KeyFile;
        return {
          label: file.label,
          algorithm: file.algorithm,
          keyId: keyIdOf(createPublicKey(file.publicKey)),
          createdAt: file.createdAt,
          exportable: file.exportable,
        };
      });
  }

  async exportPrivateKey(label: string): Promise<KeyObject> {
    const loaded = this.load(label);
    if (!loaded) throw new RampartError('KEYSTORE', `no key labelled "${label}"`);
    if (!loaded.file.exportable) throw new RampartError('KEYSTORE', `key "${label}" is not exportable`);
    return createPrivateKey({
      key: open(this.kek, loaded.file.privateKey, `${label}\n${loaded.file.algorithm}\ntrue`),
      format: 'der',
      type: 'pkcs8',
    });
  }
}
