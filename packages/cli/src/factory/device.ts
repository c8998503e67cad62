import { X509Certificate, createHash, type KeyObject } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import {
  AgentError,
  BIRTH_FILES,
  checkDeviceId,
  createDeviceCsr,
  loadAgentConfig,
  readBirthIdentity,
  trustAnchorFor,
  writeBirthIdentity,
  type AgentConfig,
  type BirthIdentity,
  type TpmTrustAnchor,
  type TrustAnchor,
} from '@rampart/agent';
import { SharedError } from '@rampart/shared/errors';
import type { ManifestDevice } from '@rampart/shared/provisioning';
import { CliError, EXIT } from '../errors.js';
import { appendDevice, checkNewDevice, readBatch } from './batches.js';
import { withStationLock } from './files.js';
import { pemCertificates, type Station, type StationCa } from './station.js';

/**
 * What the station does to one device: it opens the device's trust anchor exactly as the device's
 * agent will (the agent's configuration loader, the agent's anchors), has the key created inside
 * it, reads the TPM's endorsement key and creates its attestation key, issues the birth certificate
 * with the station CA (or records a certificate request), leaves the birth identity in the agent's
 * data directory and records the device in the batch.
 */

/** Model ids as the platform's registry accepts them. */
export const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Birth certificates last as long as this, or as the station CA if that ends sooner. */
export const BIRTH_VALIDITY_DAYS = 20 * 365;

/** The station-side issuer of birth certificates (`issueBirthCertificate` of @rampart/server). */
export type BirthIssuer = (o: {
  stationKey: KeyObject;
  stationCaPem: string;
  deviceSpki: Buffer;
  deviceId: string;
  serial: string;
  validityDays: number;
}) => Promise<string>;

/** Errors of the agent's code as the CLI reports them: configuration and input 2, the rest 1. */
export function cliErrorOf(err: unknown): unknown {
  if (err instanceof SharedError) return new CliError(err.message, EXIT.usage);
  if (!(err instanceof AgentError)) return err;
  const usage = ['CONFIG_INVALID', 'USAGE', 'BIRTH_IDENTITY', 'KEY_FILE_INSECURE'].includes(err.code);
  return new CliError(err.message, usage ? EXIT.usage : EXIT.failed);
}

/** Run agent code, reporting its errors as the CLI's. */
export async function agentCall<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw cliErrorOf(err);
  }
}

export interface DeviceHandle {
  config: AgentConfig;
  anchor: TrustAnchor;
  dataDir: string;
}

/**
 * The device's trust anchor as its agent opens it: the agent configuration (`configFile`, or
 * RAMPART_AGENT_CONFIG, and RAMPART_AGENT_* variables) with the data directory `deviceDir`.
 */
export function openDevice(
  deviceDir: string,
  configFile: string | undefined,
  env: Record<string, string | undefined> = process.env,
): DeviceHandle {
  try {
    const { config } = loadAgentConfig({ file: configFile, env, flags: { dataDir: deviceDir } });
    return { config, anchor: trustAnchorFor(config), dataDir: config.dataDir };
  } catch (err) {
    throw cliErrorOf(err);
  }
}

export interface DeviceSpec {
  deviceId: string;
  serial: string;
  model: string;
  hardwareRevision: string | null;
}

export interface ProvisionedDevice {
  deviceId: string;
  serial: string;
  model: string;
  hardwareRevision: string | null;
  batch: string;
  station: string;
  trustAnchor: TrustAnchor['kind'];
  strength: TrustAnchor['strength'];
  /** SHA-256 (hex) of the device key's SubjectPublicKeyInfo. */
  keyFingerprint: string;
  /** Whether the key was created now (false: the anchor held one, never provisioned by this station). */
  keyCreated: boolean;
  birthCertificate: { serial: string; issuer: string; notAfter: string } | null;
  /** True when a certificate request was recorded for the platform to sign at import. */
  csr: boolean;
  tpm: { ek: string; ak: string } | null;
  /** Where the birth identity was written, or null (--csr-only). */
  birthIdentity: string | null;
  provisionedAt: string;
  devicesInBatch: number;
}

const sha256Hex = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const oneLine = (dn: string) => dn.replace(/\n/g, ', ');

