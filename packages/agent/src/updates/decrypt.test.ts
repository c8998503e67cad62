import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompactEncrypt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ArtifactEncryption } from '@rampart/shared/updates';
import { AgentError } from '../errors.js';
import { SoftwareTrustAnchor } from '../trust-anchor/software.js';
import { Pkcs11TrustAnchor } from '../trust-anchor/pkcs11.js';
import { TpmTrustAnchor } from '../trust-anchor/tpm.js';
import { decryptArtifact, wrappedContentKey, type Refuse } from './decrypt.js';

describe('encrypted releases on the device (decrypt.ts, real software anchor and jose)', () => {
  let dir: string;
  let device: SoftwareTrustAnchor;
  let other: SoftwareTrustAnchor;
  const plaintext = randomBytes(100_000);
  const contentKey = randomBytes(32);
  const iv = randomBytes(12);
  let ciphertextFile: string;
  let encryption: ArtifactEncryption;
  const refusals: string[] = [];
  const refuse: Refuse = (reason) => {
    refusals.push(reason);
    throw new AgentError('UPDATE_REFUSED', `update refused: ${reason}; nothing was installed`);
  };
  const wrapTo = async (anchor: SoftwareTrustAnchor, key: Uint8Array) =>
    new CompactEncrypt(key)
      .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' })
      .encrypt((await anchor.publicKey())!);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rampart-decrypt-'));
    device = new SoftwareTrustAnchor(join(dir, 'device-key.pem'));
    other = new SoftwareTrustAnchor(join(dir, 'other-key.pem'));
    await device.ensureKey();
    await other.ensureKey();
    const cipher = createCipheriv('aes-256-gcm', contentKey, iv);
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    ciphertextFile = join(dir, 'fw.bin.enc');
    writeFileSync(ciphertextFile, ciphertext);
    encryption = {
      algorithm: 'aes-256-gcm',
      iv: iv.toString('base64url'),
      tag: cipher.getAuthTag().toString('base64url'),
      length: plaintext.length,
      sha256: createHash('sha256').update(plaintext).digest('hex'),
    };
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const attempt = async (wrappedKey: string, meta: ArtifactEncryption = encryption) => {
    const destination = join(dir, `plain-${randomBytes(4).toString('hex')}`);
    refusals.length = 0;
    const err = await decryptArtifact({
      anchor: device,
      target: 'DW100/fw-1.0.0.bin',
      ciphertext: ciphertextFile,
      destination,
      encryption: meta,
      wrappedKey,
      refuse,
    }).then(
      () => null,
      (e: unknown) => e,
    );
    return { err, destination };
  };

  it('decrypts a ciphertext whose key was wrapped to this device, to exactly the plaintext', async () => {
    const { err, destination } = await attempt(await wrapTo(device, contentKey));
    expect(err).toBeNull();
    expect(readFileSync(destination).equals(plaintext)).toBe(true);
  });

  it('refuses a content key wrapped to another device, writing nothing', async () => {
    const { err, destination } = await attempt(await wrapTo(other, contentKey));
    expect((err as AgentError).code).toBe('UPDATE_REFUSED');
    expect(refusals[0]).toMatch(/does not open with this device's key.*another device/);
    expect(existsSync(destination)).toBe(false);
  });

  it('refuses a key for another content key (the GCM tag does not authenticate) and removes the partial plaintext', async () => {
    const { err, destination } = await attempt(await wrapTo(device, randomBytes(32)));
    expect((err as AgentError).code).toBe('UPDATE_REFUSED');
    expect(refusals[0]).toMatch(/does not decrypt with its content key/);
    expect(existsSync(destination)).toBe(false);
  });

  it('refuses a plaintext whose SHA-256 is not the signed one, and removes it', async () => {
    const wrong = { ...encryption, sha256: createHash('sha256').update('another image').digest('hex') };
    const { err, destination } = await attempt(await wrapTo(device, contentKey), wrong);
    expect((err as AgentError).code).toBe('UPDATE_REFUSED');
    expect(refusals[0]).toMatch(/not the signed 100000 bytes with/);
    expect(existsSync(destination)).toBe(false);
  });

  it('refuses a plaintext longer than the signed length before writing past it', async () => {
    const { err, destination } = await attempt(await wrapTo(device, contentKey), {
      ...encryption,
      length: plaintext.length - 1,
    });
    expect((err as AgentError).code).toBe('UPDATE_REFUSED');
    expect(refusals[0]).toMatch(/longer than the signed 99999 bytes/);
    expect(existsSync(destination)).toBe(false);
  });

  it('refuses a JWE with another key management algorithm than ECDH-ES+A256KW', async () => {
    const direct = await new CompactEncrypt(contentKey)
      .setProtectedHeader({ alg: 'ECDH-ES', enc: 'A256GCM' })
      .encrypt((await device.publicKey())!);
    const { err } = await attempt(direct);
    expect((err as AgentError).code).toBe('UPDATE_REFUSED');
    expect(refusals[0]).toMatch(/does not open with this device's key/);
  });

  it('refuses an encrypted release on a trust anchor that cannot unwrap keys, and one without a key', () => {
    refusals.length = 0;
    expect(() => wrappedContentKey({ kind: 'tpm' }, 'DW100/fw.bin', { contentKey: 'x.y.z' }, refuse)).toThrow(
      /the tpm trust anchor cannot unwrap content keys/,
    );
    expect(() => wrappedContentKey(device, 'DW100/fw.bin', { deviceId: 'D1' }, refuse)).toThrow(
      /carries no content key for this device/,
    );
    expect(wrappedContentKey(device, 'DW100/fw.bin', { contentKey: 'a.b.c.d.e' }, refuse)).toBe('a.b.c.d.e');
    // The hardware anchors unwrap too (tpm.test.ts and pkcs11.test.ts open real JWEs with them).
    const tpm = new TpmTrustAnchor({ dir, tcti: 'device:/dev/null' });
    const pkcs11 = new Pkcs11TrustAnchor({ module: '/nonexistent.so', tokenLabel: 't', pin: '0000' });
    for (const anchor of [tpm, pkcs11])
      expect(wrappedContentKey(anchor, 'DW100/fw.bin', { contentKey: 'a.b.c.d.e' }, refuse)).toBe(
        'a.b.c.d.e',
      );
  });

  it('says so when the anchor itself cannot unwrap (a hardware key created before it could), not "another device"', async () => {
    const destination = join(dir, 'plain-old-key');
    refusals.length = 0;
    const old = {
      unwrapKey: () =>
        Promise.reject(
          new AgentError(
            'TRUST_ANCHOR',
            'the identity key was created before the agent could unwrap content keys with a TPM; re-provision the device',
          ),
        ),
    };
    await expect(
      decryptArtifact({
        anchor: old,
        target: 'DW100/fw-1.0.0.bin',
        ciphertext: ciphertextFile,
        destination,
        encryption,
        wrappedKey: await wrapTo(device, contentKey),
        refuse,
      }),
    ).rejects.toThrow(/update refused/);
    expect(refusals[0]).toMatch(/cannot be unwrapped on this device: the identity key was created before/);
    expect(refusals[0]).not.toMatch(/another device/);
    expect(existsSync(destination)).toBe(false);
  });
});
