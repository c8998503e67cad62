import { createCipheriv, createHash, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { pipeline, Transform, type Readable } from 'node:stream';
import { CompactEncrypt, compactDecrypt } from 'jose';
import {
  ARTIFACT_CIPHER,
  ARTIFACT_IV_BYTES,
  CONTENT_KEY_ALG,
  CONTENT_KEY_BYTES,
  CONTENT_KEY_ENC,
  type ArtifactEncryption,
} from '@rampart/shared/updates';
import { RampartError } from '../../errors.js';
import { getOrCreateKey, type KeyStore } from '../../keystore/index.js';

/**
 * Key store label of the key-encryption key that protects content keys at rest. It is an EC P-256
 * key like the server's TLS key, created exportable because the server must do ECDH with it
 * in-process: in the file key store it is encrypted under the key store passphrase (scrypt,
 * AES-256-GCM), on a PKCS#11 token it is a token object.
 */
export const CONTENT_KEK_LABEL = 'update-content-kek';

/** JWE header member that binds a wrapped content key to the artifact (ciphertext SHA-256) it opens. */
const ARTIFACT_HEADER = 'rampart_artifact';

const b64u = (b: Buffer) => b.toString('base64url');

/** A stream being encrypted: the ciphertext, and once it has ended, what goes into the signed target. */
export interface EncryptingStream {
  ciphertext: Readable;
  contentKey: Buffer;
  /** Valid only after `ciphertext` has been read to its end. */
  metadata(): ArtifactEncryption;
}

/**
 * Encrypt a plaintext stream with AES-256-GCM under a fresh random 256-bit content key and 96-bit
 * IV, hashing the plaintext on the way. Nothing of the plaintext is written anywhere.
 */
export function encryptArtifact(plaintext: Readable): EncryptingStream {
  const contentKey = randomBytes(CONTENT_KEY_BYTES);
  const iv = randomBytes(ARTIFACT_IV_BYTES);
  const cipher = createCipheriv(ARTIFACT_CIPHER, contentKey, iv);
  const hash = createHash('sha256');
  let length = 0;
  let sha256: string | null = null;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      length += chunk.length;
      hash.update(chunk);
      done(null, chunk);
    },
    flush(done) {
      sha256 = hash.digest('hex');
      done();
    },
  });
  const ciphertext = pipeline(plaintext, tap, cipher, (err) => {
    if (err && !cipher.destroyed) cipher.destroy(err);
  });
  return {
    ciphertext,
    contentKey,
    metadata() {
      if (sha256 === null) throw new RampartError('INTERNAL', 'the artifact is not completely encrypted yet');
      return {
        algorithm: ARTIFACT_CIPHER,
        iv: b64u(iv),
        tag: b64u(cipher.getAuthTag()),
        length,
        sha256,
      };
    },
  };
}

/** Why a device key cannot receive a wrapped content key (ECDH-ES needs EC P-256 or P-384), or null. */
export function ecdhProblem(publicKey: KeyObject): string | null {
  const curve = publicKey.asymmetricKeyDetails?.namedCurve;
  if (publicKey.asymmetricKeyType === 'ec' && (curve === 'prime256v1' || curve === 'secp384r1')) return null;
  const what =
    publicKey.asymmetricKeyType === 'ec'
      ? `an EC key on ${curve ?? 'an unknown curve'}`
      : `a ${publicKey.asymmetricKeyType ?? 'unknown'} key`;
  return `its certificate holds ${what}; encrypted releases need an EC P-256 or P-384 device key (ECDH-ES)`;
}

/** The public key of a certificate in PEM. */
export function publicKeyOfCertificate(pem: string): KeyObject {
  return new X509Certificate(pem).publicKey;
}

/**
 * A content key wrapped to one device: JWE compact serialization, `ECDH-ES+A256KW` / `A256GCM`,
 * to the EC public key of the device's certificate. Only the holder of that device key can open it.
 */
export async function wrapForDevice(
  contentKey: Uint8Array,
  devicePublicKey: KeyObject,
  binding: { deviceId: string; sha256: string },
): Promise<string> {
  const problem = ecdhProblem(devicePublicKey);
  if (problem) throw new RampartError('CONFLICT', `device ${binding.deviceId}: ${problem}`);
  return new CompactEncrypt(contentKey)
    .setProtectedHeader({
      alg: CONTENT_KEY_ALG,
      enc: CONTENT_KEY_ENC,
      [ARTIFACT_HEADER]: binding.sha256,
      rampart_device: binding.deviceId,
    })
    .encrypt(devicePublicKey);
}

/**
 * Content keys at rest: each is kept as a JWE to the key store's content-key KEK
 * (`update-content-kek`), bound to its artifact's SHA-256, so the database never holds one in clear
 * and a wrapped key cannot be moved to another artifact unnoticed.
 */
export class ContentKeys {
  private kek: Promise<{ publicKey: KeyObject; privateKey: KeyObject }> | null = null;

  constructor(private readonly keys: KeyStore) {}

  /** The KEK, created on first use (one promise, so that concurrent first uses create it once). */
  private keyPair(): Promise<{ publicKey: KeyObject; privateKey: KeyObject }> {
    this.kek ??= (async () => {
      const key = await getOrCreateKey(this.keys, CONTENT_KEK_LABEL, 'ec-p256', { exportable: true });
      return { publicKey: key.publicKey, privateKey: await this.keys.exportPrivateKey(CONTENT_KEK_LABEL) };
    })();
    this.kek.catch(() => (this.kek = null));
    return this.kek;
  }

  /** Wrap a content key for storage, bound to the ciphertext's SHA-256. */
  async seal(contentKey: Uint8Array, sha256: string): Promise<string> {
    const { publicKey } = await this.keyPair();
    return new CompactEncrypt(contentKey)
      .setProtectedHeader({
        alg: CONTENT_KEY_ALG,
        enc: CONTENT_KEY_ENC,
        kid: CONTENT_KEK_LABEL,
        [ARTIFACT_HEADER]: sha256,
      })
      .encrypt(publicKey);
  }

  /** Unwrap a stored content key; refused when it does not open or belongs to another artifact. */
  async open(wrapped: string, sha256: string): Promise<Buffer> {
    const { privateKey } = await this.keyPair();
    let out: Awaited<ReturnType<typeof compactDecrypt>>;
    try {
      out = await compactDecrypt(wrapped, privateKey, {
        keyManagementAlgorithms: [CONTENT_KEY_ALG],
        contentEncryptionAlgorithms: [CONTENT_KEY_ENC],
      });
    } catch (err) {
      throw new RampartError(
        'KEYSTORE',
        `the content key of artifact ${sha256} does not open with key "${CONTENT_KEK_LABEL}" of the key store: it was altered or sealed by another key store`,
        [],
        { cause: err },
      );
    }
    if (out.protectedHeader[ARTIFACT_HEADER] !== sha256 || out.plaintext.length !== CONTENT_KEY_BYTES)
      throw new RampartError(
        'KEYSTORE',
        `the stored content key of artifact ${sha256} belongs to another artifact: the database was altered`,
      );
    return Buffer.from(out.plaintext);
  }
}