function checkSpec(spec: DeviceSpec): void {
  try {
    checkDeviceId(spec.deviceId);
  } catch (err) {
    throw cliErrorOf(err);
  }
  if (spec.serial.length < 1 || spec.serial.length > 128)
    throw new CliError('--serial must have 1 to 128 characters', EXIT.usage);
  if (!MODEL_ID.test(spec.model))
    throw new CliError(
      `"${spec.model}" is not a model id: use 1 to 128 letters, digits, ".", "_" or "-", starting with a letter or digit`,
      EXIT.usage,
    );
  if (
    spec.hardwareRevision !== null &&
    (spec.hardwareRevision.length < 1 || spec.hardwareRevision.length > 64)
  )
    throw new CliError('--hardware-revision must have 1 to 64 characters', EXIT.usage);
}

function birthFilesPresent(dataDir: string): boolean {
  const files = BIRTH_FILES(dataDir);
  return [files.certificate, files.device, files.rootCa].some((f) => existsSync(f));
}

/** Refuse a device that carries a birth identity already: say whose, and whether its key is the anchor's. */
async function refuseProvisioned(dataDir: string, anchor: TrustAnchor): Promise<never> {
  let existing: BirthIdentity | null = null;
  try {
    existing = readBirthIdentity(dataDir);
  } catch {
    // Incomplete or damaged: reported as such below.
  }
  const dir = BIRTH_FILES(dataDir).dir;
  if (!existing)
    throw new CliError(`${dir} holds part of a birth identity already`, EXIT.conflict, [
      'nothing was changed; a device interrupted at the station is provisioned again only after its birth identity is removed by hand',
    ]);
  const key = await agentCall(() => anchor.publicKey());
  const same =
    key !== null &&
    existing.birthCertificate.x509.publicKey
      .export({ type: 'spki', format: 'der' })
      .equals(key.export({ type: 'spki', format: 'der' }));
  throw new CliError(
    `the device was provisioned already: ${dir} is the birth identity of ${existing.device.deviceId} ` +
      `(batch ${existing.device.batch}, station ${existing.device.station})` +
      (same
        ? ''
        : key
          ? `, and its birth certificate certifies another key than the one in the ${anchor.kind} trust anchor`
          : `, and the ${anchor.kind} trust anchor holds no key`),
    EXIT.conflict,
    ['nothing was changed; a device keeps the identity it was given'],
  );
}

function isTpm(anchor: TrustAnchor): anchor is TrustAnchor & TpmTrustAnchor {
  const a = anchor as Partial<TpmTrustAnchor>;
  return (
    anchor.kind === 'tpm' &&
    typeof a.endorsementKeyPublic === 'function' &&
    typeof a.ensureAttestationKey === 'function'
  );
}

function issuedBy(cert: X509Certificate, ca: X509Certificate): boolean {
  try {
    return cert.checkIssued(ca) && cert.verify(ca.publicKey);
  } catch {
    return false;
  }
}

/**
 * `rampart factory provision`: provision one device into `batch`. Refused, with nothing changed,
 * when the batch is closed, the device id or serial is recorded already, the trust anchor's key or
 * TPM was provisioned before, or the device carries a birth identity already.
 */
