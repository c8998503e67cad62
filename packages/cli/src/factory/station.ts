import {
  X509Certificate,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { keyIdOf } from '@rampart/shared/provisioning';
import { CliError, EXIT } from '../errors.js';
import { createFile, readStationFile, readStationJson, replaceFile } from './files.js';
import { readPassphrase as sharedReadPassphrase } from '../passphrase.js';

/**
 * A factory station: a directory on an offline machine that holds the station's key (encrypted at
 * rest), the CA certificate Rampart issued for it, and its batches.
 *
 *   station.json          name, key id, the installed CA (rampart-factory-station/1)
 *   station.key.pem       the ECDSA P-256 key, PKCS#8 encrypted with the station passphrase (0600)
 *   station.pub.pem       its public half, for `rampart station register`
 *   ca/certificate.pem    the station CA certificate (issues birth certificates)
 *   ca/chain.pem          the manufacturing CA and root above it
 *   ca/root-ca.pem        Rampart's root CA, pinned by every device the station makes
 *   batches/B.json        batch B: its devices; once closed, also B.manifest.json
 */

export const STATION_FORMAT = 'rampart-factory-station/1';
export const PASSPHRASE_ENV = 'RAMPART_STATION_PASSPHRASE';
/** The platform's rule for station names (POST /api/v1/stations). */
export const STATION_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const MIN_PASSPHRASE = 12;

export interface InstalledCa {
  subject: string;
  issuer: string;
  serial: string;
  notAfter: string;
  fingerprint: string;
  installedAt: string;
}

export interface StationRecord {
  format: typeof STATION_FORMAT;
  name: string;
  /** SHA-256 (hex) of the station key's SubjectPublicKeyInfo, as Rampart shows it. */
  keyId: string;
  createdAt: string;
  ca: InstalledCa | null;
}

export interface StationPaths {
  dir: string;
  record: string;
  key: string;
  publicKey: string;
  caDir: string;
  caCertificate: string;
  chain: string;
  rootCa: string;
  batches: string;
}

export function stationPaths(dir: string): StationPaths {
  const d = resolve(dir);
  return {
    dir: d,
    record: join(d, 'station.json'),
    key: join(d, 'station.key.pem'),
    publicKey: join(d, 'station.pub.pem'),
    caDir: join(d, 'ca'),
    caCertificate: join(d, 'ca', 'certificate.pem'),
    chain: join(d, 'ca', 'chain.pem'),
    rootCa: join(d, 'ca', 'root-ca.pem'),
    batches: join(d, 'batches'),
  };
}

/** A station as read from its directory. */
export interface Station {
  paths: StationPaths;
  record: StationRecord;
  publicKey: KeyObject;
}

/** The installed CA: what the station issues birth certificates with, and what devices pin. */
export interface StationCa {
  certificatePem: string;
  certificate: X509Certificate;
  /** The manufacturing CA and root above the station CA (PEM). */
  chainPem: string;
  rootPem: string;
}

/**
 * The passphrase that protects the station key: `--passphrase-file FILE` (`-` for standard input;
 * its first line) or RAMPART_STATION_PASSPHRASE. Never a flag value: argv is visible to other users.
 */
export function readStationPassphrase(o: { passphraseFile?: string }, env = process.env): string {
  return sharedReadPassphrase(o, { envVar: PASSPHRASE_ENV, what: 'the station key' }, env);
}

/** `rampart factory init`: a new station key, encrypted at rest, and the station's record. */
export function initStation(
  dir: string,
  name: string,
  passphrase: string,
  now = new Date(),
): { station: Station; files: { key: string; publicKey: string; record: string } } {
  if (!STATION_NAME.test(name))
    throw new CliError(
      `"${name}" is not a station name: use lower-case letters, digits, ".", "_" or "-" (up to 63), starting with a letter or digit`,
      EXIT.usage,
    );
  if (passphrase.length < MIN_PASSPHRASE)
    throw new CliError(`the station passphrase must have at least ${MIN_PASSPHRASE} characters`, EXIT.usage);
  const paths = stationPaths(dir);
  for (const existing of [paths.record, paths.key])
    if (existsSync(existing))
      throw new CliError(`${paths.dir} holds a station already (${existing})`, EXIT.conflict, [
        'nothing was changed; see it with: rampart factory status --station-dir ' + paths.dir,
        'a new station needs a new directory',
      ]);
  try {
    mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new CliError(`cannot create ${paths.dir}: ${(err as Error).message}`, EXIT.usage);
  }
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const record: StationRecord = {
    format: STATION_FORMAT,
    name,
    keyId: keyIdOf(publicKey),
    createdAt: now.toISOString(),
    ca: null,
  };
  createFile(
    paths.key,
    privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }) as string,
    0o600,
  );
  createFile(paths.publicKey, publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644);
  replaceFile(paths.record, JSON.stringify(record, null, 2) + '\n', 0o644);
  return {
    station: { paths, record, publicKey },
    files: { key: paths.key, publicKey: paths.publicKey, record: paths.record },
  };
}

