import { chmodSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, sign, verify } from 'node:crypto';
import { CompactEncrypt } from 'jose';
import { describe, expect, it } from 'vitest';
import { SoftwareTrustAnchor } from './software.js';

describe('software trust anchor', () => {
  it('creates a P-256 key once, in a 0600 file, and signs with it', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'agent-')), 'identity', 'device-key.pem');
    const anchor = new SoftwareTrustAnchor(path);
    expect(await anchor.publicKey()).toBeNull();
    const pub = await anchor.ensureKey();
    expect(pub.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const again = await new SoftwareTrustAnchor(path).ensureKey();
    expect(again.export({ type: 'spki', format: 'der' })).toEqual(
      pub.export({ type: 'spki', format: 'der' }),
    );
    const sig = await anchor.sign(Buffer.from('challenge'));
    expect(verify('sha256', Buffer.from('challenge'), pub, sig)).toBe(true);
    expect(verify('sha256', Buffer.from('other'), pub, sig)).toBe(false);
  });

  it('refuses a key file other users can read', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'agent-')), 'key.pem');
    await new SoftwareTrustAnchor(path).ensureKey();
    chmodSync(path, 0o644);
    await expect(new SoftwareTrustAnchor(path).sign(Buffer.from('x'))).rejects.toThrow(/chmod 600/);
  });

  it('says how to create a key when there is none', async () => {
    const anchor = new SoftwareTrustAnchor(join(mkdtempSync(join(tmpdir(), 'agent-')), 'none.pem'));
    await expect(anchor.sign(Buffer.from('x'))).rejects.toThrow(/identity init/);
  });
});

describe('software trust anchor for TLS', () => {
  it('lends its private key to the TLS stack (null before there is one)', async () => {
    const anchor = new SoftwareTrustAnchor(join(mkdtempSync(join(tmpdir(), 'agent-')), 'k.pem'));
    expect(await anchor.tlsKey()).toBeNull();
    const pub = await anchor.ensureKey();
    const key = await anchor.tlsKey();
    expect(key?.type).toBe('private');
    // The TLS key is the identity key itself: what it signs verifies with the anchor's public key.
    expect(verify('sha256', Buffer.from('x'), pub, sign('sha256', Buffer.from('x'), key!))).toBe(true);
  });

  it('unwraps a JWE (ECDH-ES+A256KW) encrypted to its key, and nothing encrypted to another key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-'));
    const anchor = new SoftwareTrustAnchor(join(dir, 'key.pem'));
    await expect(anchor.unwrapKey('a.b.c.d.e')).rejects.toThrow(/no identity key yet/);
    const pub = await anchor.ensureKey();
    const secret = randomBytes(32);
    const jwe = await new CompactEncrypt(secret)
      .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' })
      .encrypt(pub);
    expect(Buffer.from(await anchor.unwrapKey(jwe)).equals(secret)).toBe(true);
    const other = await new SoftwareTrustAnchor(join(dir, 'other.pem')).ensureKey();
    const toOther = await new CompactEncrypt(secret)
      .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' })
      .encrypt(other);
    await expect(anchor.unwrapKey(toOther)).rejects.toThrow();
  });
});
