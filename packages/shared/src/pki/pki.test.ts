import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import {
  CertificateChoices,
  CertificateSet,
  ContentInfo,
  DigestAlgorithmIdentifiers,
  EncapsulatedContentInfo,
  SignedData,
  SignerInfos,
} from '@peculiar/asn1-cms';
import {
  PkiFormatError,
  buildCsr,
  decodeBase64Body,
  decodeCertsOnly,
  deviceIdFromUri,
  deviceUri,
  encodeBase64Body,
  encodeCertsOnly,
  fromPem,
  OID,
  der,
  normalizeSerial,
  parseCsr,
  parseRevocationReason,
  serialToBytes,
  toPem,
} from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'rampart-pki-'));
const openssl = (...args: string[]) =>
  execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: 'pipe' });

function ecKey(curve = 'P-256') {
  return generateKeyPairSync('ec', { namedCurve: curve });
}

describe('PKCS#10', () => {
  it('builds a CSR that openssl verifies, with the device URI requested', async () => {
    const { privateKey, publicKey } = ecKey();
    const der = await buildCsr({
      commonName: 'DW100-0001',
      publicKey,
      sanUris: [deviceUri('DW100-0001')],
      sign: async (d) => sign('sha256', d, privateKey),
    });
    writeFileSync(join(dir, 'a.csr'), toPem('CERTIFICATE REQUEST', der));
    const out = openssl('req', '-in', 'a.csr', '-verify', '-noout', '-text');
    expect(out).toContain('CN = DW100-0001');
    expect(out).toContain('URI:urn:rampart:device:DW100-0001');
    const parsed = parseCsr(der);
    expect(parsed).toMatchObject({
      commonName: 'DW100-0001',
      signatureValid: true,
      signatureHash: 'sha256',
      key: { type: 'ec', curve: 'P-256' },
      sanUris: ['urn:rampart:device:DW100-0001'],
      requestsCa: false,
    });
  });

  it('reads openssl CSRs: RSA size, SHA-1, CA requests and challenge passwords', () => {
    openssl(
      'req',
      '-new',
      '-newkey',
      'rsa:1024',
      '-nodes',
      '-keyout',
      'r.key',
      '-subj',
      '/CN=weak',
      '-sha1',
      '-out',
      'r.csr',
    );
    const weak = parseCsr(fromPem(readFileSync(join(dir, 'r.csr'), 'utf8'), 'CERTIFICATE REQUEST')[0]!);
    expect(weak).toMatchObject({
      key: { type: 'rsa', bits: 1024 },
      signatureHash: 'sha1',
      signatureValid: true,
    });

    openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'e.key');
    openssl(
      'req',
      '-new',
      '-key',
      'e.key',
      '-subj',
      '/CN=ca-wannabe',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'subjectAltName=DNS:evil.example',
      '-passin',
      'pass:x',
      '-out',
      'c.csr',
    );
    const ca = parseCsr(fromPem(readFileSync(join(dir, 'c.csr'), 'utf8'), 'CERTIFICATE REQUEST')[0]!);
    expect(ca).toMatchObject({ requestsCa: true, sanOther: ['DNS:evil.example'], signatureValid: true });
  });

  it('reports a bad signature instead of trusting it', async () => {
    const { privateKey, publicKey } = ecKey();
    const other = ecKey().privateKey;
    const der = await buildCsr({ commonName: 'x', publicKey, sign: async (d) => sign('sha256', d, other) });
    expect(parseCsr(der).signatureValid).toBe(false);
    void privateKey;
  });

  it('insists on DER: trailing bytes and indefinite lengths are refused with what is wrong', async () => {
    const { privateKey, publicKey } = ecKey();
    const der = await buildCsr({
      commonName: 'x',
      publicKey,
      sign: async (d) => sign('sha256', d, privateKey),
    });
    expect(() => parseCsr(Buffer.concat([der, Buffer.from([5, 0])]))).toThrow(/2 bytes follow the request/);
    const header = der[1]! < 0x80 ? 2 : 2 + (der[1]! & 0x7f);
    const ber = Buffer.concat([Buffer.from([0x30, 0x80]), der.subarray(header), Buffer.from([0, 0])]);
    expect(() => parseCsr(ber)).toThrow(PkiFormatError);
  });

  it('refuses what is not a CSR with a PkiFormatError', () => {
    expect(() => parseCsr(Buffer.from('hello'))).toThrow(PkiFormatError);
    expect(() => parseCsr(Buffer.alloc(0))).toThrow(/not a PKCS#10/);
  });
});

