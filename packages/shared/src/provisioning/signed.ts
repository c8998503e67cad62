import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { canonicalJson } from '../audit/canonical.js';

/**
 * Signed JSON documents: batch manifests (signed by a factory station) and provisioning
 * transcripts (signed by the platform). The signature covers the RFC 8785-style canonical form of
 * the document without its `signature` member, so that anyone can check it with nothing but the
 * signer's public key, and any edit — a changed value, an added or removed member — breaks it.
 */
export interface DocumentSignature {
  /** `ecdsa-p256-sha256` (DER signature) — the one scheme stations and the platform use. */
  algorithm: 'ecdsa-p256-sha256';
  /** SHA-256 (hex) of the signer's SubjectPublicKeyInfo. */
  keyId: string;
  /** Base64 DER ECDSA signature. */
  value: string;
}

export type Signed<T> = T & { signature: DocumentSignature };

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex');
}

/** The bytes a signature covers: the canonical JSON of the document without `signature`. */
export function signingBytes(document: object): Buffer {
  const { signature: _omit, ...rest } = document as Record<string, unknown>;
  return Buffer.from(canonicalJson(rest), 'utf8');
}

/** SHA-256 (hex) of a document's signed bytes: its stable digest. */
export function documentDigest(document: object): string {
  return createHash('sha256').update(signingBytes(document)).digest('hex');
}

export async function signDocument<T extends object>(
  document: T,
  signer: { publicKey: KeyObject; sign(data: Uint8Array): Promise<Buffer> },
): Promise<Signed<T>> {
  const value = await signer.sign(signingBytes(document));
  return {
    ...document,
    signature: {
      algorithm: 'ecdsa-p256-sha256',
      keyId: keyIdOf(signer.publicKey),
      value: value.toString('base64'),
    },
  };
}

/**
 * Why `document`'s signature does not verify with `publicKey`, or null when it does. The key id
 * must name that key: a document signed by another key is reported as such, not as "edited".
 * `spkiDer`, when the caller has the key's SubjectPublicKeyInfo encoding at hand (from a
 * certificate), gives the key id without exporting the key, which costs more than the verification.
 */
export function signatureProblem(
  document: unknown,
  publicKey: KeyObject | string,
  spkiDer?: Uint8Array,
): string | null {
  if (typeof document !== 'object' || document === null || Array.isArray(document))
    return 'the document is not a JSON object';
  const sig = (document as { signature?: unknown }).signature as Partial<DocumentSignature> | undefined;
  if (!sig || typeof sig !== 'object') return 'the document has no signature';
  if (sig.algorithm !== 'ecdsa-p256-sha256')
    return `the signature algorithm is ${JSON.stringify(sig.algorithm)}, not ecdsa-p256-sha256`;
  if (typeof sig.value !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(sig.value))
    return 'the signature value is not base64';
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  const expectedId = spkiDer ? createHash('sha256').update(spkiDer).digest('hex') : keyIdOf(key);
  if (sig.keyId !== expectedId)
    return `the document was signed by key ${String(sig.keyId).slice(0, 16)}…, not by the expected key ${expectedId.slice(0, 16)}…`;
  let ok: boolean;
  try {
    ok = verify('sha256', signingBytes(document), key, Buffer.from(sig.value, 'base64'));
  } catch {
    ok = false;
  }
  return ok ? null : 'the signature does not match the content: the document was changed after it was signed';
}
