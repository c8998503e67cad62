import { createDecipheriv, createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { CONTENT_KEY_ALG, CONTENT_KEY_ENC } from '@rampart/shared/updates';
import { AgentError } from '../errors.js';

/**
 * Opening a JWE (RFC 7516, compact serialization) encrypted to the device key with
 * `ECDH-ES+A256KW` / `A256GCM`, when the ECDH itself happens in a hardware trust anchor (a TPM, a
 * PKCS#11 token): the anchor computes the shared secret Z from the sender's ephemeral public key,
 * and everything after it is done here — the Concat KDF of RFC 7518 §4.6.2, the AES-256 key unwrap
 * of RFC 3394 (§4.4), and the A256GCM decryption with the protected header as additional data
 * (RFC 7516 §5.2, RFC 7518 §5.3).
 *
 * Written by hand because jose cannot delegate the ECDH to a key it does not hold: its
 * compactDecrypt wants the private key itself, which never leaves the TPM or the token. Only these
 * two algorithms and curve P-256 are accepted; anything else is refused before the anchor is asked.
 */

/** The ECDH in the anchor: Z, the x coordinate of d·P, 32 bytes on P-256, for the peer's public key P. */
export type ZGen = (ephemeralPublicKey: KeyObject) => Promise<Buffer>;

const PART = /^[A-Za-z0-9_-]*$/;
/** Header parameters that would change how the JWE is processed, and that this code does not implement. */
const UNSUPPORTED = ['crit', 'zip', 'jku', 'jwk', 'x5u', 'x5c', 'x5t', 'x5t#S256', 'p2s', 'p2c', 'iv', 'tag'];
const A256KW_IV = Buffer.from('a6a6a6a6a6a6a6a6', 'hex');
const P256_COORDINATE = 32;

/** The errors that say the JWE itself is wrong (not the anchor), for isJweRefusal. */
const refusals = new WeakSet<Error>();

function refused(what: string): AgentError {
  const err = new AgentError('TRUST_ANCHOR', `the JWE cannot be opened: ${what}`);
  refusals.add(err);
  return err;
}

/**
 * Whether openEcdhEsJwe threw `err` because of the JWE (malformed, other algorithms, made for
 * another key, altered), rather than because the anchor could not do the ECDH (an older key, a TPM
 * or token that does not answer).
 */
export function isJweRefusal(err: unknown): boolean {
  return err instanceof Error && refusals.has(err);
}

function b64u(part: string, what: string): Buffer {
  if (!PART.test(part) || part.length % 4 === 1) throw refused(`its ${what} is not base64url`);
  return Buffer.from(part, 'base64url');
}

function lengthPrefixed(data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  return Buffer.concat([len, data]);
}

/**
 * Concat KDF (NIST SP 800-56A §5.8.1, as RFC 7518 §4.6.2 uses it) with SHA-256 for a 256-bit key:
 * one round, SHA-256(counter 1 ‖ Z ‖ AlgorithmID ‖ PartyUInfo ‖ PartyVInfo ‖ SuppPubInfo).
 */
export function concatKdf(z: Buffer, alg: string, apu: Buffer, apv: Buffer): Buffer {
  const keyDataLen = Buffer.alloc(4);
  keyDataLen.writeUInt32BE(256);
  return createHash('sha256')
    .update(Buffer.from([0, 0, 0, 1]))
    .update(z)
    .update(lengthPrefixed(Buffer.from(alg, 'ascii')))
    .update(lengthPrefixed(apu))
    .update(lengthPrefixed(apv))
    .update(keyDataLen)
    .digest();
}

/** The ephemeral public key of the header (`epk`): an EC P-256 public JWK whose point is on the curve. */
function ephemeralKey(epk: unknown): KeyObject {
  if (typeof epk !== 'object' || epk === null || Array.isArray(epk))
    throw refused('its header has no ephemeral public key (epk)');
  const jwk = epk as Record<string, unknown>;
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256')
    throw refused(`its ephemeral key is ${String(jwk.kty)} ${String(jwk.crv)}, not EC P-256`);
  if ('d' in jwk) throw refused('its ephemeral key carries a private part');
  if (typeof jwk.x !== 'string' || typeof jwk.y !== 'string')
    throw refused('its ephemeral key has no x and y coordinates');
  if (
    b64u(jwk.x, 'ephemeral key').length !== P256_COORDINATE ||
    b64u(jwk.y, 'ephemeral key').length !== P256_COORDINATE
  )
    throw refused('the coordinates of its ephemeral key are not 32 bytes each');
  try {
    // Importing checks that the point is on the curve (an invalid-curve point is refused here).
    return createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, format: 'jwk' });
  } catch {
    throw refused('its ephemeral key is not a point on P-256');
  }
}

