import { createPublicKey, X509Certificate } from 'node:crypto';
import { parseTpmPublic } from '@rampart/shared/attestation';
import { PkiFormatError, parseCsr } from '@rampart/shared/pki';
import {
  documentDigest,
  manifestProblem,
  signatureProblem,
  type BatchManifest,
  type ManifestDevice,
} from '@rampart/shared/provisioning';
import { RampartError } from '../errors.js';
import { keyFingerprintOf } from '../identity/x509.js';
import type { IdentityService } from '../identity/service.js';
import type { Executor } from '../storage/index.js';
import type { ManifestDevicesTable } from '../storage/schema.js';
import { isoNow } from '../time.js';
import { BirthRefusal, type BirthCertificates } from './birth.js';
import { certificateFingerprint, type Stations } from './stations.js';

/**
 * Imported batch manifests: the traceability chain device ← batch ← station ← time. A manifest is
 * accepted only whole — every device checked, the station's signature verified — or not at all.
 */
export interface ImportedBatch {
  batch: string;
  station: string;
  manifestDigest: string;
  devices: number;
  createdAt: string;
  closedAt: string;
  importedAt: string;
  importedBy: string;
  /** Birth certificates issued now, for devices the station sent requests for. */
  issued: { deviceId: string; certificate: string }[];
}

export interface ManifestRecord {
  deviceId: string;
  batch: string;
  serial: string;
  model: string;
  hardwareRevision: string | null;
  trustAnchor: ManifestDevice['trustAnchor'];
  keyFingerprint: string;
  birthCertificate: string | null;
  birthFingerprint: string | null;
  birthSerial: string | null;
  ek: string | null;
  ak: string | null;
  provisionedAt: string;
}

export function toManifestRecord(r: ManifestDevicesTable): ManifestRecord {
  return {
    deviceId: r.device_id,
    batch: r.batch_id,
    serial: r.serial,
    model: r.model,
    hardwareRevision: r.hardware_revision,
    trustAnchor: r.trust_anchor as ManifestRecord['trustAnchor'],
    keyFingerprint: r.key_fingerprint,
    birthCertificate: r.birth_certificate,
    birthFingerprint: r.birth_fingerprint,
    birthSerial: r.birth_serial,
    ek: r.ek,
    ak: r.ak,
    provisionedAt: r.provisioned_at,
  };
}

/** Refused manifests: 400 with the reason; audited as a security-relevant refusal by the route. */
export class ManifestRefusal extends RampartError {
  constructor(message: string) {
    super('VALIDATION', message, [{ field: 'manifest', message }]);
  }
}

const BIRTH_DAYS = 20 * 365;

/** A batch's record without the manifest document itself (large: every device's birth certificate). */
const BATCH_COLUMNS = [
  'id',
  'station',
  'manifest_digest',
  'device_count',
  'created_at',
  'closed_at',
  'imported_at',
  'imported_by',
] as const;

export class Batches {
  constructor(
    private readonly identity: IdentityService,
    private readonly stations: Stations,
    private readonly birth: BirthCertificates,
  ) {}

