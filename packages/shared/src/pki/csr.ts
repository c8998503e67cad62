import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import type { Name } from '@peculiar/asn1-x509';
import {
  AlgorithmIdentifier,
  Attribute,
  BasicConstraints,
  DirectoryString,
  Extension,
  Extensions,
  GeneralName,
  SubjectAlternativeName,
  SubjectPublicKeyInfo,
} from '@peculiar/asn1-x509';
import { CertificationRequest, CertificationRequestInfo, Attributes } from '@peculiar/asn1-csr';
import { OID } from './oids.js';
import { derNestingProblem, readDer, type DerElement } from './der.js';
import { PkiFormatError } from './errors.js';
import { buildName, commonNameOf, nameToString } from './names.js';

export type CsrKey =
  { type: 'ec'; curve: string } | { type: 'rsa'; bits: number } | { type: 'other'; description: string };

export interface ParsedCsr {
  der: Buffer;
  subject: string;
  commonName: string | null;
  /** DER SubjectPublicKeyInfo. */
  publicKeyDer: Buffer;
  publicKey: KeyObject | null;
  key: CsrKey;
  signatureAlgorithm: string;
  /** Hash the signature algorithm uses (`sha1` is reported so that it can be refused), or null if unsupported. */
  signatureHash: 'sha1' | 'sha256' | 'sha384' | 'sha512' | null;
  signatureValid: boolean;
  /** Extensions requested through the PKCS#9 extensionRequest attribute. */
  extensions: { oid: string; critical: boolean; value: Buffer }[];
  sanUris: string[];
  /** SAN entries other than URIs (DNS names, IPs, e-mail …), as `type:value`. */
  sanOther: string[];
  requestsCa: boolean;
  /** PKCS#9 challengePassword, when present. */
  challengePassword: string | null;
}

const SIG_ALGS: Record<string, { hash: ParsedCsr['signatureHash']; key: 'ec' | 'rsa' }> = {
  [OID.ecdsaWithSha1]: { hash: 'sha1', key: 'ec' },
  [OID.ecdsaWithSha256]: { hash: 'sha256', key: 'ec' },
  [OID.ecdsaWithSha384]: { hash: 'sha384', key: 'ec' },
  [OID.ecdsaWithSha512]: { hash: 'sha512', key: 'ec' },
  [OID.sha1WithRsa]: { hash: 'sha1', key: 'rsa' },
  [OID.sha256WithRsa]: { hash: 'sha256', key: 'rsa' },
  [OID.sha384WithRsa]: { hash: 'sha384', key: 'rsa' },
  [OID.sha512WithRsa]: { hash: 'sha512', key: 'rsa' },
};

const SIG_NAMES: Record<string, string> = {
  [OID.ecdsaWithSha1]: 'ecdsa-with-SHA1',
  [OID.ecdsaWithSha256]: 'ecdsa-with-SHA256',
  [OID.ecdsaWithSha384]: 'ecdsa-with-SHA384',
  [OID.ecdsaWithSha512]: 'ecdsa-with-SHA512',
  [OID.sha1WithRsa]: 'sha1WithRSAEncryption',
  [OID.sha256WithRsa]: 'sha256WithRSAEncryption',
  [OID.sha384WithRsa]: 'sha384WithRSAEncryption',
  [OID.sha512WithRsa]: 'sha512WithRSAEncryption',
  [OID.rsassaPss]: 'RSASSA-PSS',
  [OID.ed25519]: 'Ed25519',
};

export function signatureAlgorithmName(oid: string): string {
  return SIG_NAMES[oid] ?? oid;
}

const CURVES: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

function describeKey(key: KeyObject | null, spki: SubjectPublicKeyInfo): CsrKey {
  if (key?.asymmetricKeyType === 'ec') {
    const c = key.asymmetricKeyDetails?.namedCurve ?? 'unknown';
    return { type: 'ec', curve: CURVES[c] ?? c };
  }
  if (key?.asymmetricKeyType === 'rsa')
    return { type: 'rsa', bits: key.asymmetricKeyDetails?.modulusLength ?? 0 };
  return { type: 'other', description: key?.asymmetricKeyType ?? spki.algorithm.algorithm };
}

