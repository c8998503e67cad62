import type { KeyObject } from 'node:crypto';
import { CompactEncrypt } from 'jose';
import { CONTENT_KEY_ALG, CONTENT_KEY_ENC } from '@rampart/shared/updates';

/**
 * A content key wrapped to a device key as the director wraps it (the server's `wrapForDevice`:
 * jose, `ECDH-ES+A256KW` / `A256GCM`, with its artifact and device header members).
 */
export function wrapLikeDirector(contentKey: Uint8Array, key: KeyObject, deviceId: string): Promise<string> {
  return new CompactEncrypt(contentKey)
    .setProtectedHeader({
      alg: CONTENT_KEY_ALG,
      enc: CONTENT_KEY_ENC,
      rampart_artifact: 'ab'.repeat(32),
      rampart_device: deviceId,
    })
    .encrypt(key);
}
