import { createHash, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { readDer } from '../pki/der.js';
import {
  TPM_GENERATED_VALUE,
  TpmFormatError,
  ZERO_DIGEST,
  attestationQualifyingData,
  extendDigest,
  parseTpmPublic,
  parseTpmSignature,
  parseTpmsAttest,
  pcrDigest,
  verifyTpmSignature,
} from './index.js';

// ------------------------------------------------------------------------------------------------
// Builders for hand-made structures (big-endian, as the TPM marshals them)

const u8 = (n: number) => Buffer.from([n]);
const u16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const u64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};
const tpm2b = (b: Uint8Array) => Buffer.concat([u16(b.length), b]);
const hex = (s: string) => Buffer.from(s, 'hex');

const SIGNER = Buffer.concat([u16(0x000b), Buffer.alloc(32, 0xaa)]);
const NONCE = Buffer.alloc(32, 0x5a);

function attestHeader(type: number, extraData: Buffer = NONCE): Buffer {
  return Buffer.concat([
    u32(TPM_GENERATED_VALUE),
    u16(type),
    tpm2b(SIGNER),
    tpm2b(extraData),
    u64(0x1122334455n), // clock
    u32(7), // resetCount
    u32(3), // restartCount
    u8(1), // safe
    u64(0x2000100000000n), // firmwareVersion
  ]);
}

/** A TPMS_ATTEST for TPM2_Quote selecting SHA-256 PCRs 8–11 (bitmap 00 0f 00). */
function quoteAttest(digest: Buffer = Buffer.alloc(32, 0x33)): Buffer {
  return Buffer.concat([
    attestHeader(0x8018),
    u32(1),
    u16(0x000b),
    u8(3),
    Buffer.from([0x00, 0x0f, 0x00]),
    tpm2b(digest),
  ]);
}

const CERTIFIED_NAME = Buffer.concat([u16(0x000b), Buffer.alloc(32, 0x44)]);
const CERTIFIED_QNAME = Buffer.concat([u16(0x000b), Buffer.alloc(32, 0x55)]);
const certifyAttest = () =>
  Buffer.concat([attestHeader(0x8017), tpm2b(CERTIFIED_NAME), tpm2b(CERTIFIED_QNAME)]);

const RESTRICTED_SIGN = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 16) | (1 << 18);

/** A TPMT_PUBLIC for an ECDSA key (P-256 or P-384) made by node:crypto. */
function eccPublic(key: KeyObject, curveId = 0x0003, attributes = RESTRICTED_SIGN): Buffer {
  const jwk = key.export({ format: 'jwk' });
  return Buffer.concat([
    u16(0x0023),
    u16(0x000b),
    u32(attributes),
    tpm2b(Buffer.alloc(0)), // authPolicy
    u16(0x0010), // symmetric: NULL
    u16(0x0018), // scheme: ECDSA
    u16(0x000b), // …with SHA-256
    u16(curveId),
    u16(0x0010), // kdf: NULL
    tpm2b(Buffer.from(jwk.x!, 'base64url')),
    tpm2b(Buffer.from(jwk.y!, 'base64url')),
  ]);
}

function rsaPublic(key: KeyObject, exponent = 0): Buffer {
  const n = Buffer.from(key.export({ format: 'jwk' }).n!, 'base64url');
  return Buffer.concat([
    u16(0x0001),
    u16(0x000b),
    u32((1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 18)),
    tpm2b(Buffer.alloc(0)),
    u16(0x0010), // symmetric: NULL
    u16(0x0014), // scheme: RSASSA
    u16(0x000b),
    u16(n.length * 8),
    u32(exponent),
    tpm2b(n),
  ]);
}

/** A TPMT_SIGNATURE for ECDSA from a node signature (r ‖ s). */
function ecdsaSignature(p1363: Buffer, hashId = 0x000b): Buffer {
  const half = p1363.length / 2;
  return Buffer.concat([
    u16(0x0018),
    u16(hashId),
    tpm2b(p1363.subarray(0, half)),
    tpm2b(p1363.subarray(half)),
  ]);
}

