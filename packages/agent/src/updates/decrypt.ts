import { createDecipheriv, createHash } from 'node:crypto';
import { createReadStream, createWriteStream, rmSync } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  ARTIFACT_CIPHER,
  ARTIFACT_TAG_BYTES,
  CONTENT_KEY_BYTES,
  type ArtifactEncryption,
} from '@rampart/shared/updates';
import { AgentError } from '../errors.js';
import { isJweRefusal } from '../trust-anchor/jwe-ecdh.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';

/** Refuse the update: logs `update.refused` and throws UPDATE_REFUSED (the update client's `refuse`). */
export type Refuse = (reason: string, details?: Record<string, unknown>) => never;

/**
 * Encrypted releases on the device. The release repository signs the ciphertext (TUF hashes and
 * chunk hashes) and, in `custom.rampart.encryption`, the IV, the GCM tag and the plaintext's length
 * and SHA-256; the director hands this device the content key wrapped to its own key (a JWE). The
 * ciphertext is verified like any download first; only then is the key unwrapped in the trust
 * anchor and the artifact decrypted, and the plaintext is installed only when the tag and the signed
 * length and SHA-256 all match.
 */

/**
 * The wrapped content key the director sent for an encrypted target, refusing before anything is
 * downloaded when this device cannot open it at all (an anchor without `unwrapKey`, no key sent).
 * The software, TPM and PKCS#11 anchors all have `unwrapKey`; a hardware key created before it
 * existed is refused by the anchor itself when the key is unwrapped (see decryptArtifact).
 */
export function wrappedContentKey(
  anchor: Pick<TrustAnchor, 'kind' | 'unwrapKey'> | undefined,
  target: string,
  directorCustom: unknown,
  refuse: Refuse,
): string {
  if (!anchor?.unwrapKey)
    refuse(
      `${target} is encrypted, and the ${anchor?.kind ?? 'configured'} trust anchor cannot unwrap content keys; ` +
        'publish an unencrypted release for this device, or use a trust anchor that can (software, TPM 2.0, PKCS#11)',
      { target, anchor: anchor?.kind ?? null },
    );
  const wrapped = (directorCustom as { contentKey?: unknown } | undefined)?.contentKey;
  if (typeof wrapped !== 'string' || wrapped.length === 0 || wrapped.length > 4096)
    refuse(`${target} is encrypted, and the director's metadata carries no content key for this device`, {
      target,
    });
  return wrapped;
}

/**
 * Decrypt a verified ciphertext file to `destination` (mode 0600), streaming. Refuses — removing
 * whatever was written — when the key does not unwrap with this device's key, the GCM tag does not
 * authenticate, or the plaintext's length or SHA-256 is not the signed one.
 */
export async function decryptArtifact(opts: {
  anchor: Pick<TrustAnchor, 'unwrapKey'>;
  target: string;
  ciphertext: string;
  destination: string;
  encryption: ArtifactEncryption;
  wrappedKey: string;
  refuse: Refuse;
}): Promise<void> {
  const { target, encryption, refuse } = opts;
  const key = await opts.anchor.unwrapKey!(opts.wrappedKey).catch((err: unknown) => {
    // The anchor could not do its part (a hardware key created before it could unwrap, no key, the
    // TPM or token not answering): said as it is, not as a key meant for another device.
    if (err instanceof AgentError && err.code === 'TRUST_ANCHOR' && !isJweRefusal(err))
      refuse(`the content key for ${target} cannot be unwrapped on this device: ${err.message}`, { target });
    return refuse(
      `the content key for ${target} does not open with this device's key (${(err as Error).message}): it was wrapped for another device or altered`,
      { target },
    );
  });
  const iv = Buffer.from(encryption.iv, 'base64url');
  const tag = Buffer.from(encryption.tag, 'base64url');
  if (key.length !== CONTENT_KEY_BYTES || iv.length !== 12 || tag.length !== ARTIFACT_TAG_BYTES)
    refuse(`the encryption parameters of ${target} are malformed (key, IV or tag length)`, { target });
  const hash = createHash('sha256');
  let length = 0;
  const measure = new Transform({
    transform(chunk: Buffer, _enc, done) {
      length += chunk.length;
      // GCM keeps the length: more plaintext than signed is refused before it is written.
      if (length > encryption.length) done(new Error(`longer than the signed ${encryption.length} bytes`));
      else {
        hash.update(chunk);
        done(null, chunk);
      }
    },
  });
  const decipher = createDecipheriv(ARTIFACT_CIPHER, key, iv);
  decipher.setAuthTag(tag);
  try {
    await pipeline(
      createReadStream(opts.ciphertext),
      decipher,
      measure,
      createWriteStream(opts.destination, { mode: 0o600 }),
    );
  } catch (err) {
    rmSync(opts.destination, { force: true });
    refuse(
      `${target} does not decrypt with its content key (${(err as Error).message}): the key is not this release's, or the ciphertext or its metadata was altered`,
      { target },
    );
  } finally {
    key.fill(0);
  }
  const sha256 = hash.digest('hex');
  if (length !== encryption.length || sha256 !== encryption.sha256) {
    rmSync(opts.destination, { force: true });
    refuse(
      `the decrypted ${target} is ${length} bytes with SHA-256 ${sha256}, not the signed ${encryption.length} bytes with ${encryption.sha256}`,
      { target },
    );
  }
}