/**
 * Open `jwe` with `zgen` doing the ECDH in the anchor; resolves with the plaintext. Throws
 * TRUST_ANCHOR when the JWE is malformed, uses other algorithms, was made for another key, or was
 * altered (the key unwrap's integrity check or the GCM tag fails).
 */
export async function openEcdhEsJwe(jwe: string, zgen: ZGen): Promise<Buffer> {
  if (typeof jwe !== 'string') throw refused('it is not a string');
  const parts = jwe.split('.');
  if (parts.length !== 5) throw refused('it is not a JWE in compact serialization (five parts)');
  const [protectedB64, encryptedKeyB64, ivB64, ciphertextB64, tagB64] = parts as [
    string,
    string,
    string,
    string,
    string,
  ];
  let header: unknown;
  try {
    header = JSON.parse(b64u(protectedB64, 'protected header').toString('utf8'));
  } catch (err) {
    if (err instanceof AgentError) throw err;
    throw refused('its protected header is not JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header))
    throw refused('its protected header is not a JSON object');
  const h = header as Record<string, unknown>;
  if (h.alg !== CONTENT_KEY_ALG)
    throw refused(`its key management algorithm is ${JSON.stringify(h.alg)}, not ${CONTENT_KEY_ALG}`);
  if (h.enc !== CONTENT_KEY_ENC)
    throw refused(`its content encryption is ${JSON.stringify(h.enc)}, not ${CONTENT_KEY_ENC}`);
  const unsupported = UNSUPPORTED.filter((name) => name in h);
  if (unsupported.length > 0)
    throw refused(`its header has ${unsupported.join(', ')}, which is not supported`);
  for (const name of ['apu', 'apv'] as const)
    if (name in h && typeof h[name] !== 'string') throw refused(`its ${name} is not a string`);
  const apu = typeof h.apu === 'string' ? b64u(h.apu, 'apu') : Buffer.alloc(0);
  const apv = typeof h.apv === 'string' ? b64u(h.apv, 'apv') : Buffer.alloc(0);
  const epk = ephemeralKey(h.epk);

  const encryptedKey = b64u(encryptedKeyB64, 'encrypted key');
  const iv = b64u(ivB64, 'IV');
  const ciphertext = b64u(ciphertextB64, 'ciphertext');
  const tag = b64u(tagB64, 'authentication tag');
  // A 256-bit content key wrapped with AES key wrap is 40 bytes; GCM takes a 96-bit IV and a 128-bit tag here.
  if (encryptedKey.length !== 40) throw refused(`its encrypted key is ${encryptedKey.length} bytes, not 40`);
  if (iv.length !== 12) throw refused(`its IV is ${iv.length} bytes, not 12`);
  if (tag.length !== 16) throw refused(`its authentication tag is ${tag.length} bytes, not 16`);

  const z = await zgen(epk);
  if (!Buffer.isBuffer(z) || z.length !== P256_COORDINATE) {
    if (Buffer.isBuffer(z)) z.fill(0);
    throw refused(`the trust anchor's ECDH returned ${Buffer.isBuffer(z) ? z.length : 'no'} bytes, not 32`);
  }
  const kek = concatKdf(z, CONTENT_KEY_ALG, apu, apv);
  z.fill(0);
  let cek: Buffer;
  try {
    const unwrap = createDecipheriv('id-aes256-wrap', kek, A256KW_IV);
    cek = Buffer.concat([unwrap.update(encryptedKey), unwrap.final()]);
  } catch {
    throw refused('its key does not unwrap with this device key: it was made for another key, or altered');
  } finally {
    kek.fill(0);
  }
  try {
    if (cek.length !== 32) throw refused(`its content encryption key is ${cek.length} bytes, not 32`);
    const decipher = createDecipheriv('aes-256-gcm', cek, iv, { authTagLength: 16 });
    decipher.setAAD(Buffer.from(protectedB64, 'ascii'));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    } catch {
      throw refused('it does not authenticate (A256GCM): its header, IV, ciphertext or tag was altered');
    }
  } finally {
    cek.fill(0);
  }
}