/** Parse a DER PKCS#10 request and check its self-signature. Throws PkiFormatError when it is not one. */
export function parseCsr(der: Uint8Array): ParsedCsr {
  let req: CertificationRequest;
  try {
    req = AsnConvert.parse(der, CertificationRequest);
  } catch (err) {
    throw new PkiFormatError(`not a PKCS#10 certificate request (${(err as Error).message})`);
  }
  // The ASN.1 parser tolerates trailing bytes, elements overrunning their parent and BER lengths;
  // a request is signed as DER, so anything else is refused.
  const shape = csrShapeProblem(der);
  if (shape) throw new PkiFormatError(`the request is not a single DER-encoded PKCS#10 structure: ${shape}`);
  const info = req.certificationRequestInfo;
  if (info.version !== 0) throw new PkiFormatError(`unsupported PKCS#10 version ${info.version}`);
  const publicKeyDer = req.certificationRequestInfoRaw
    ? spkiSlice(req.certificationRequestInfoRaw)
    : Buffer.from(AsnConvert.serialize(info.subjectPKInfo));
  const publicKey = publicKeyOf(publicKeyDer);
  const sigOid = req.signatureAlgorithm.algorithm;
  const alg = SIG_ALGS[sigOid];
  let signatureValid = false;
  if (alg && publicKey && publicKey.asymmetricKeyType === alg.key && req.certificationRequestInfoRaw) {
    try {
      signatureValid = verify(
        alg.hash,
        Buffer.from(req.certificationRequestInfoRaw),
        { key: publicKey, dsaEncoding: 'der' },
        Buffer.from(req.signature),
      );
    } catch {
      signatureValid = false;
    }
  }

  const extensions: ParsedCsr['extensions'] = [];
  let challengePassword: string | null = null;
  for (const attr of info.attributes) {
    try {
      if (attr.type === OID.extensionRequest) {
        for (const v of attr.values)
          for (const e of AsnConvert.parse(v, Extensions))
            extensions.push({ oid: e.extnID, critical: e.critical, value: Buffer.from(e.extnValue.buffer) });
      } else if (attr.type === OID.challengePassword && attr.values[0]) {
        challengePassword = AsnConvert.parse(attr.values[0], DirectoryString).toString();
      }
    } catch (err) {
      throw new PkiFormatError(`the CSR's ${attr.type} attribute is malformed (${(err as Error).message})`);
    }
  }

  const sanUris: string[] = [];
  const sanOther: string[] = [];
  let requestsCa = false;
  for (const e of extensions) {
    try {
      if (e.oid === OID.subjectAltName) {
        for (const n of AsnConvert.parse(e.value, SubjectAlternativeName)) {
          if (n.uniformResourceIdentifier !== undefined) sanUris.push(n.uniformResourceIdentifier);
          else sanOther.push(describeGeneralName(n));
        }
      } else if (e.oid === OID.basicConstraints) {
        requestsCa = AsnConvert.parse(e.value, BasicConstraints).cA;
      }
    } catch (err) {
      throw new PkiFormatError(
        `the CSR's requested extension ${e.oid} is malformed (${(err as Error).message})`,
      );
    }
  }

  return {
    der: Buffer.from(der),
    subject: nameToString(info.subject),
    commonName: commonNameOf(info.subject),
    publicKeyDer,
    publicKey,
    key: describeKey(publicKey, info.subjectPKInfo),
    signatureAlgorithm: signatureAlgorithmName(sigOid),
    signatureHash: alg?.hash ?? null,
    signatureValid,
    extensions,
    sanUris,
    sanOther,
    requestsCa,
    challengePassword,
  };
}

