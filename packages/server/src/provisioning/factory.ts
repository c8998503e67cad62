import { X509Certificate, createPublicKey, sign, type KeyObject } from 'node:crypto';
import { buildName, deviceUri } from '@rampart/shared/pki';
import { keyIdOf } from '@rampart/shared/provisioning';
import type { PlatformKey } from '../keystore/index.js';
import {
  KeyUsageFlags,
  extensions,
  pemOf,
  randomSerial,
  sanUriExtensionDer,
  signCertificate,
  skiExtensionDer,
  spkiDerOf,
  subjectNameOf,
} from '../identity/x509.js';

/**
 * The station side of birth certificates: a factory station, offline, issues a device its birth
 * certificate (IDevID) with the key its station CA certificate certifies. CN = device id,
 * serialNumber = the device's serial, SAN URI `urn:rampart:device:<id>`, clientAuth.
 */
export function stationSigner(privateKey: KeyObject): PlatformKey {
  const publicKey = createPublicKey(privateKey);
  return {
    label: 'station',
    algorithm: 'ec-p256',
    publicKey,
    keyId: keyIdOf(publicKey),
    signatureAlgorithm: 'ecdsa-p256-sha256',
    sign: async (data) => sign('sha256', data, privateKey),
  };
}

export async function issueBirthCertificate(o: {
  stationKey: KeyObject;
  stationCaPem: string;
  deviceSpki: Buffer;
  deviceId: string;
  serial: string;
  organization?: string;
  validityDays: number;
  /** For tests of expiry; default now − 5 minutes. */
  notBefore?: Date;
}): Promise<string> {
  const ca = new X509Certificate(o.stationCaPem);
  const signer = stationSigner(o.stationKey);
  const notBefore = o.notBefore ?? new Date(Date.now() - 5 * 60_000);
  const notAfter = new Date(
    Math.min(notBefore.getTime() + o.validityDays * 86400_000, Date.parse(ca.validTo)),
  );
  const der = await signCertificate(
    {
      serial: randomSerial(),
      issuer: subjectNameOf(ca.raw),
      subject: buildName([
        ...(o.organization ? ([['O', o.organization]] as const) : []),
        ['serialNumber', o.serial],
        ['CN', o.deviceId],
      ]),
      notBefore,
      notAfter,
      subjectPublicKeyDer: o.deviceSpki,
      extensions: [
        extensions.basicConstraints(false),
        extensions.keyUsage(KeyUsageFlags.digitalSignature),
        extensions.extKeyUsage('1.3.6.1.5.5.7.3.2'),
        sanUriExtensionDer(deviceUri(o.deviceId)),
        skiExtensionDer(o.deviceSpki),
        extensions.authorityKeyIdentifier(spkiDerOf(ca.publicKey)),
      ],
    },
    signer,
  );
  return pemOf(der);
}
