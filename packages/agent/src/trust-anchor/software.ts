import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { compactDecrypt } from 'jose';
import { CONTENT_KEY_ALG, CONTENT_KEY_ENC } from '@rampart/shared/updates';
import { AgentError } from '../errors.js';
import type { TrustAnchor } from './trust-anchor.js';

/**
 * The software trust anchor: an ECDSA P-256 key in a file readable only by the agent (mode 0600).
 * It is labelled weaker everywhere, because anyone with root on the device can copy the key.
 */
export class SoftwareTrustAnchor implements TrustAnchor {
  readonly kind = 'software';
  readonly strength = 'software (weaker: the key is a file on the device)' as const;
  private key: KeyObject | null = null;

  constructor(private readonly keyPath: string) {}

  private load(): KeyObject | null {
    if (this.key) return this.key;
    if (!existsSync(this.keyPath)) return null;
    const mode = statSync(this.keyPath).mode & 0o077;
    if (mode !== 0) {
      throw new AgentError(
        'KEY_FILE_INSECURE',
        `device key ${this.keyPath} is readable by other users; run: chmod 600 ${this.keyPath}`,
      );
    }
    this.key = createPrivateKey(readFileSync(this.keyPath));
    return this.key;
  }

  async ensureKey(): Promise<KeyObject> {
    const existing = this.load();
    if (existing) return createPublicKey(existing);
    mkdirSync(dirname(this.keyPath), { recursive: true, mode: 0o700 });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(this.keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), {
      mode: 0o600,
      flag: 'wx',
    });
    this.key = privateKey;
    return createPublicKey(privateKey);
  }

  async publicKey(): Promise<KeyObject | null> {
    const k = this.load();
    return k ? createPublicKey(k) : null;
  }

  /** The key file's key, for mutual TLS; null before `ensureKey`. */
  async tlsKey(): Promise<KeyObject | null> {
    return this.load();
  }

  /** Open a JWE encrypted to the device key (ECDH-ES+A256KW / A256GCM only); throws when it does not open. */
  async unwrapKey(jwe: string): Promise<Uint8Array> {
    const k = this.load();
    if (!k)
      throw new AgentError(
        'TRUST_ANCHOR',
        'the device has no identity key yet; run: rampart-agent identity init',
      );
    const { plaintext } = await compactDecrypt(jwe, k, {
      keyManagementAlgorithms: [CONTENT_KEY_ALG],
      contentEncryptionAlgorithms: [CONTENT_KEY_ENC],
    });
    return plaintext;
  }

  async sign(data: Uint8Array): Promise<Buffer> {
    const k = this.load();
    if (!k)
      throw new AgentError(
        'TRUST_ANCHOR',
        'the device has no identity key yet; run: rampart-agent identity init',
      );
    return sign('sha256', data, k);
  }
}