  async import(db: Executor, raw: unknown, actor: string): Promise<ImportedBatch> {
    const shape = manifestProblem(raw);
    if (shape) throw new ManifestRefusal(shape);
    const manifest = raw as BatchManifest;
    const station = await this.stations.find(db, manifest.station);
    if (!station)
      throw new ManifestRefusal(
        `the manifest names station ${manifest.station}, which is not registered: rampart station register`,
      );
    if (station.status !== 'active')
      throw new ManifestRefusal(
        `station ${station.name} was revoked on ${station.revokedAt}; its manifests are refused`,
      );
    const bad = signatureProblem(manifest, station.publicKey);
    if (bad) throw new ManifestRefusal(`the station signature is not valid: ${bad}`);
    const existing = await db
      .selectFrom('batches')
      .select('id')
      .where('id', '=', manifest.batch)
      .executeTakeFirst();
    if (existing) throw new RampartError('CONFLICT', `batch ${manifest.batch} was already imported`);

    const rows: ManifestDevicesTable[] = [];
    const issued: ImportedBatch['issued'] = [];
    for (const [i, d] of manifest.devices.entries()) {
      const where = `device ${i + 1} (${d.deviceId})`;
      let spki: Buffer;
      try {
        spki = createPublicKey({
          key: Buffer.from(d.publicKey, 'base64'),
          format: 'der',
          type: 'spki',
        }).export({
          type: 'spki',
          format: 'der',
        });
      } catch {
        throw new ManifestRefusal(`${where}: publicKey is not a SubjectPublicKeyInfo`);
      }
      let birthPem: string;
      if (d.birthCertificate) {
        let checked;
        try {
          checked = await this.birth.check(db, d.birthCertificate);
        } catch (err) {
          if (err instanceof BirthRefusal) throw new ManifestRefusal(`${where}: ${err.message}`);
          throw err;
        }
        if (checked.issuer.kind === 'station' && checked.issuer.name !== station.name)
          throw new ManifestRefusal(
            `${where}: the birth certificate was issued by station ${checked.issuer.name}, not ${station.name}`,
          );
        if (!checked.publicKey.export({ type: 'spki', format: 'der' }).equals(spki))
          throw new ManifestRefusal(`${where}: the birth certificate certifies another key than publicKey`);
        if (checked.deviceId !== d.deviceId)
          throw new ManifestRefusal(
            `${where}: the birth certificate names device ${checked.deviceId ?? '(none)'}`,
          );
        birthPem = checked.certificate.toString();
      } else {
        let csr;
        try {
          csr = parseCsr(Buffer.from(d.csr!, 'base64'));
        } catch (err) {
          if (err instanceof PkiFormatError) throw new ManifestRefusal(`${where}: csr: ${err.message}`);
          throw err;
        }
        if (!csr.signatureValid) throw new ManifestRefusal(`${where}: the csr signature does not verify`);
        if (!csr.publicKeyDer.equals(spki))
          throw new ManifestRefusal(`${where}: the csr is for another key than publicKey`);
        const out = await this.identity.issuer.issueBirth(db, {
          spki,
          deviceId: d.deviceId,
          serial: d.serial,
          validityDays: BIRTH_DAYS,
        });
        birthPem = out.record.certificatePem;
        issued.push({ deviceId: d.deviceId, certificate: birthPem });
      }
      if (d.tpm) {
        try {
          const ak = parseTpmPublic(Buffer.from(d.tpm.ak, 'base64'));
          if (!ak.flags.restricted || !ak.flags.sign || !ak.flags.fixedTPM)
            throw new ManifestRefusal(`${where}: the AK is not a restricted signing key fixed to its TPM`);
          parseTpmPublic(Buffer.from(d.tpm.ek, 'base64'));
        } catch (err) {
          if (err instanceof ManifestRefusal) throw err;
          throw new ManifestRefusal(`${where}: tpm: ${(err as Error).message}`);
        }
      }
      const birth = new X509Certificate(birthPem);
      rows.push({
        device_id: d.deviceId,
        batch_id: manifest.batch,
        serial: d.serial,
        model: d.model,
        hardware_revision: d.hardwareRevision,
        trust_anchor: d.trustAnchor,
        key_fingerprint: keyFingerprintOf(spki),
        birth_certificate: birthPem,
        birth_fingerprint: certificateFingerprint(birth),
        birth_serial: birth.serialNumber.toLowerCase(),
        ek: d.tpm?.ek ?? null,
        ak: d.tpm?.ak ?? null,
        provisioned_at: d.provisionedAt,
      });
    }
    const ids = rows.map((r) => r.device_id);
    for (let i = 0; i < ids.length; i += 500) {
      const clash = await db
        .selectFrom('manifest_devices')
        .select(['device_id', 'batch_id'])
        .where('device_id', 'in', ids.slice(i, i + 500))
        .executeTakeFirst();
      if (clash)
        throw new RampartError('CONFLICT', `device ${clash.device_id} is already in batch ${clash.batch_id}`);
    }
    const importedAt = isoNow();
    const digest = documentDigest(manifest);
    await db
      .insertInto('batches')
      .values({
        id: manifest.batch,
        station: station.name,
        manifest_digest: digest,
        device_count: rows.length,
        created_at: manifest.createdAt,
        closed_at: manifest.closedAt,
        imported_at: importedAt,
        imported_by: actor,
        manifest: JSON.stringify(manifest),
      })
      .execute();
    for (let i = 0; i < rows.length; i += 200)
      await db
        .insertInto('manifest_devices')
        .values(rows.slice(i, i + 200))
        .execute();
    return {
      batch: manifest.batch,
      station: station.name,
      manifestDigest: digest,
      devices: rows.length,
      createdAt: manifest.createdAt,
      closedAt: manifest.closedAt,
      importedAt,
      importedBy: actor,
      issued,
    };
  }

  async list(db: Executor) {
    return db.selectFrom('batches').select(BATCH_COLUMNS).orderBy('imported_at', 'desc').execute();
  }

  async byDevice(db: Executor, deviceId: string): Promise<ManifestRecord | null> {
    const row = await db
      .selectFrom('manifest_devices')
      .selectAll()
      .where('device_id', '=', deviceId)
      .executeTakeFirst();
    return row ? toManifestRecord(row) : null;
  }

  async byBirthFingerprint(db: Executor, fingerprint: string): Promise<ManifestRecord | null> {
    const row = await db
      .selectFrom('manifest_devices')
      .selectAll()
      .where('birth_fingerprint', '=', fingerprint)
      .executeTakeFirst();
    return row ? toManifestRecord(row) : null;
  }

  /** A batch's record, without the manifest document itself (large: every device's birth certificate). */
  async batch(db: Executor, id: string) {
    const row = await db.selectFrom('batches').select(BATCH_COLUMNS).where('id', '=', id).executeTakeFirst();
    if (!row) throw new RampartError('NOT_FOUND', `batch ${id} was not imported; see rampart batch list`);
    return row;
  }
}
