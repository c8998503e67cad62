import { createDecipheriv, createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { compactDecrypt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileKeyStore } from '../../keystore/index.js';
import { CONTENT_KEK_LABEL, ContentKeys, ecdhProblem, encryptArtifact, wrapForDevice } from './encryption.js';

describe('artifact encryption on the server', () => {
  let dir: string;
  let keys: FileKeyStore;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rampart-artifact-enc-'));
    keys = await FileKeyStore.open(join(dir, 'keys'), 'test passphrase for rampart');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('encrypts a stream with AES-256-GCM under a fresh key and IV, and describes the plaintext', async () => {
    const plaintext = randomBytes(300_000);
    const a = encryptArtifact(Readable.from([plaintext.subarray(0, 1000), plaintext.subarray(1000)]));
    const ciphertext = await buffer(a.ciphertext);
    const meta = a.metadata();
    expect(ciphertext.length).toBe(plaintext.length);
    expect(ciphertext.equals(plaintext)).toBe(false);
    expect(meta).toMatchObject({
      algorithm: 'aes-256-gcm',
      length: plaintext.length,
      sha256: createHash('sha256').update(plaintext).digest('hex'),
    });
    const d = createDecipheriv('aes-256-gcm', a.contentKey, Buffer.from(meta.iv, 'base64url'));
    d.setAuthTag(Buffer.from(meta.tag, 'base64url'));
    expect(Buffer.concat([d.update(ciphertext), d.final()]).equals(plaintext)).toBe(true);
    // Another upload of the same bytes gets another key and IV.
    const b = encryptArtifact(Readable.from([plaintext]));
    await buffer(b.ciphertext);
    expect(b.contentKey.equals(a.contentKey)).toBe(false);
    expect(b.metadata().iv).not.toBe(meta.iv);
  });

  it('fails the ciphertext stream when the upload breaks off', async () => {
    const broken = new Readable({
      read() {
        this.push(randomBytes(1000));
        this.destroy(new Error('client went away'));
      },
    });
    const e = encryptArtifact(broken);
    await expect(buffer(e.ciphertext)).rejects.toThrow(/client went away/);
    expect(() => e.metadata()).toThrow(/not completely encrypted/);
  });

  it('seals content keys with a key-store KEK, bound to their artifact', async () => {
    const ck = new ContentKeys(keys);
    const key = randomBytes(32);
    const sha = 'a'.repeat(64);
    const sealed = await ck.seal(key, sha);
    expect(sealed).not.toContain(key.toString('base64url'));
    expect(decodeProtectedHeader(sealed)).toMatchObject({
      alg: 'ECDH-ES+A256KW',
      enc: 'A256GCM',
      kid: CONTENT_KEK_LABEL,
    });
    expect((await keys.list()).some((k) => k.label === CONTENT_KEK_LABEL)).toBe(true);
    // A second instance (a restart) opens it with the same key-store key.
    expect((await new ContentKeys(keys).open(sealed, sha)).equals(key)).toBe(true);
    await expect(ck.open(sealed, 'b'.repeat(64))).rejects.toThrow(/belongs to another artifact/);
    const parts = sealed.split('.');
    parts[3] = Buffer.from(randomBytes(32)).toString('base64url');
    await expect(ck.open(parts.join('.'), sha)).rejects.toThrow(
      /does not open with key "update-content-kek"/,
    );
  });

  it('wraps a content key to one device key (P-256, P-384) that only it opens', async () => {
    const key = randomBytes(32);
    for (const namedCurve of ['P-256', 'P-384']) {
      const device = generateKeyPairSync('ec', { namedCurve });
      const other = generateKeyPairSync('ec', { namedCurve });
      const jwe = await wrapForDevice(key, device.publicKey, { deviceId: 'D1', sha256: 'c'.repeat(64) });
      expect(decodeProtectedHeader(jwe)).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' });
      expect(Buffer.from((await compactDecrypt(jwe, device.privateKey)).plaintext).equals(key)).toBe(true);
      await expect(compactDecrypt(jwe, other.privateKey)).rejects.toThrow();
    }
  });

  it('refuses, with a clear problem, device keys that cannot do ECDH', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const ed = generateKeyPairSync('ed25519').publicKey;
    const k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey;
    expect(ecdhProblem(rsa)).toMatch(/a rsa key; encrypted releases need an EC P-256 or P-384 device key/);
    expect(ecdhProblem(ed)).toMatch(/an? ed25519 key/);
    expect(ecdhProblem(k1)).toMatch(/EC key on secp256k1/);
    await expect(
      wrapForDevice(randomBytes(32), rsa, { deviceId: 'RSA-1', sha256: 'd'.repeat(64) }),
    ).rejects.toThrow(/device RSA-1: its certificate holds a rsa key/);
  });
});
