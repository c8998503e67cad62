import { X509Certificate, generateKeyPairSync, sign } from 'node:crypto';
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
