import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { toPem } from '@rampart/shared/pki';
import { TRUST_ANCHOR_KINDS } from '@rampart/shared/provisioning';
import { StringEnum, describeError, errorPath, validatorFor } from '@rampart/shared/schema';
import { AgentError } from '../errors.js';
import {
  certificatesFromPem,
  parseCertificate,
  parsePinnedRoots,
  type ParsedCertificate,
} from '../identity/certificate.js';
import { writeFileAtomic } from '../identity/files.js';
import { CERT_FILE_MODE } from '../identity/store.js';

/**
 * The device's birth identity: what the factory station leaves on the device for zero-touch
 * provisioning, under `<dataDir>/identity/birth/`:
 *
 *   certificate.pem   the birth certificate (IDevID), then the station CA certificate that issued it
 *   device.json       what the station recorded about the device (FactoryDevice)
 *   root-ca.pem       the platform's root CA, pinned for provisioning
 *
 * The station writes these files with `writeBirthIdentity`; the agent reads them with
 * `readBirthIdentity`. Both apply the same checks, so a station cannot leave files the agent refuses.
 */

export const FACTORY_DEVICE_FORMAT = 'rampart-factory-device/1';

const Name = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' });

export const FactoryDeviceSchema = Type.Object(
  {
    format: Type.Literal(FACTORY_DEVICE_FORMAT),
    deviceId: Name,
    serial: Type.String({ minLength: 1, maxLength: 128 }),
    model: Name,
    hardwareRevision: Type.Union([Type.String({ minLength: 1, maxLength: 64 }), Type.Null()]),
    trustAnchor: StringEnum(TRUST_ANCHOR_KINDS),
    batch: Name,
    station: Name,
    provisionedAt: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
/** `device.json`: what the factory station recorded about the device. */
export type FactoryDevice = Static<typeof FactoryDeviceSchema>;

/** Where the birth identity lives under a data directory. */
export interface BirthFiles {
  dir: string;
  /** The birth certificate followed by the station CA certificate (PEM). */
  certificate: string;
  /** The factory record (JSON). */
  device: string;
  /** The platform's root CA, pinned for zero-touch provisioning (PEM). */
  rootCa: string;
}

export function BIRTH_FILES(dataDir: string): BirthFiles {
  const dir = join(dataDir, 'identity', 'birth');
  return {
    dir,
    certificate: join(dir, 'certificate.pem'),
    device: join(dir, 'device.json'),
    rootCa: join(dir, 'root-ca.pem'),
  };
}

/** A birth identity as read from the device (every part checked). */
export interface BirthIdentity {
  device: FactoryDevice;
  /** PEM, one certificate each: the birth certificate first, then the station CA (and any CA above it). */
  certificates: string[];
  /** The birth certificate, parsed. */
  birthCertificate: ParsedCertificate;
  /** The platform's root CA (PEM), the pin for provisioning. */
  rootPem: string;
  files: BirthFiles;
}

/** What a factory station writes. */
export interface BirthIdentityInput {
  device: Omit<FactoryDevice, 'format'>;
  /** The birth certificate (PEM). */
  birthCertificate: string;
  /** The station CA that issued it, optionally followed by the CAs above it (PEM). */
  stationCaCertificate: string;
  /** The platform's root CA (PEM). */
  rootCa: string;
}

/** Up to this many certificates in certificate.pem (the evidence format carries at most four). */
const MAX_BIRTH_CERTIFICATES = 4;
const DEVICE_FILE_MODE = 0o600;

function fail(message: string): never {
  throw new AgentError('BIRTH_IDENTITY', message);
}

function deviceProblem(value: unknown): string | null {
  const validate = validatorFor(FactoryDeviceSchema);
  if (validate(value)) return null;
  const e = validate.errors![0]!;
  const path = errorPath(e);
  return `${path ? `field ${path}` : 'the record'} ${describeError(e)}`;
}

function checkDevice(value: unknown, file: string, hint = ''): FactoryDevice {
  const problem = deviceProblem(value);
  if (problem) fail(`${file}: ${problem}${hint}`);
  return value as FactoryDevice;
}

function issuedBy(cert: ParsedCertificate, issuer: ParsedCertificate): boolean {
  try {
    return cert.x509.checkIssued(issuer.x509) && cert.x509.verify(issuer.x509.publicKey);
  } catch {
    return false;
  }
}

function checkCertificates(pem: string, file: string): { parsed: ParsedCertificate[]; pems: string[] } {
  const ders = certificatesFromPem(pem);
  if (ders.length < 2)
    fail(
      `${file} must hold the birth certificate followed by the station CA certificate that issued it; ` +
        `it holds ${ders.length === 0 ? 'no PEM certificate' : 'one certificate'}`,
    );
  if (ders.length > MAX_BIRTH_CERTIFICATES)
    fail(`${file} holds ${ders.length} certificates; at most ${MAX_BIRTH_CERTIFICATES} are allowed`);
  const parsed = ders.map((der, i) => {
    try {
      return parseCertificate(der);
    } catch (err) {
      return fail(`${file}: certificate ${i + 1} is ${(err as Error).message}`);
    }
  });
  const [birth, station] = parsed as [ParsedCertificate, ParsedCertificate];
  if (birth.x509.ca)
    fail(
      `${file}: the first certificate (${birth.info.subject}) is a CA certificate, not the birth certificate`,
    );
  parsed.slice(1).forEach((ca, i) => {
    const below = parsed[i]!;
    if (!ca.x509.ca)
      fail(
        `${file}: certificate ${i + 2} (${ca.info.subject}) is not a CA certificate; it must be the station CA`,
      );
    if (!issuedBy(below, ca))
      fail(
        `${file}: ${below.info.subject} is not signed by ${ca.info.subject}, the certificate after it` +
          (below === birth
            ? ` (the station CA ${station.info.subject} must follow the birth certificate)`
            : ''),
      );
  });
  return { parsed, pems: ders.map((der) => toPem('CERTIFICATE', der)) };
}

function checkRoot(pem: string, file: string): void {
  try {
    parsePinnedRoots(pem, file);
  } catch (err) {
    fail((err as Error).message.replace(/; copy Rampart's root CA.*$|; pin Rampart's root CA.*$/, ''));
  }
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    return fail(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/**
 * The birth identity under `dataDir`, or null when the device has none (no file of it exists: it
 * was not provisioned by a factory station). Throws BIRTH_IDENTITY when only some of the files
 * exist or one is malformed: a certificate that is not the station's, a record that is not JSON.
 */
export function readBirthIdentity(dataDir: string): BirthIdentity | null {
  const files = BIRTH_FILES(dataDir);
  const all = [files.certificate, files.device, files.rootCa];
  const present = all.map((f) => existsSync(f));
  if (present.every((p) => !p)) return null;
  const missing = all.filter((_, i) => !present[i]);
  if (missing.length)
    fail(
      `the birth identity in ${files.dir} is incomplete: ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} missing; ` +
        'the factory station writes all three files (certificate.pem, device.json, root-ca.pem)',
    );

  let record: unknown;
  try {
    record = JSON.parse(readText(files.device));
  } catch (err) {
    if (err instanceof AgentError) throw err;
    fail(`${files.device} is not JSON: ${(err as Error).message}`);
  }
  const device = checkDevice(record, files.device, '; the factory station wrote a malformed device record');
  const { parsed, pems } = checkCertificates(readText(files.certificate), files.certificate);
  const rootPem = readText(files.rootCa);
  checkRoot(rootPem, files.rootCa);
  return { device, certificates: pems, birthCertificate: parsed[0]!, rootPem, files };
}

/**
 * Write a birth identity under `dataDir` (the factory station's side). Everything is checked first
 * as `readBirthIdentity` checks it; each file is written atomically, certificates readable by all
 * (0644), the device record by its owner only (0600), and the record last, so that a device
 * interrupted mid-write reads an incomplete identity rather than a wrong one.
 */
export function writeBirthIdentity(dataDir: string, input: BirthIdentityInput): BirthIdentity {
  const files = BIRTH_FILES(dataDir);
  const device = checkDevice({ format: FACTORY_DEVICE_FORMAT, ...input.device }, 'the device record');
  const chainPem = input.birthCertificate.trimEnd() + '\n' + input.stationCaCertificate.trimEnd() + '\n';
  const { parsed, pems } = checkCertificates(chainPem, 'the birth certificate chain');
  checkRoot(input.rootCa, 'the root CA');
  mkdirSync(files.dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(files.rootCa, input.rootCa, CERT_FILE_MODE);
  writeFileAtomic(files.certificate, pems.join(''), CERT_FILE_MODE);
  writeFileAtomic(files.device, JSON.stringify(device, null, 2) + '\n', DEVICE_FILE_MODE);
  return { device, certificates: pems, birthCertificate: parsed[0]!, rootPem: input.rootCa, files };
}
