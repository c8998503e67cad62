import { Type, type Static } from '@sinclair/typebox';

/**
 * Encrypted artifacts. The release repository stores and serves the ciphertext (AES-256-GCM under a
 * random content key), so TUF's length and hashes, and the chunk hashes, are those of the
 * ciphertext. What a device needs to decrypt and check the plaintext is signed with the target, in
 * `custom.rampart.encryption`; the content key itself reaches each device from the director,
 * wrapped to that device's key as a JWE (RFC 7516, compact serialization).
 */

/** The artifact cipher (node:crypto name). */
export const ARTIFACT_CIPHER = 'aes-256-gcm';
/** JWE key management algorithm of a wrapped content key: ECDH-ES with an ephemeral key, then AES key wrap. */
export const CONTENT_KEY_ALG = 'ECDH-ES+A256KW';
/** JWE content encryption of a wrapped content key. */
export const CONTENT_KEY_ENC = 'A256GCM';
/** Bytes of a content key (AES-256), of the IV (96 bits) and of the GCM tag. */
export const CONTENT_KEY_BYTES = 32;
export const ARTIFACT_IV_BYTES = 12;
export const ARTIFACT_TAG_BYTES = 16;

/** What is signed with an encrypted target: how to decrypt it, and what the plaintext must be. */
export const ArtifactEncryption = Type.Object(
  {
    algorithm: Type.Literal(ARTIFACT_CIPHER),
    iv: Type.String({
      pattern: '^[A-Za-z0-9_-]{16}$',
      description: 'The 96-bit GCM IV, base64url without padding.',
    }),
    tag: Type.String({
      pattern: '^[A-Za-z0-9_-]{22}$',
      description: 'The 128-bit GCM authentication tag, base64url without padding.',
    }),
    length: Type.Integer({ minimum: 0, description: 'Length of the plaintext in bytes.' }),
    sha256: Type.String({ pattern: '^[0-9a-f]{64}$', description: 'SHA-256 of the plaintext.' }),
  },
  {
    additionalProperties: false,
    description:
      'Set when the artifact is encrypted: the repository serves AES-256-GCM ciphertext; the device gets the content key from the director.',
  },
);
export type ArtifactEncryption = Static<typeof ArtifactEncryption>;
