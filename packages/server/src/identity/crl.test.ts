import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  CRLNumber,
  Extension,
  Name,
  RelativeDistinguishedName,
  AttributeTypeAndValue,
  AttributeValue,
  TBSCertList,
  Time,
  Version,
} from '@peculiar/asn1-x509';
import { describe, expect, it } from 'vitest';
import { OID } from '@rampart/shared/pki';
import { revokedEntry, withRevokedCertificates } from './crl.js';

/** The CRL's list is spliced in from entries encoded once; it must be what the schema library encodes. */
describe('CRL assembly', () => {
  const issuer = new Name([
    new RelativeDistinguishedName([
      new AttributeTypeAndValue({ type: '2.5.4.3', value: new AttributeValue({ utf8String: 'Test CA' }) }),
    ]),
  ]);
  const signature = new AlgorithmIdentifier({ algorithm: '1.2.840.10045.4.3.2' });
  const revoked = [
    { serial: '0a1b2c3d', revokedAt: '2026-11-21T10:00:00.000Z', reason: 'keyCompromise' as const },
    { serial: '7f00000000000001', revokedAt: '2026-11-21T10:00:01.000Z', reason: 'unspecified' as const },
    { serial: '80ff', revokedAt: '2051-01-01T00:00:00.000Z', reason: 'superseded' as const },
  ];

  function tbs(withList: boolean, extensions: boolean): TBSCertList {
    return new TBSCertList({
      version: Version.v2,
      signature,
      issuer,
      thisUpdate: new Time(new Date('2026-11-21T10:00:00Z')),
      nextUpdate: new Time(new Date('2026-11-22T10:00:00Z')),
      revokedCertificates: withList ? revoked.map(revokedEntry) : undefined,
      crlExtensions: extensions
        ? [
            new Extension({
              extnID: OID.cRLNumber,
              critical: false,
              extnValue: new OctetString(AsnConvert.serialize(new CRLNumber(7))),
            }),
          ]
        : undefined,
    });
  }

  it('encodes the list byte for byte as the schema library does, with and without extensions', () => {
    for (const extensions of [true, false]) {
      const expected = Buffer.from(AsnConvert.serialize(tbs(true, extensions)));
      const entries = revoked.map((r) => Buffer.from(AsnConvert.serialize(revokedEntry(r))));
      const spliced = withRevokedCertificates(
        Buffer.from(AsnConvert.serialize(tbs(false, extensions))),
        entries,
      );
      expect(spliced.equals(expected), `extensions: ${extensions}`).toBe(true);
      // And it parses back to the same list.
      const parsed = AsnConvert.parse(spliced, TBSCertList);
      expect(parsed.revokedCertificates?.length).toBe(3);
    }
  });

  it('leaves the list out when nothing is revoked (RFC 5280 §5.1.2.6)', () => {
    const without = Buffer.from(AsnConvert.serialize(tbs(false, true)));
    expect(withRevokedCertificates(without, []).equals(without)).toBe(true);
  });

  it('grows the length header past 64 KiB of entries, still as the schema library encodes it', () => {
    const many = Array.from({ length: 3000 }, (_, i) => ({
      serial: (0x100000 + i).toString(16),
      revokedAt: '2026-11-21T10:00:00.000Z',
      reason: 'keyCompromise' as const,
    }));
    const full = tbs(false, true);
    full.revokedCertificates = many.map(revokedEntry);
    const expected = Buffer.from(AsnConvert.serialize(full));
    const spliced = withRevokedCertificates(
      Buffer.from(AsnConvert.serialize(tbs(false, true))),
      many.map((r) => Buffer.from(AsnConvert.serialize(revokedEntry(r)))),
    );
    expect(spliced.length).toBeGreaterThan(65_536);
    expect(spliced.equals(expected)).toBe(true);
  });
});