export async function provisionDevice(o: {
  station: Station;
  ca: StationCa;
  batch: string;
  spec: DeviceSpec;
  device: DeviceHandle;
  /** Record a certificate request for the platform to sign at import, instead of a birth certificate. */
  csrOnly: boolean;
  /** The station key: needed unless csrOnly. */
  stationKey: KeyObject | null;
  issue: BirthIssuer;
  now?: () => Date;
}): Promise<ProvisionedDevice> {
  const { station, ca, batch, spec, device } = o;
  const { anchor, dataDir } = device;
  const now = o.now ?? (() => new Date());
  checkSpec(spec);
  // Before the device is touched.
  checkNewDevice(station, batch, spec);
  if (birthFilesPresent(dataDir)) await refuseProvisioned(dataDir, anchor);

  let ek: string | null = null;
  if (anchor.kind === 'tpm') {
    if (!isTpm(anchor))
      throw new CliError(
        'this TPM trust anchor cannot give its endorsement and attestation keys',
        EXIT.failed,
      );
    // A TPM is known by its endorsement key: one provisioned before is refused before keys are made in it.
    ek = (await agentCall(() => anchor.endorsementKeyPublic())).toString('base64');
    checkNewDevice(station, batch, { ...spec, tpm: { ek } });
  }
  const had = await agentCall(() => anchor.publicKey());
  const key = await agentCall(() => anchor.ensureKey());
  const spki = key.export({ type: 'spki', format: 'der' });
  const publicKey = spki.toString('base64');
  let tpm: ManifestDevice['tpm'];
  if (ek !== null && isTpm(anchor))
    tpm = { ek, ak: (await agentCall(() => anchor.ensureAttestationKey())).toString('base64') };
  // A key provisioned before is refused before a certificate is issued for it.
  checkNewDevice(station, batch, { ...spec, publicKey, tpm });

  let birthPem: string | null = null;
  let csr: string | null = null;
  if (o.csrOnly) {
    csr = (await agentCall(() => createDeviceCsr(anchor, spec.deviceId))).toString('base64');
  } else {
    if (!o.stationKey)
      throw new CliError('the station key is needed to issue a birth certificate', EXIT.usage);
    birthPem = await o.issue({
      stationKey: o.stationKey,
      stationCaPem: ca.certificatePem,
      deviceSpki: spki,
      deviceId: spec.deviceId,
      serial: spec.serial,
      validityDays: BIRTH_VALIDITY_DAYS,
    });
    const birth = new X509Certificate(birthPem);
    if (
      !birth.publicKey.export({ type: 'spki', format: 'der' }).equals(spki) ||
      !issuedBy(birth, ca.certificate)
    )
      throw new CliError(
        "the birth certificate issued is not the station CA's for the device key",
        EXIT.failed,
      );
  }

  const provisionedAt = now().toISOString();
  const record: ManifestDevice = {
    deviceId: spec.deviceId,
    serial: spec.serial,
    model: spec.model,
    hardwareRevision: spec.hardwareRevision,
    trustAnchor: anchor.kind,
    publicKey,
    ...(birthPem ? { birthCertificate: birthPem } : { csr: csr! }),
    ...(tpm ? { tpm } : {}),
    provisionedAt,
  };

  const written = await withStationLock(station.paths.dir, async () => {
    // Another run may have recorded the same device meanwhile.
    checkNewDevice(station, batch, record);
    if (birthFilesPresent(dataDir)) await refuseProvisioned(dataDir, anchor);
    if (birthPem)
      await agentCall(() =>
        writeBirthIdentity(dataDir, {
          device: {
            deviceId: spec.deviceId,
            serial: spec.serial,
            model: spec.model,
            hardwareRevision: spec.hardwareRevision,
            trustAnchor: anchor.kind,
            batch,
            station: station.record.name,
            provisionedAt,
          },
          birthCertificate: birthPem,
          stationCaCertificate: ca.certificatePem,
          rootCa: ca.rootPem,
        }),
      );
    try {
      return appendDevice(station, batch, record, now());
    } catch (err) {
      // Not recorded: the device must not keep an identity no manifest will vouch for.
      if (birthPem) rmSync(BIRTH_FILES(dataDir).dir, { recursive: true, force: true });
      throw err;
    }
  });

  const birth = birthPem ? new X509Certificate(birthPem) : null;
  return {
    deviceId: spec.deviceId,
    serial: spec.serial,
    model: spec.model,
    hardwareRevision: spec.hardwareRevision,
    batch,
    station: station.record.name,
    trustAnchor: anchor.kind,
    strength: anchor.strength,
    keyFingerprint: sha256Hex(spki),
    keyCreated: had === null,
    birthCertificate: birth
      ? {
          serial: birth.serialNumber.toLowerCase(),
          issuer: oneLine(birth.issuer),
          notAfter: new Date(birth.validTo).toISOString(),
        }
      : null,
    csr: csr !== null,
    tpm: tpm ? { ek: tpmName(tpm.ek), ak: tpmName(tpm.ak) } : null,
    birthIdentity: birthPem ? BIRTH_FILES(dataDir).dir : null,
    provisionedAt,
    devicesInBatch: written.devices.length,
  };
}

/** A short, stable name for a TPM public area in output: SHA-256 of its bytes, hex. */
function tpmName(base64: string): string {
  return sha256Hex(Buffer.from(base64, 'base64'));
}

export interface InstalledBirth {
  deviceId: string;
  batch: string;
  station: string;
  serial: string;
  issuer: string;
  notAfter: string;
  birthIdentity: string;
  unchanged: boolean;
}

/**
 * `rampart factory install-birth`: for a device provisioned with --csr-only, install the birth
 * certificate the platform issued when the batch was imported (the `issued` list of the import's
 * answer). The device is found by the key in its trust anchor; the certificate must be for that
 * key and issued by the manufacturing CA above the station's.
 */
