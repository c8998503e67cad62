import type { KeyObject } from 'node:crypto';

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