/** The station in `dir`, checked: its record and public key agree. */
export function loadStation(dir: string): Station {
  const paths = stationPaths(dir);
  if (!existsSync(paths.record))
    throw new CliError(`${paths.dir} is not a factory station (no station.json)`, EXIT.usage, [
      `create one with: rampart factory init --station-dir ${paths.dir} --name NAME`,
    ]);
  const raw = readStationJson(paths.record, 'station record');
  if (raw.format !== STATION_FORMAT || typeof raw.name !== 'string' || typeof raw.keyId !== 'string')
    throw new CliError(`${paths.record} is not a ${STATION_FORMAT} record`, EXIT.failed);
  const record = raw as unknown as StationRecord;
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(readStationFile(paths.publicKey, 'station public key'));
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`${paths.publicKey} is not a PEM public key`, EXIT.failed);
  }
  if (keyIdOf(publicKey) !== record.keyId)
    throw new CliError(
      `${paths.publicKey} is not the key station.json names (key id ${record.keyId.slice(0, 16)}…)`,
      EXIT.failed,
    );
  return { paths, record, publicKey };
}

/** The station's private key, decrypted with `passphrase`, checked to be the station's key. */
export function openStationKey(station: Station, passphrase: string): KeyObject {
  const pem = readStationFile(station.paths.key, 'station key');
  if (!pem.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----'))
    throw new CliError(`${station.paths.key} is not an encrypted PKCS#8 key`, EXIT.failed, [
      'the station key must stay encrypted at rest; a station whose key was decrypted onto the disk must be replaced',
    ]);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem', passphrase });
  } catch {
    throw new CliError(`cannot decrypt the station key ${station.paths.key}: wrong passphrase`, EXIT.usage, [
      `give the passphrase chosen at \`rampart factory init\` (${PASSPHRASE_ENV} or --passphrase-file FILE)`,
    ]);
  }
  if (keyIdOf(createPublicKey(key)) !== station.record.keyId)
    throw new CliError(`${station.paths.key} is not the key of station ${station.record.name}`, EXIT.failed);
  return key;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The PEM certificates in `text`, in order. */
export function pemCertificates(text: string): string[] {
  return (text.match(PEM_CERTIFICATE) ?? []).map((p) => p + '\n');
}

function parseCertificate(pem: string, what: string, file: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch {
    throw new CliError(`${file}: ${what} is not an X.509 certificate`, EXIT.usage);
  }
}

function issued(child: X509Certificate, parent: X509Certificate): boolean {
  try {
    return child.checkIssued(parent) && child.verify(parent.publicKey);
  } catch {
    return false;
  }
}

const oneLine = (dn: string) => dn.replace(/\n/g, ', ');

/** The installed CA, or null when none is installed yet. */
export function stationCa(station: Station): StationCa | null {
  if (!station.record.ca) return null;
  const certificatePem = readStationFile(station.paths.caCertificate, 'station CA certificate');
  return {
    certificatePem,
    certificate: new X509Certificate(certificatePem),
    chainPem: readStationFile(station.paths.chain, 'CA chain'),
    rootPem: readStationFile(station.paths.rootCa, 'root CA certificate'),
  };
}

/** The installed CA, or an error saying how to install it. */
export function requireStationCa(station: Station): StationCa {
  const ca = stationCa(station);
  if (!ca)
    throw new CliError(`station ${station.record.name} has no CA certificate installed yet`, EXIT.conflict, [
      `register it (online): rampart station register ${station.record.name} --public-key ${station.paths.publicKey} --out station-ca.json`,
      `then install the answer here: rampart factory install-ca --station-dir ${station.paths.dir} station-ca.json`,
    ]);
  const now = Date.now();
  if (Date.parse(ca.certificate.validTo) < now)
    throw new CliError(
      `the CA certificate of station ${station.record.name} expired on ${new Date(ca.certificate.validTo).toISOString()}`,
      EXIT.conflict,
      [
        'register a new station (rampart factory init with a new --station-dir, then rampart station register)',
      ],
    );
  return ca;
}

/**
 * `rampart factory install-ca`: install the answer of `rampart station register` (the JSON body of
 * POST /api/v1/stations: station, certificate, chain, rootCertificate). The CA certificate must be a
 * CA certificate for this station's key, chaining through `chain` to the root; anything else is
 * refused and nothing is changed.
 */
export function installCa(
  station: Station,
  bundle: unknown,
  file: string,
  options: { replace?: boolean; now?: Date } = {},
): { ca: InstalledCa; unchanged: boolean } {
  const now = options.now ?? new Date();
  if (typeof bundle !== 'object' || bundle === null || Array.isArray(bundle))
    throw new CliError(`${file} is not a station registration: expected one JSON object`, EXIT.usage);
  const b = bundle as Record<string, unknown>;
  const missing = (['certificate', 'chain', 'rootCertificate'] as const).filter(
    (k) => typeof b[k] !== 'string',
  );
  const registered = b.station as { name?: unknown } | undefined;
  if (missing.length || typeof registered?.name !== 'string')
    throw new CliError(
      `${file} is not a station registration: it lacks ${[...missing, ...(typeof registered?.name === 'string' ? [] : ['station.name'])].join(', ')}`,
      EXIT.usage,
      ['it is the file `rampart station register NAME --public-key FILE --out FILE` writes'],
    );
  const name = station.record.name;
  if (registered.name !== name)
    throw new CliError(`${file} is the registration of station ${registered.name}, not ${name}`, EXIT.usage);

  const certificatePem = pemCertificates(b.certificate as string)[0];
  if (!certificatePem) throw new CliError(`${file}: certificate holds no PEM certificate`, EXIT.usage);
  const cert = parseCertificate(certificatePem, 'certificate', file);
  const certKeyId = keyIdOf(cert.publicKey);
  if (certKeyId !== station.record.keyId)
    throw new CliError(
      `${file}: the CA certificate is for another key (${certKeyId.slice(0, 16)}…) than this station's (${station.record.keyId.slice(0, 16)}…)`,
      EXIT.usage,
      [
        `register this station's own public key: rampart station register ${name} --public-key ${station.paths.publicKey} --out station-ca.json`,
      ],
    );
  if (!cert.ca) throw new CliError(`${file}: the certificate is not a CA certificate`, EXIT.usage);
  if (Date.parse(cert.validTo) < now.getTime())
    throw new CliError(
      `${file}: the CA certificate expired on ${new Date(cert.validTo).toISOString()}`,
      EXIT.usage,
    );

  const chain = pemCertificates(b.chain as string).map((p, i) =>
    parseCertificate(p, `chain certificate ${i + 1}`, file),
  );
  const rootPem = pemCertificates(b.rootCertificate as string)[0];
  if (!rootPem) throw new CliError(`${file}: rootCertificate holds no PEM certificate`, EXIT.usage);
  const root = parseCertificate(rootPem, 'rootCertificate', file);
  if (!issued(root, root))
    throw new CliError(`${file}: rootCertificate is not a self-signed root CA`, EXIT.usage);
  const path = [cert, ...chain.filter((c) => c.fingerprint256 !== root.fingerprint256)];
  for (const [i, c] of path.entries()) {
    const above = path[i + 1] ?? root;
    if (!issued(c, above))
      throw new CliError(
        `${file}: ${oneLine(c.subject)} is not issued by ${oneLine(above.subject)}; the chain does not lead to the root`,
        EXIT.usage,
      );
  }

  const ca: InstalledCa = {
    subject: oneLine(cert.subject),
    issuer: oneLine(cert.issuer),
    serial: cert.serialNumber.toLowerCase(),
    notAfter: new Date(cert.validTo).toISOString(),
    fingerprint: cert.fingerprint256.replace(/:/g, '').toLowerCase(),
    installedAt: now.toISOString(),
  };
  const current = station.record.ca;
  if (current?.fingerprint === ca.fingerprint) return { ca: current, unchanged: true };
  if (current && !options.replace)
    throw new CliError(
      `station ${name} has a CA certificate installed already (serial ${current.serial}, until ${current.notAfter})`,
      EXIT.conflict,
      ['nothing was changed; to install this one instead, run the command again with --replace'],
    );
  try {
    mkdirSync(station.paths.caDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new CliError(`cannot create ${station.paths.caDir}: ${(err as Error).message}`, EXIT.failed);
  }
  replaceFile(station.paths.caCertificate, certificatePem, 0o644);
  replaceFile(station.paths.chain, chain.map((c) => c.toString()).join(''), 0o644);
  replaceFile(station.paths.rootCa, rootPem, 0o644);
  // The record last: until it names the CA, the station has none.
  const record: StationRecord = { ...station.record, ca };
  replaceFile(station.paths.record, JSON.stringify(record, null, 2) + '\n', 0o644);
  station.record = record;
  return { ca, unchanged: false };
}
