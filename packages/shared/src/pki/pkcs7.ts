import { AsnConvert } from '@peculiar/asn1-schema';
import { ContentInfo, SignedData } from '@peculiar/asn1-cms';
import { OID } from './oids.js';
import { der, tlv } from './der.js';
import { PkiFormatError } from './errors.js';

/** OID 1.2.840.113549.1.7.2 (signedData) and 1.2.840.113549.1.7.1 (data), DER-encoded. */
const SIGNED_DATA_OID = Buffer.from('06092a864886f70d010702', 'hex');
const DATA_OID = Buffer.from('06092a864886f70d010701', 'hex');

/**
 * A PKCS#7 / CMS "certs-only" message (a SignedData with certificates and no signers), as EST uses.
 * Assembled from the certificates' own DER without re-encoding them.
 */
export function encodeCertsOnly(certificates: readonly Uint8Array[]): Buffer {
  const signed = der.sequence(
    der.smallInteger(1),
    der.set(),
    der.sequence(DATA_OID),
    tlv(0xa0, ...certificates),
    der.set(),
  );
  return der.sequence(SIGNED_DATA_OID, der.context(0, signed));
}

/** The DER certificates of a certs-only message, in order. */
export function decodeCertsOnly(der: Uint8Array): Buffer[] {
  let signed: SignedData;
  try {
    const info = AsnConvert.parse(der, ContentInfo);
    if (info.contentType !== OID.signedData)
      throw new PkiFormatError(`expected a PKCS#7 SignedData, found content type ${info.contentType}`);
    signed = AsnConvert.parse(info.content, SignedData);
  } catch (err) {
    if (err instanceof PkiFormatError) throw err;
    throw new PkiFormatError(`not a PKCS#7 certs-only message: ${(err as Error).message}`);
  }
  return (signed.certificates ?? [])
    .filter((c) => c.certificate)
    .map((c) => Buffer.from(AsnConvert.serialize(c.certificate!)));
}