export async function installBirth(o: {
  station: Station;
  ca: StationCa;
  imported: unknown;
  file: string;
  device: DeviceHandle;
}): Promise<InstalledBirth> {
  const { station, ca, file, device } = o;
  const imported = o.imported as { batch?: unknown; issued?: unknown } | null;
  if (
    typeof imported !== 'object' ||
    imported === null ||
    typeof imported.batch !== 'string' ||
    !Array.isArray(imported.issued)
  )
    throw new CliError(`${file} is not the answer of a batch import (batch, issued)`, EXIT.usage, [
      'it is what `rampart batch import MANIFEST --json` prints',
    ]);
  const issuedList = imported.issued as { deviceId?: unknown; certificate?: unknown }[];
  const batch = readBatch(station, imported.batch);
  if (!batch)
    throw new CliError(
      `${file} is the import of batch ${imported.batch}, which this station did not make`,
      EXIT.usage,
    );
  const key = await agentCall(() => device.anchor.publicKey());
  if (!key)
    throw new CliError(
      `the ${device.anchor.kind} trust anchor of ${device.dataDir} holds no key`,
      EXIT.usage,
      [
        'this is not a device this station provisioned (or its agent configuration names another trust anchor)',
      ],
    );
  const spki = key.export({ type: 'spki', format: 'der' });
  const record = batch.devices.find((d) => d.publicKey === spki.toString('base64'));
  if (!record)
    throw new CliError(`the key in this device's trust anchor is not in batch ${batch.batch}`, EXIT.usage);
  if (!record.csr)
    throw new CliError(
      `device ${record.deviceId} got its birth certificate from the station at provisioning; there is nothing to install`,
      EXIT.conflict,
    );
  const entry = issuedList.find((i) => i?.deviceId === record.deviceId);
  if (!entry || typeof entry.certificate !== 'string')
    throw new CliError(`${file} holds no birth certificate for device ${record.deviceId}`, EXIT.usage);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(entry.certificate);
  } catch {
    throw new CliError(
      `${file}: the birth certificate of ${record.deviceId} is not an X.509 certificate`,
      EXIT.usage,
    );
  }
  if (!cert.publicKey.export({ type: 'spki', format: 'der' }).equals(spki))
    throw new CliError(
      `${file}: the birth certificate of ${record.deviceId} certifies another key than the one in the device's trust anchor`,
      EXIT.usage,
    );
  const issuerPem = pemCertificates(ca.chainPem).find((p) => issuedBy(cert, new X509Certificate(p)));
  if (!issuerPem)
    throw new CliError(
      `${file}: the birth certificate of ${record.deviceId} was issued by ${oneLine(cert.issuer)}, not by the manufacturing CA in the station's chain`,
      EXIT.usage,
      [
        'after a manufacturing CA rollover, register and install the station CA again (rampart factory install-ca --replace)',
      ],
    );
  const files = BIRTH_FILES(device.dataDir);
  if (birthFilesPresent(device.dataDir)) {
    let existing: BirthIdentity | null = null;
    try {
      existing = readBirthIdentity(device.dataDir);
    } catch {
      // Reported below.
    }
    const same = existing?.birthCertificate.x509.fingerprint256 === cert.fingerprint256;
    if (!same)
      throw new CliError(`${files.dir} holds another birth identity already`, EXIT.conflict, [
        'nothing was changed; a device keeps the identity it was given',
      ]);
  }
  const unchanged = existsSync(files.device);
  if (!unchanged)
    await agentCall(() =>
      writeBirthIdentity(device.dataDir, {
        device: {
          deviceId: record.deviceId,
          serial: record.serial,
          model: record.model,
          hardwareRevision: record.hardwareRevision,
          trustAnchor: record.trustAnchor,
          batch: batch.batch,
          station: station.record.name,
          provisionedAt: record.provisionedAt,
        },
        birthCertificate: entry.certificate as string,
        stationCaCertificate: issuerPem,
        rootCa: ca.rootPem,
      }),
    );
  return {
    deviceId: record.deviceId,
    batch: batch.batch,
    station: station.record.name,
    serial: cert.serialNumber.toLowerCase(),
    issuer: oneLine(cert.issuer),
    notAfter: new Date(cert.validTo).toISOString(),
    birthIdentity: files.dir,
    unchanged,
  };
}