describe('EST bodies and PKCS#7', () => {
  it('round-trips base64 with line breaks and PEM armour; refuses non-base64', () => {
    const data = Buffer.from([1, 2, 3, 250, 251, 252]);
    expect(decodeBase64Body(encodeBase64Body(data), 'CSR')).toEqual(data);
    expect(decodeBase64Body(toPem('X', data), 'CSR')).toEqual(data);
    expect(() => decodeBase64Body('abc$', 'CSR')).toThrow(/not base64.*"\$"/);
    expect(() => decodeBase64Body('abcde', 'CSR')).toThrow(/multiple of 4/);
    expect(() => decodeBase64Body('  ', 'CSR')).toThrow(/empty/);
    expect(() => decodeBase64Body('AQID+/z9', 'CSR')).not.toThrow();
    expect(() => decodeBase64Body('AQI=', 'CSR')).not.toThrow();
    expect(() => decodeBase64Body('AQJ=', 'CSR')).toThrow(/not canonical base64/);
  });

  it('encodes certs-only messages that openssl pkcs7 reads, and decodes them back', () => {
    openssl(
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'ca.key',
      '-subj',
      '/CN=Test CA',
      '-days',
      '1',
      '-out',
      'ca.pem',
    );
    const cert = fromPem(readFileSync(join(dir, 'ca.pem'), 'utf8'), 'CERTIFICATE')[0]!;
    const p7 = encodeCertsOnly([cert, cert]);
    writeFileSync(join(dir, 'x.p7'), p7);
    expect(openssl('pkcs7', '-inform', 'DER', '-in', 'x.p7', '-print_certs', '-noout')).toContain(
      'subject=CN = Test CA',
    );
    expect(decodeCertsOnly(p7)).toEqual([cert, cert]);
    expect(() => decodeCertsOnly(cert)).toThrow(PkiFormatError);
  });

  it('assembles certs-only DER byte for byte as the CMS schema library encodes it', () => {
    const cert = fromPem(readFileSync(join(dir, 'ca.pem'), 'utf8'), 'CERTIFICATE')[0]!;
    for (const certs of [[], [cert], [cert, cert]]) {
      const reference = new SignedData({
        version: 1,
        digestAlgorithms: new DigestAlgorithmIdentifiers(),
        encapContentInfo: new EncapsulatedContentInfo({ eContentType: OID.data }),
        certificates: new CertificateSet(
          certs.map((d) => new CertificateChoices({ certificate: AsnConvert.parse(d, Certificate) })),
        ),
        signerInfos: new SignerInfos(),
      });
      const info = new ContentInfo({ contentType: OID.signedData, content: AsnConvert.serialize(reference) });
      expect(encodeCertsOnly(certs).equals(Buffer.from(AsnConvert.serialize(info)))).toBe(true);
    }
  });
});

describe('DER writer', () => {
  it('encodes lengths, integers and times as DER requires', () => {
    expect(der.octetString(Buffer.alloc(200)).subarray(0, 3).toString('hex')).toBe('0481c8');
    expect(der.octetString(Buffer.alloc(300)).subarray(0, 4).toString('hex')).toBe('0482012c');
    expect(der.unsignedInteger(Buffer.from([0x00, 0x00, 0x7f])).toString('hex')).toBe('02017f');
    expect(der.unsignedInteger(Buffer.from([0x80])).toString('hex')).toBe('02020080');
    expect(der.time(new Date('2026-11-20T10:11:12.999Z')).toString('latin1').slice(2)).toBe('261120101112Z');
    expect(der.time(new Date('2051-01-01T00:00:00Z'))[0]).toBe(0x18);
  });
});

describe('identifiers', () => {
  it('normalizes serials the way openssl prints them', () => {
    expect(normalizeSerial('3A:9F:01')).toBe('3a9f01');
    expect(normalizeSerial('0x003A9F01')).toBe('3a9f01');
    expect(normalizeSerial('A9F01')).toBe('0a9f01');
    expect(serialToBytes('ff').toString('hex')).toBe('00ff');
    expect(() => normalizeSerial('xyz')).toThrow(/not a certificate serial/);
  });

  it('maps device URIs and revocation reasons', () => {
    expect(deviceIdFromUri(deviceUri('DW100-1'))).toBe('DW100-1');
    expect(deviceIdFromUri('urn:rampart:device:')).toBeNull();
    expect(deviceIdFromUri('https://x')).toBeNull();
    expect(parseRevocationReason('key-compromise')).toBe('keyCompromise');
    expect(() => parseRevocationReason('certificateHold')).toThrow(/unknown revocation reason/);
  });
});
