import { createHash, createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';

/** A signed statement by the platform: "the first `entryCount` entries end in `headHash`". */
export const AuditCheckpoint = Type.Object(
  {
    id: Type.Integer(),
    entryCount: Type.Integer({ minimum: 0 }),
    headHash: Type.String(),
    time: Type.String(),
    keyId: Type.String({ description: "SHA-256 (hex) of the signing key's SubjectPublicKeyInfo." }),
    algorithm: Type.String({ description: 'Signature algorithm, e.g. `ecdsa-p256-sha256`.' }),
    signature: Type.String({ description: 'Base64 signature over the checkpoint message.' }),
  },
  { $id: 'AuditCheckpoint' },
);
export type AuditCheckpoint = Static<typeof AuditCheckpoint>;

/** The exact bytes a checkpoint signature covers. */
export function checkpointMessage(c: { entryCount: number; headHash: string; time: string }): Buffer {
  return Buffer.from(`rampart-audit-checkpoint-v1\n${c.entryCount}\n${c.headHash}\n${c.time}\n`, 'utf8');
}

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex');
}

export function publicKeyFromPem(pem: string): KeyObject {
  return createPublicKey({ key: pem, format: 'pem' });
}

/** Hash algorithm for each supported checkpoint signature algorithm (null = the key type decides, as for Ed25519). */
const DIGEST: Record<string, string | null> = {
  'ecdsa-p256-sha256': 'sha256',
  'ecdsa-p384-sha384': 'sha384',
  'rsa-pkcs1-sha256': 'sha256',
  ed25519: null,
};

export function verifyCheckpointSignature(c: AuditCheckpoint, publicKey: KeyObject): boolean {
  if (!(c.algorithm in DIGEST)) return false;
  try {
    return verifySignature(
      DIGEST[c.algorithm] ?? null,
      checkpointMessage(c),
      publicKey,
      Buffer.from(c.signature, 'base64'),
    );
  } catch {
    return false;
  }
}
