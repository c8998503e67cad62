import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import {
  CertificateChoices,
  CertificateSet,
  ContentInfo,
  EncapsulatedContentInfo,
  SignedData,
  SignerInfos,
  DigestAlgorithmIdentifiers,
} from '@peculiar/asn1-cms';
import { OID } from './oids.js';
import { PkiFormatError } from './errors.js';

/** A PKCS#7 / CMS "certs-only" message (a SignedData with certificates and no signers), as EST uses. */
export function encodeCertsOnly(certificates: readonly Uint8Array[]): Buffer {
  const signed = new SignedData({
    version: 1,
    digestAlgorithms: new DigestAlgorithmIdentifiers(),
    encapContentInfo: new EncapsulatedContentInfo({ eContentType: OID.data }),
    certificates: new CertificateSet(
      certificates.map((der) => new CertificateChoices({ certificate: AsnConvert.parse(der, Certificate) })),
    ),
    signerInfos: new SignerInfos(),
  });
  const info = new ContentInfo({ contentType: OID.signedData, content: AsnConvert.serialize(signed) });
  return Buffer.from(AsnConvert.serialize(info));
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
