import { X509Certificate, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { describe, expect, it } from 'vitest';
import { buildName, deviceUri } from '@rampart/shared/pki';
import type { KeyAlgorithm, PlatformKey } from '../keystore/index.js';
import {
  KeyUsageFlags,
  commonNameDer,
  extensions,
  sanUriExtensionDer,
  signCertificate,
  skiExtensionDer,
  spkiBytesOfCertificate,
  spkiDerOf,
} from './x509.js';

function softwareKey(algorithm: KeyAlgorithm): PlatformKey {
  const { privateKey, publicKey } =
    algorithm === 'rsa-2048'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: algorithm === 'ec-p384' ? 'P-384' : 'P-256' });
  const digest = algorithm === 'ec-p384' ? 'sha384' : 'sha256';
  return {
    label: 'test',
    algorithm,
    publicKey,
    keyId: 'test',
    signatureAlgorithm: digest,
    sign: async (data) => sign(digest, data, privateKey),
  };
}

async function certificateFor(subjectKey: KeyObject, ca: PlatformKey): Promise<Buffer> {
  const spki = spkiDerOf(subjectKey);
  return signCertificate(
    {
      serial: '1f2e3d4c5b6a79880706050403020100',
      issuer: buildName([['CN', 'Test CA']]),
      subject: commonNameDer('DW100-0002'),
      notBefore: new Date('2026-01-01T00:00:00Z'),
      notAfter: new Date('2051-01-01T00:00:00Z'),
      subjectPublicKeyDer: spki,
      extensions: [extensions.basicConstraints(false), skiExtensionDer(spki)],
    },
    ca,
  );
}

describe('the SubjectPublicKeyInfo of a certificate, read from its DER', () => {
  it.each([
    ['EC P-256', () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey],
    ['EC P-384', () => generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey],
    ['RSA', () => generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey],
    ['Ed25519', () => generateKeyPairSync('ed25519').publicKey],
  ] as const)('is the key, byte for byte as Node exports it (%s)', async (_name, make) => {
    const key = make();
    const der = await certificateFor(key, softwareKey('ec-p256'));
    const spki = spkiBytesOfCertificate(new X509Certificate(der).raw);
    expect(Buffer.from(spki).equals(spkiDerOf(key))).toBe(true);
    // Another certificate of another key gives other bytes: the id is of this certificate's key.
    const other = await certificateFor(make(), softwareKey('ec-p256'));
    expect(Buffer.from(spkiBytesOfCertificate(other)).equals(spkiDerOf(key))).toBe(false);
  });

  it('refuses what is not a certificate', () => {
    expect(() => spkiBytesOfCertificate(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]))).toThrow(RangeError);
    expect(() => spkiBytesOfCertificate(Buffer.from('not DER at all'))).toThrow(RangeError);
  });
});

describe('certificates assembled from DER parts', () => {
  it.each(['ec-p256', 'ec-p384', 'rsa-2048'] as const)(
    'are canonical DER that the schema library and Node parse identically, and verify (%s)',
    async (algorithm) => {
      const ca = softwareKey(algorithm);
      const device = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const spki = spkiDerOf(device.publicKey);
      const der = await signCertificate(
        {
          serial: '1f2e3d4c5b6a79880706050403020100',
          issuer: buildName([
            ['O', 'Test'],
            ['CN', 'Test Issuing CA'],
          ]),
          subject: commonNameDer('DW100-0001'),
          notBefore: new Date('2026-01-01T00:00:00Z'),
          notAfter: new Date('2051-01-01T00:00:00Z'),
          subjectPublicKeyDer: spki,
          extensions: [
            extensions.basicConstraints(false),
            extensions.keyUsage(KeyUsageFlags.digitalSignature),
            sanUriExtensionDer(deviceUri('DW100-0001')),
            skiExtensionDer(spki),
            extensions.authorityKeyIdentifier(spkiDerOf(ca.publicKey)),
          ],
        },
        ca,
      );
      // Re-encoding through the schema library gives the same bytes: the assembly is canonical.
      expect(Buffer.from(AsnConvert.serialize(AsnConvert.parse(der, Certificate))).equals(der)).toBe(true);
      const x = new X509Certificate(der);
      expect(x.verify(ca.publicKey)).toBe(true);
      expect(x.subject).toBe('CN=DW100-0001');
      expect(x.subjectAltName).toBe('URI:urn:rampart:device:DW100-0001');
      expect(x.serialNumber.toLowerCase()).toBe('1f2e3d4c5b6a79880706050403020100');
      expect(new Date(x.validTo).toISOString()).toBe('2051-01-01T00:00:00.000Z');
    },
  );
});