/** Exactly one SEQUENCE of request info, algorithm and a signature BIT STRING without unused bits. */
function csrShapeProblem(der: Uint8Array): string | null {
  let outer: DerElement;
  try {
    outer = readDer(der);
  } catch (err) {
    return (err as Error).message;
  }
  if (outer.end !== der.length) return `${der.length - outer.end} bytes follow the request`;
  const tags: number[] = [];
  const problem = derNestingProblem(der, outer.start, outer.end, (e) => {
    tags.push(e.tag);
    return e.tag === 0x03 && der[e.start] !== 0 ? 'the signature BIT STRING has unused bits' : null;
  });
  if (problem) return problem;
  if (outer.tag !== 0x30 || tags.join() !== '48,48,3')
    return 'it is not a SEQUENCE of request info, algorithm and signature';
  return null;
}

/** The SubjectPublicKeyInfo bytes as sent: the third element of CertificationRequestInfo. */
function spkiSlice(infoDer: ArrayBuffer): Buffer {
  const info = new Uint8Array(infoDer);
  const outer = readDer(info);
  const version = readDer(info, outer.start);
  const subject = readDer(info, version.end);
  const spki = readDer(info, subject.end);
  return Buffer.from(info.subarray(subject.end, spki.end));
}

function publicKeyOf(spkiDer: Buffer): KeyObject | null {
  try {
    return createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch {
    return null;
  }
}

function describeGeneralName(n: GeneralName): string {
  if (n.dNSName !== undefined) return `DNS:${n.dNSName}`;
  if (n.iPAddress !== undefined) return `IP:${n.iPAddress}`;
  if (n.rfc822Name !== undefined) return `email:${n.rfc822Name}`;
  if (n.directoryName) return `dirName:${nameToString(n.directoryName)}`;
  return 'otherName';
}

export interface BuildCsrOptions {
  commonName: string;
  organization?: string;
  publicKey: KeyObject;
  /** Sign the DER CertificationRequestInfo; ECDSA signatures DER-encoded (what node:crypto and trust anchors return). */
  sign(data: Uint8Array): Promise<Buffer>;
  sanUris?: string[];
}

/** Build a PKCS#10 request signed by the holder of the key (ECDSA P-256/P-384 with SHA-256/384, or RSA with SHA-256). */
export async function buildCsr(options: BuildCsrOptions): Promise<Buffer> {
  const spkiDer = options.publicKey.export({ type: 'spki', format: 'der' });
  const subjectPKInfo = AsnConvert.parse(spkiDer, SubjectPublicKeyInfo);
  const attributes = new Attributes();
  if (options.sanUris?.length) {
    const exts = new Extensions([
      new Extension({
        extnID: OID.subjectAltName,
        critical: false,
        extnValue: new OctetString(
          AsnConvert.serialize(
            new SubjectAlternativeName(
              options.sanUris.map((u) => new GeneralName({ uniformResourceIdentifier: u })),
            ),
          ),
        ),
      }),
    ]);
    attributes.push(new Attribute({ type: OID.extensionRequest, values: [AsnConvert.serialize(exts)] }));
  }
  const subject: Name = buildName([
    ...(options.organization ? ([['O', options.organization]] as const) : []),
    ['CN', options.commonName],
  ]);
  const info = new CertificationRequestInfo({ version: 0, subject, subjectPKInfo, attributes });
  const infoDer = AsnConvert.serialize(info);
  const key = options.publicKey;
  let algorithm: string;
  if (key.asymmetricKeyType === 'ec')
    algorithm =
      key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? OID.ecdsaWithSha384 : OID.ecdsaWithSha256;
  else if (key.asymmetricKeyType === 'rsa') algorithm = OID.sha256WithRsa;
  else throw new PkiFormatError(`cannot build a CSR for a ${key.asymmetricKeyType ?? 'unknown'} key`);
  const signature = await options.sign(new Uint8Array(infoDer));
  const req = new CertificationRequest({
    certificationRequestInfo: info,
    signatureAlgorithm: new AlgorithmIdentifier({
      algorithm,
      parameters: algorithm === OID.sha256WithRsa ? null : undefined,
    }),
    signature: new Uint8Array(signature).buffer,
  });
  return Buffer.from(AsnConvert.serialize(req));
}
