import { diffieHellman, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { CompactEncrypt } from 'jose';
import { describe, expect, it } from 'vitest';
import { AgentError } from '../errors.js';
import { openEcdhEsJwe, type ZGen } from './jwe-ecdh.js';

/** The hand-written JWE path against jose, with the ECDH done by node:crypto as a stand-in for the anchor. */
describe('JWE ECDH-ES+A256KW / A256GCM with the ECDH delegated (jwe-ecdh.ts)', () => {
  const device = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const zgenOf =
    (privateKey: KeyObject): ZGen =>
    async (epk) =>
      diffieHellman({ privateKey, publicKey: epk });
  const zgen = zgenOf(device.privateKey);
  const contentKey = randomBytes(32);
  const wrap = (header: Record<string, unknown> = {}, to: KeyObject = device.publicKey, key = contentKey) =>
    new CompactEncrypt(key)
      .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', ...header })
      .encrypt(to);

  /** The JWE with one part replaced by `change` of it. */
  const tamper = (jwe: string, index: number, change: (part: Buffer) => Buffer) => {
    const parts = jwe.split('.');
    parts[index] = change(Buffer.from(parts[index]!, 'base64url')).toString('base64url');
    return parts.join('.');
  };
  const flip = (part: Buffer) => {
    const copy = Buffer.from(part);
    copy[copy.length - 1]! ^= 1;
    return copy;
  };
  const refusedWith = async (jwe: string, message: RegExp, z: ZGen = zgen) => {
    const err = await openEcdhEsJwe(jwe, z).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).code).toBe('TRUST_ANCHOR');
    expect((err as Error).message).toMatch(message);
  };

  it('opens what jose encrypts to the key, with extra header members, apu and apv', async () => {
    expect((await openEcdhEsJwe(await wrap(), zgen)).equals(contentKey)).toBe(true);
    const bound = await new CompactEncrypt(contentKey)
      .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', rampart_device: 'D1', kid: 'k' })
      .setKeyManagementParameters({ apu: Buffer.from('Alice'), apv: Buffer.from('Bob') })
      .encrypt(device.publicKey);
    expect(JSON.parse(Buffer.from(bound.split('.')[0]!, 'base64url').toString())).toMatchObject({
      apu: expect.any(String),
      apv: expect.any(String),
    });
    expect((await openEcdhEsJwe(bound, zgen)).equals(contentKey)).toBe(true);
  });

  it('refuses a JWE made for another key', async () => {
    await refusedWith(await wrap({}, other.publicKey), /does not unwrap with this device key/);
  });

  it('refuses a tampered header, encrypted key, IV, ciphertext or tag', async () => {
    const jwe = await wrap();
    const header = JSON.parse(Buffer.from(jwe.split('.')[0]!, 'base64url').toString()) as Record<
      string,
      unknown
    >;
    // A header member the KDF does not read: only the GCM tag (the header is its AAD) catches it.
    await refusedWith(
      tamper(jwe, 0, () => Buffer.from(JSON.stringify({ ...header, rampart_device: 'D2' }))),
      /does not authenticate/,
    );
    // Another ephemeral key (on the curve): another KEK, the unwrap's integrity check fails.
    const epk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    await refusedWith(
      tamper(jwe, 0, () => Buffer.from(JSON.stringify({ ...header, epk }))),
      /does not unwrap/,
    );
    await refusedWith(tamper(jwe, 1, flip), /does not unwrap/);
    await refusedWith(tamper(jwe, 2, flip), /does not authenticate/);
    await refusedWith(tamper(jwe, 3, flip), /does not authenticate/);
    await refusedWith(tamper(jwe, 4, flip), /does not authenticate/);
  });

  it('refuses other algorithms, curves, header parameters and malformed parts before asking the anchor', async () => {
    let asked = 0;
    const counting: ZGen = async (epk) => {
      asked++;
      return zgen(epk);
    };
    await refusedWith(
      await new CompactEncrypt(contentKey)
        .setProtectedHeader({ alg: 'ECDH-ES', enc: 'A256GCM' })
        .encrypt(device.publicKey),
      /key management algorithm is "ECDH-ES", not ECDH-ES\+A256KW/,
      counting,
    );
    await refusedWith(
      await wrap({ enc: 'A128CBC-HS256' }),
      /content encryption is "A128CBC-HS256", not A256GCM/,
      counting,
    );
    await refusedWith(
      await wrap({}, generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey),
      /EC P-384, not EC P-256/,
      counting,
    );
    const jwe = await wrap();
    const header = JSON.parse(Buffer.from(jwe.split('.')[0]!, 'base64url').toString()) as {
      epk: Record<string, string>;
    };
    const withHeader = (h: unknown) => tamper(jwe, 0, () => Buffer.from(JSON.stringify(h)));
    await refusedWith(withHeader({ ...header, crit: ['b64'] }), /crit, which is not supported/, counting);
    await refusedWith(withHeader({ ...header, zip: 'DEF' }), /zip, which is not supported/, counting);
    const y = flip(Buffer.from(header.epk.y!, 'base64url')).toString('base64url');
    await refusedWith(withHeader({ ...header, epk: { ...header.epk, y } }), /not a point on P-256/, counting);
    await refusedWith(withHeader({ ...header, epk: undefined }), /no ephemeral public key/, counting);
    await refusedWith(
      withHeader({ ...header, epk: { ...header.epk, d: 'AAAA' } }),
      /carries a private part/,
      counting,
    );
    await refusedWith(withHeader([1]), /not a JSON object/, counting);
    await refusedWith(jwe.split('.').slice(0, 4).join('.'), /five parts/, counting);
    await refusedWith(
      tamper(jwe, 2, (iv) => iv.subarray(1)),
      /IV is 11 bytes/,
      counting,
    );
    await refusedWith(jwe.replace('.', '.+'), /not base64url/, counting);
    await refusedWith(
      tamper(jwe, 1, (key) => key.subarray(16)),
      /encrypted key is 24 bytes/,
      counting,
    );
    expect(asked).toBe(0);
  });

  it('refuses a shared secret of the wrong length from the anchor', async () => {
    await refusedWith(await wrap(), /returned 31 bytes, not 32/, async () => randomBytes(31));
  });
});
