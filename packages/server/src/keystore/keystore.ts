import type { KeyObject } from 'node:crypto';
import { RampartError } from '../errors.js';

/**
 * One small interface for every platform signing key (the audit-checkpoint key now; CA, OCSP and
 * update-signing keys later). Signing code receives a `PlatformKey` and never learns which backend holds it.
 */
export type KeyAlgorithm = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'ed25519';

export interface PlatformKey {
  readonly label: string;
  readonly algorithm: KeyAlgorithm;
  readonly publicKey: KeyObject;
  /** SHA-256 (hex) of the public key's SubjectPublicKeyInfo. */
  readonly keyId: string;
  /** Name of the signature scheme `sign` produces, e.g. `ecdsa-p256-sha256`. */
  readonly signatureAlgorithm: string;
  /** Sign `data`; ECDSA signatures are DER-encoded. */
  sign(data: Uint8Array): Promise<Buffer>;
}

export interface KeyInfo {
  label: string;
  algorithm: KeyAlgorithm;
  keyId: string;
  createdAt: string;
  exportable: boolean;
}

export interface KeyStore {
  /** `file` or `pkcs11`. */
  readonly backend: string;
  get(label: string): Promise<PlatformKey | null>;
  create(label: string, algorithm: KeyAlgorithm, options?: { exportable?: boolean }): Promise<PlatformKey>;
  list(): Promise<KeyInfo[]>;
  /**
   * Private key material for in-process consumers that cannot work through `sign` (Node's TLS stack).
   * Only keys created `exportable` can be exported; CA and checkpoint keys never are.
   */
  exportPrivateKey(label: string): Promise<KeyObject>;
  /**
   * Bring an existing private key into the store under `label` (e.g. an exported offline root key,
   * for a rollover). Refused when the label is taken or the key is not of `algorithm`.
   */
  importPrivateKey(
    label: string,
    algorithm: KeyAlgorithm,
    privateKey: KeyObject,
    options?: { exportable?: boolean },
  ): Promise<PlatformKey>;
  /** Remove the key labelled `label`; false when there was none. */
  delete(label: string): Promise<boolean>;
  /**
   * Release the backend: the PKCS#11 session and login (nothing for files). The keys of a closed
   * PKCS#11 store cannot sign.
   */
  close?(): Promise<void>;
}

/** Key labels: short, lower case, and safe as a file name. Both backends accept exactly these. */
export const KEY_LABEL = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function assertKeyLabel(label: string): void {
  if (!KEY_LABEL.test(label)) throw new RampartError('KEYSTORE', `invalid key label "${label}"`);
}

/** The algorithm of a private or public key object, or null for one the key store does not use. */
export function algorithmOf(key: KeyObject): KeyAlgorithm | null {
  const details = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case 'ec':
      if (details?.namedCurve === 'prime256v1') return 'ec-p256';
      if (details?.namedCurve === 'secp384r1') return 'ec-p384';
      return null;
    case 'rsa':
      if (details?.modulusLength === 2048) return 'rsa-2048';
      if (details?.modulusLength === 3072) return 'rsa-3072';
      return null;
    case 'ed25519':
      return 'ed25519';
    default:
      return null;
  }
}

/** Refuse a key to import that is not a private key of `algorithm`. */
export function assertImportable(privateKey: KeyObject, algorithm: KeyAlgorithm): void {
  if (privateKey.type !== 'private') {
    throw new RampartError('KEYSTORE', `only a private key can be imported, not a ${privateKey.type} key`);
  }
  const actual = algorithmOf(privateKey);
  if (actual !== algorithm) {
    throw new RampartError(
      'KEYSTORE',
      `the key to import is ${actual ?? `a ${privateKey.asymmetricKeyType ?? 'unknown'} key the key store does not support`}, not ${algorithm}`,
    );
  }
}

export async function getOrCreateKey(
  store: KeyStore,
  label: string,
  algorithm: KeyAlgorithm,
  options: { exportable?: boolean } = {},
): Promise<PlatformKey> {
  return (await store.get(label)) ?? store.create(label, algorithm, options);
}

export const SIGNATURE_ALGORITHM: Record<KeyAlgorithm, { name: string; digest: string | null }> = {
  'ec-p256': { name: 'ecdsa-p256-sha256', digest: 'sha256' },
  'ec-p384': { name: 'ecdsa-p384-sha384', digest: 'sha384' },
  'rsa-2048': { name: 'rsa-pkcs1-sha256', digest: 'sha256' },
  'rsa-3072': { name: 'rsa-pkcs1-sha256', digest: 'sha256' },
  ed25519: { name: 'ed25519', digest: null },
};