const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });

/** Every proper prefix of `buf` must be refused as a format error, not read past its end. */
function expectEveryTruncationRefused(buf: Buffer, parse: (b: Uint8Array) => unknown): void {
  for (let len = 0; len < buf.length; len++) {
    let thrown: unknown;
    try {
      parse(buf.subarray(0, len));
    } catch (err) {
      thrown = err;
    }
    expect(thrown, `a ${len}-byte prefix of ${buf.length}`).toBeInstanceOf(TpmFormatError);
  }
}

function formatError(fn: () => unknown): TpmFormatError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TpmFormatError);
    expect((err as Error).name).toBe('TpmFormatError');
    return err as TpmFormatError;
  }
  throw new Error('expected a TpmFormatError');
}

// ------------------------------------------------------------------------------------------------
// Real output of tpm2-tools 5.4 against swtpm 0.7 (a restricted ECDSA P-256 AK and an unrestricted
// identity key under the same storage primary), so the parsers are checked against a TPM, not only
// against these builders.

const REAL = {
  akPublic: hex(
    '00580023000b00050072000000100018000b000300100020da33f4aa8c52205c4d50cfef6deed45d5d735615152fdb62' +
      '3cba43f438d0bb780020ef46ac0da17d6921a39b9611618512401bf231719c0304f0b4598c68bdad4c37',
  ),
  identityPublic: hex(
    '00580023000b00040072000000100018000b0003001000206039b32d5c6ca44ed751c3763882ec68c80935bc1bedbd27' +
      '8851b65191adbdfb0020d515baaf77940a3c862de882f1071c51c959992e155269734fec8ab2dd51655d',
  ),
  /** tpm2_quote -l sha256:8,9,10,11, all four PCRs zero. */
  quote: hex(
    'ff54434780180022000b625d2390da4737fd8ce32eba67af34d1a976af17f70ad1fd49b1d82e2f5ff01800207b699f4f' +
      'efe8b792fbb7561294bf859d20ac49d325e0018db1c8aeb0846dce7800000000000011f255ab79913274c5d101e8f0e6' +
      'a38f68dcd400000001000b03000f00002038723a2e5e8a17aa7950dc008209944e898f69a7bd10a23c839d341e935fd5ca',
  ),
  quoteSignature: hex(
    '0018000b00200710d4ad18268f7757ee4543f210d9d5c0ceec5752aff5343ed017996b201a860020371a7f2c0bd13774' +
      '9193ed4f30735488718069f97b57d5433e1d218caa2afa9b',
  ),
  /** tpm2_certify of the AK by the identity key (tpm2-tools 5.4 always sends qualifying data 00ff55aa). */
  certify: hex(
    'ff54434780170022000b6dd6a0e32614833b2219f18050b87c74c8b42f1300bf9af1a5b3bf40c7462bfd000400ff55aa' +
      '0000000000003d50dbad60fa7c0e341d01f34fff9dbe56b78c0022000bb3ab634c502cd4b39bb7a3285deef1891816f5' +
      'e7ccd43d209b17e76b111244480022000b625d2390da4737fd8ce32eba67af34d1a976af17f70ad1fd49b1d82e2f5ff018',
  ),
  certifySignature: hex(
    '0018000b002036c55dbbbad9bb4774384c99097118a32fa94bc88b9c1799ad532ebc602a600600208c1b6214a6abb987' +
      '788854a608dec73159a94589dd0245d74c4e95b73892075f',
  ),
  /** tpm2_createek -G ecc: the TCG default ECC P-256 EK template. */
  ekPublic: hex(
    '007a0023000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa000600800043' +
      '00100003001000203f4ef1a7ed3c59c45a782884147d84eabc1d7efab4caa256c44b374f2b9f5a0500206f2c31c6c2f5ee' +
      '014732204b05b70d372ea11bd44f5fe6355e8807600ca93619',
  ),
};

describe('TPM structures from a real TPM (swtpm, tpm2-tools 5.4)', () => {
  it('parses the AK public area: restricted signing key fixed to its TPM, and its Name', () => {
    const ak = parseTpmPublic(REAL.akPublic);
    expect(ak.type).toBe('ecc');
    expect(ak.nameAlg).toBe('sha256');
    expect(ak.attributes).toBe(0x00050072);
    expect(ak.flags).toEqual({
      fixedTPM: true,
      stClear: false,
      fixedParent: true,
      sensitiveDataOrigin: true,
      userWithAuth: true,
      adminWithPolicy: false,
      noDA: false,
      encryptedDuplication: false,
      restricted: true,
      decrypt: false,
      sign: true,
    });
    expect(ak.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(ak.tpmtPublic).toEqual(REAL.akPublic.subarray(2));
    expect(ak.name).toEqual(
      Buffer.concat([u16(0x000b), createHash('sha256').update(REAL.akPublic.subarray(2)).digest()]),
    );
    // The same area without its size prefix is the same key.
    expect(parseTpmPublic(REAL.akPublic.subarray(2)).name).toEqual(ak.name);
    expect(parseTpmPublic(REAL.identityPublic).flags.restricted).toBe(false);
  });

  it('parses the EK (TCG template: restricted decryption key with a policy)', () => {
    const ek = parseTpmPublic(REAL.ekPublic);
    expect(ek.flags).toMatchObject({ restricted: true, decrypt: true, sign: false, adminWithPolicy: true });
    expect(ek.flags.userWithAuth).toBe(false);
  });

  it('parses and verifies a quote signed by the AK', () => {
    const quote = parseTpmsAttest(REAL.quote);
    expect(quote.type).toBe('quote');
    expect(quote.magic).toBe(TPM_GENERATED_VALUE);
    expect(quote.extraData).toHaveLength(32);
    expect(quote.quote?.pcrSelections).toEqual([{ hash: 'sha256', pcrs: [8, 9, 10, 11] }]);
    const zeros = new Map([8, 9, 10, 11].map((p) => [p, ZERO_DIGEST]));
    expect(quote.quote?.pcrDigest).toEqual(pcrDigest(zeros, [8, 9, 10, 11]));
    // The signer is the AK: qualifiedSigner is its Qualified Name (not its Name).
    expect(quote.qualifiedSigner).toHaveLength(34);

    const ak = parseTpmPublic(REAL.akPublic);
    const sig = parseTpmSignature(REAL.quoteSignature);
    expect(sig).toMatchObject({ alg: 'ecdsa', hash: 'sha256' });
    expect(verifyTpmSignature(ak.publicKey, REAL.quote, sig)).toBe(true);
    expect(verifyTpmSignature(parseTpmPublic(REAL.identityPublic).publicKey, REAL.quote, sig)).toBe(false);
    const tampered = Buffer.from(REAL.quote);
    tampered[tampered.length - 1]! ^= 1;
    expect(verifyTpmSignature(ak.publicKey, tampered, sig)).toBe(false);
  });

  it('parses and verifies a certification of the AK by the identity key', () => {
    const attest = parseTpmsAttest(REAL.certify);
    expect(attest.type).toBe('certify');
    expect(attest.extraData).toEqual(hex('00ff55aa'));
    expect(attest.certify?.name).toEqual(parseTpmPublic(REAL.akPublic).name);
    const sig = parseTpmSignature(REAL.certifySignature);
    expect(verifyTpmSignature(parseTpmPublic(REAL.identityPublic).publicKey, REAL.certify, sig)).toBe(true);
  });
});

// ------------------------------------------------------------------------------------------------

describe('parseTpmsAttest', () => {
  it('reads every field of a quote', () => {
    const a = parseTpmsAttest(quoteAttest());
    expect(a).toEqual({
      magic: TPM_GENERATED_VALUE,
      type: 'quote',
      qualifiedSigner: SIGNER,
      extraData: NONCE,
      clock: { clock: 0x1122334455n, resetCount: 7, restartCount: 3, safe: true },
      firmwareVersion: 0x2000100000000n,
      quote: { pcrSelections: [{ hash: 'sha256', pcrs: [8, 9, 10, 11] }], pcrDigest: Buffer.alloc(32, 0x33) },
    });
    expect(a.certify).toBeUndefined();
  });

  it('reads a certification', () => {
    const a = parseTpmsAttest(certifyAttest());
    expect(a.type).toBe('certify');
    expect(a.certify).toEqual({ name: CERTIFIED_NAME, qualifiedName: CERTIFIED_QNAME });
    expect(a.quote).toBeUndefined();
  });

  it('reads PCR bitmaps of several banks, least significant bit first', () => {
    const buf = Buffer.concat([
      attestHeader(0x8018, Buffer.alloc(0)),
      u32(2),
      u16(0x0004),
      u8(3),
      Buffer.from([0x81, 0x00, 0x80]),
      u16(0x000c),
      u8(3),
      Buffer.from([0x00, 0x00, 0x00]),
      tpm2b(Buffer.alloc(32)),
    ]);
    const a = parseTpmsAttest(buf);
    expect(a.extraData).toHaveLength(0);
    expect(a.quote?.pcrSelections).toEqual([
      { hash: 'sha1', pcrs: [0, 7, 23] },
      { hash: 'sha384', pcrs: [] },
    ]);
  });

  it('refuses every truncation, of quotes and certifications', () => {
    expectEveryTruncationRefused(quoteAttest(), parseTpmsAttest);
    expectEveryTruncationRefused(certifyAttest(), parseTpmsAttest);
    expectEveryTruncationRefused(REAL.quote, parseTpmsAttest);
  });

  it('says where it was cut short', () => {
    expect(formatError(() => parseTpmsAttest(quoteAttest().subarray(0, 5))).message).toBe(
      'TPMS_ATTEST: type is cut short: it needs 2 bytes at offset 4, 1 remain',
    );
  });

  it('refuses a bad magic, naming it', () => {
    const buf = quoteAttest();
    buf.writeUInt32BE(0xff544348, 0);
    expect(formatError(() => parseTpmsAttest(buf)).message).toMatch(
      /TPMS_ATTEST: magic is 0xff544348, not TPM_GENERATED_VALUE/,
    );
  });

  it('refuses other attestation types, naming the tag', () => {
    for (const tag of [0x8014, 0x8019, 0x801a, 0x0000]) {
      const buf = quoteAttest();
      buf.writeUInt16BE(tag, 4);
      expect(formatError(() => parseTpmsAttest(buf)).message).toContain(
        `type is 0x${tag.toString(16).padStart(4, '0')}`,
      );
    }
  });

  it('refuses trailing bytes', () => {
    expect(formatError(() => parseTpmsAttest(Buffer.concat([quoteAttest(), u8(0)]))).message).toMatch(
      /1 byte follow/,
    );
    expect(formatError(() => parseTpmsAttest(Buffer.concat([certifyAttest(), u16(0)]))).message).toMatch(
      /2 bytes follow/,
    );
  });

  it('refuses oversized fields, unknown banks and a non-boolean safe flag', () => {
    const big = Buffer.concat([attestHeader(0x8018, Buffer.alloc(67)), Buffer.alloc(40)]);
    expect(formatError(() => parseTpmsAttest(big)).message).toMatch(/extraData is 67 bytes/);

    const safe = quoteAttest();
    safe[4 + 2 + 2 + SIGNER.length + 2 + NONCE.length + 16] = 2;
    expect(formatError(() => parseTpmsAttest(safe)).message).toMatch(/clockInfo\.safe is 2/);

    const bank = quoteAttest();
    bank.writeUInt16BE(0x0012, attestHeader(0x8018).length + 4); // SM3-256
    expect(formatError(() => parseTpmsAttest(bank)).message).toMatch(/pcrSelect\[0\]\.hash is 0x0012/);

    const count = quoteAttest();
    count.writeUInt32BE(0xffffffff, attestHeader(0x8018).length);
    expect(formatError(() => parseTpmsAttest(count)).message).toMatch(/count is 4294967295/);
  });

  it('accepts a Uint8Array view into a larger buffer', () => {
    const buf = quoteAttest();
    const padded = new Uint8Array(buf.length + 10);
    padded.set(buf, 5);
    expect(parseTpmsAttest(padded.subarray(5, 5 + buf.length)).extraData).toEqual(NONCE);
  });
});

describe('parseTpmPublic', () => {
  it('reads an ECC P-256 key, bare or as TPM2B_PUBLIC, with its Name', () => {
    const tpmt = eccPublic(p256.publicKey);
    for (const buf of [tpmt, tpm2b(tpmt)]) {
      const pub = parseTpmPublic(buf);
      expect(pub.type).toBe('ecc');
      expect(pub.publicKey.export({ type: 'spki', format: 'der' })).toEqual(
        p256.publicKey.export({ type: 'spki', format: 'der' }),
      );
      expect(pub.tpmtPublic).toEqual(tpmt);
      expect(pub.name).toEqual(Buffer.concat([hex('000b'), createHash('sha256').update(tpmt).digest()]));
      expect(pub.flags.restricted && pub.flags.sign && pub.flags.fixedTPM).toBe(true);
      expect(pub.flags.decrypt).toBe(false);
    }
  });

  it('reads P-384 and RSA keys (exponent 0 meaning 65537)', () => {
    const pub384 = parseTpmPublic(eccPublic(p384.publicKey, 0x0004));
    expect(pub384.publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    const pubRsa = parseTpmPublic(tpm2b(rsaPublic(rsa.publicKey)));
    expect(pubRsa.type).toBe('rsa');
    expect(pubRsa.publicKey.asymmetricKeyDetails?.publicExponent).toBe(65537n);
    expect(pubRsa.publicKey.export({ type: 'spki', format: 'der' })).toEqual(
      rsa.publicKey.export({ type: 'spki', format: 'der' }),
    );
    expect(parseTpmPublic(rsaPublic(rsa.publicKey, 3)).publicKey.asymmetricKeyDetails?.publicExponent).toBe(
      3n,
    );
  });

  it('changes its Name when any attribute changes', () => {
    const a = parseTpmPublic(eccPublic(p256.publicKey));
    const b = parseTpmPublic(eccPublic(p256.publicKey, 0x0003, RESTRICTED_SIGN & ~(1 << 1)));
    expect(b.flags.fixedTPM).toBe(false);
    expect(b.name).not.toEqual(a.name);
  });

  it('refuses every truncation', () => {
    expectEveryTruncationRefused(eccPublic(p256.publicKey), parseTpmPublic);
    expectEveryTruncationRefused(tpm2b(eccPublic(p256.publicKey)), parseTpmPublic);
    expectEveryTruncationRefused(rsaPublic(rsa.publicKey), parseTpmPublic);
    expectEveryTruncationRefused(REAL.ekPublic, parseTpmPublic);
  });

  it('refuses trailing bytes and a size that does not match', () => {
    const tpmt = eccPublic(p256.publicKey);
    expect(formatError(() => parseTpmPublic(Buffer.concat([tpmt, u8(0)]))).message).toMatch(/1 byte follow/);
    expect(formatError(() => parseTpmPublic(Buffer.concat([tpm2b(tpmt), u8(0)]))).message).toMatch(
      /TPM2B_PUBLIC: size is 88, but 89 bytes follow/,
    );
  });

  it('refuses what is not an RSA or ECC key on a supported curve', () => {
    const symmetric = eccPublic(p256.publicKey);
    symmetric.writeUInt16BE(0x0025, 0);
    expect(formatError(() => parseTpmPublic(symmetric)).message).toMatch(/0x0025, a symmetric object/);

    const p521 = eccPublic(p256.publicKey, 0x0005);
    expect(formatError(() => parseTpmPublic(p521)).message).toMatch(/curveID is 0x0005/);

    const offCurve = eccPublic(p256.publicKey);
    offCurve[offCurve.length - 1]! ^= 1;
    expect(formatError(() => parseTpmPublic(offCurve)).message).toMatch(/not a point on P-256/);

    const badNameAlg = eccPublic(p256.publicKey);
    badNameAlg.writeUInt16BE(0x0010, 2);
    expect(formatError(() => parseTpmPublic(badNameAlg)).message).toMatch(/nameAlg is 0x0010/);

    const keyBits = rsaPublic(rsa.publicKey);
    keyBits.writeUInt16BE(1024, 16);
    expect(formatError(() => parseTpmPublic(keyBits)).message).toMatch(
      /2048 bits, but parameters.keyBits says 1024/,
    );
  });
});

describe('parseTpmSignature and verifyTpmSignature', () => {
  it('turns an ECDSA r and s into DER that node:crypto verifies, and back', () => {
    // Enough signatures that r or s with the top bit set (needing a leading zero in DER) occur.
    for (let i = 0; i < 64; i++) {
      const message = Buffer.from(`message ${i}`);
      const p1363 = sign('sha256', message, { key: p256.privateKey, dsaEncoding: 'ieee-p1363' });
      const sig = parseTpmSignature(ecdsaSignature(p1363));
      expect(sig).toMatchObject({ alg: 'ecdsa', hash: 'sha256' });
      expect(verify('sha256', message, p256.publicKey, sig.signature)).toBe(true);
      expect(verifyTpmSignature(p256.publicKey, message, sig)).toBe(true);
      expect(verifyTpmSignature(p256.publicKey, Buffer.from('another'), sig)).toBe(false);
      // And the DER is a SEQUENCE of two INTEGERs holding exactly r and s.
      const seq = readDer(sig.signature);
      const r = readDer(sig.signature, seq.start);
      const s = readDer(sig.signature, r.end);
      expect([seq.tag, r.tag, s.tag, s.end]).toEqual([0x30, 0x02, 0x02, sig.signature.length]);
      const int = (e: { start: number; end: number }) =>
        BigInt('0x' + sig.signature.subarray(e.start, e.end).toString('hex'));
      expect(int(r)).toBe(BigInt('0x' + p1363.subarray(0, 32).toString('hex')));
      expect(int(s)).toBe(BigInt('0x' + p1363.subarray(32).toString('hex')));
    }
  });

  it('encodes r and s minimally: leading zeros dropped, a zero added before a high bit', () => {
    const r = Buffer.concat([Buffer.alloc(3), Buffer.alloc(29, 0x7f)]);
    const s = Buffer.alloc(32, 0xff);
    const sig = parseTpmSignature(Buffer.concat([u16(0x0018), u16(0x000b), tpm2b(r), tpm2b(s)])).signature;
    expect(sig.subarray(0, 4)).toEqual(hex('3042021d'));
    expect(sig.subarray(4 + 29, 4 + 29 + 3)).toEqual(hex('022100'));
  });

  it('verifies P-384 with SHA-384, and RSA PKCS#1 v1.5 and PSS', () => {
    const message = Buffer.from('attested');
    const p1363 = sign('sha384', message, { key: p384.privateKey, dsaEncoding: 'ieee-p1363' });
    const sig384 = parseTpmSignature(ecdsaSignature(p1363, 0x000c));
    expect(sig384.hash).toBe('sha384');
    expect(verifyTpmSignature(p384.publicKey, message, sig384)).toBe(true);

    const pkcs1 = sign('sha256', message, rsa.privateKey);
    const rsassa = parseTpmSignature(Buffer.concat([u16(0x0014), u16(0x000b), tpm2b(pkcs1)]));
    expect(rsassa).toMatchObject({ alg: 'rsassa', hash: 'sha256' });
    expect(verifyTpmSignature(rsa.publicKey, message, rsassa)).toBe(true);
    expect(verifyTpmSignature(rsa.publicKey, Buffer.from('other'), rsassa)).toBe(false);

    const pss = sign('sha256', message, { key: rsa.privateKey, padding: 6, saltLength: 32 });
    const rsapss = parseTpmSignature(Buffer.concat([u16(0x0016), u16(0x000b), tpm2b(pss)]));
    expect(verifyTpmSignature(rsa.publicKey, message, rsapss)).toBe(true);
  });

  it('is false, not an error, for a key of another type', () => {
    const message = Buffer.from('x');
    const ecdsa = parseTpmSignature(
      ecdsaSignature(sign('sha256', message, { key: p256.privateKey, dsaEncoding: 'ieee-p1363' })),
    );
    expect(verifyTpmSignature(rsa.publicKey, message, ecdsa)).toBe(false);
    const rsassa = parseTpmSignature(
      Buffer.concat([u16(0x0014), u16(0x000b), tpm2b(sign('sha256', message, rsa.privateKey))]),
    );
    expect(verifyTpmSignature(p256.publicKey, message, rsassa)).toBe(false);
  });

  it('refuses every truncation, trailing bytes, other algorithms and empty halves', () => {
    const tss = ecdsaSignature(
      sign('sha256', Buffer.from('x'), { key: p256.privateKey, dsaEncoding: 'ieee-p1363' }),
    );
    expectEveryTruncationRefused(tss, parseTpmSignature);
    expectEveryTruncationRefused(REAL.certifySignature, parseTpmSignature);
    expect(formatError(() => parseTpmSignature(Buffer.concat([tss, u8(0)]))).message).toMatch(
      /1 byte follow/,
    );
    expect(
      formatError(() => parseTpmSignature(Buffer.concat([u16(0x0005), tss.subarray(2)]))).message,
    ).toMatch(/sigAlg is 0x0005/);
    expect(
      formatError(() =>
        parseTpmSignature(Buffer.concat([u16(0x0018), u16(0x000b), u16(0), tpm2b(Buffer.alloc(32, 1))])),
      ).message,
    ).toMatch(/signatureR is empty/);
    expect(
      formatError(() => parseTpmSignature(Buffer.concat([u16(0x0018), u16(0x0012), tss.subarray(4)])))
        .message,
    ).toMatch(/signature\.hash is 0x0012/);
  });
});

describe('pcrDigest and attestationQualifyingData', () => {
  it('hashes the values in ascending PCR order, whatever order they are asked in', () => {
    const values = new Map([
      [10, extendDigest(ZERO_DIGEST, '1'.repeat(64))],
      [8, ZERO_DIGEST],
      [11, 'ab'.repeat(32)],
    ]);
    const expected = createHash('sha256')
      .update(Buffer.concat([8, 10, 11].map((p) => Buffer.from(values.get(p)!, 'hex'))))
      .digest();
    expect(pcrDigest(values, [11, 8, 10])).toEqual(expected);
    expect(pcrDigest(values, [8, 10, 11, 10])).toEqual(expected);
    expect(() => pcrDigest(values, [8, 9])).toThrow(/no value for PCR 9/);
    expect(() => pcrDigest(new Map([[8, 'AB'.repeat(32)]]), [8])).toThrow(/64 lowercase hex/);
  });

  it('binds the nonce and the key, unambiguously', () => {
    const spki = p256.publicKey.export({ type: 'spki', format: 'der' });
    const q = attestationQualifyingData('nonce-1', spki);
    expect(q).toEqual(
      createHash('sha256')
        .update(
          Buffer.concat([
            Buffer.from('rampart-attestation/1\0nonce-1\0'),
            createHash('sha256').update(spki).digest(),
          ]),
        )
        .digest(),
    );
    expect(q).toHaveLength(32);
    expect(attestationQualifyingData('nonce-2', spki)).not.toEqual(q);
    expect(
      attestationQualifyingData('nonce-1', p384.publicKey.export({ type: 'spki', format: 'der' })),
    ).not.toEqual(q);
  });
});
