import { sign, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  MANIFEST_FORMAT,
  manifestProblem,
  signDocument,
  signatureProblem,
  type BatchManifest,
  type ManifestDevice,
} from '@rampart/shared/provisioning';
import { CliError, EXIT } from '../errors.js';
import { readStationJson, replaceFile } from './files.js';
import type { Station } from './station.js';

/**
 * The station's batches. A batch is open from its first device until it is closed; closing writes
 * the batch manifest (`rampart-batch-manifest/1`) signed by the station key, and a closed batch
 * takes no more devices. Each batch is one file, `batches/<batch>.json`, replaced whole on every
 * change.
 */

export const BATCH_FORMAT = 'rampart-factory-batch/1';
/** Batch names as manifests allow them. */
export const BATCH_NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export interface BatchRecord {
  format: typeof BATCH_FORMAT;
  batch: string;
  station: string;
  createdAt: string;
  /** Null while the batch is open. */
  closedAt: string | null;
  /** The manifest's path once closed. */
  manifest: string | null;
  /** The devices, as the manifest lists them. */
  devices: ManifestDevice[];
}

export function checkBatchName(batch: string): string {
  if (!BATCH_NAME.test(batch))
    throw new CliError(
      `"${batch}" is not a batch name: use 1 to 128 letters, digits, ".", "_", ":" or "-", starting with a letter or digit`,
      EXIT.usage,
    );
  return batch;
}

const batchFile = (station: Station, batch: string) => join(station.paths.batches, `${batch}.json`);
export const manifestFile = (station: Station, batch: string) =>
  join(station.paths.batches, `${batch}.manifest.json`);

function toBatch(station: Station, file: string): BatchRecord {
  const raw = readStationJson(file, 'batch file');
  if (raw.format !== BATCH_FORMAT || typeof raw.batch !== 'string' || !Array.isArray(raw.devices))
    throw new CliError(`${file} is not a ${BATCH_FORMAT} file`, EXIT.failed);
  if (raw.station !== station.record.name)
    throw new CliError(
      `${file} belongs to station ${String(raw.station)}, not ${station.record.name}`,
      EXIT.failed,
    );
  return raw as unknown as BatchRecord;
}

/** Batch `batch` of the station, or null when it has none of that name yet. */
export function readBatch(station: Station, batch: string): BatchRecord | null {
  const file = batchFile(station, checkBatchName(batch));
  return existsSync(file) ? toBatch(station, file) : null;
}

/** Every batch of the station, oldest first. */
export function listBatches(station: Station): BatchRecord[] {
  if (!existsSync(station.paths.batches)) return [];
  return readdirSync(station.paths.batches)
    .filter((f) => f.endsWith('.json') && !f.endsWith('.manifest.json') && !f.startsWith('.'))
    .map((f) => toBatch(station, join(station.paths.batches, f)))
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.batch.localeCompare(b.batch));
}

function closedProblem(record: BatchRecord, station: Station): CliError {
  return new CliError(
    `batch ${record.batch} was closed at ${record.closedAt} and takes no more devices`,
    EXIT.conflict,
    [
      `its manifest: ${record.manifest ?? manifestFile(station, record.batch)}`,
      'provision the device into a new batch (--batch NAME)',
    ],
  );
}

/**
 * Why a device cannot join `batch`: the batch is closed, or the device id, serial, key or TPM is
 * recorded already (in any batch of the station). Checked before the device is touched, and again
 * under the station's lock before anything is written.
 */
export function checkNewDevice(
  station: Station,
  batch: string,
  device: Pick<ManifestDevice, 'deviceId' | 'serial'> & {
    publicKey?: string;
    tpm?: { ek?: string; ak?: string };
  },
): void {
  const batches = listBatches(station);
  const target = batches.find((b) => b.batch === batch);
  if (target?.closedAt) throw closedProblem(target, station);
  for (const b of batches)
    for (const d of b.devices) {
      const where = `batch ${b.batch}`;
      if (d.deviceId === device.deviceId)
        throw new CliError(`device ${d.deviceId} is in ${where} already`, EXIT.conflict, [
          'nothing was changed; every device id is provisioned once (give this device another --id)',
        ]);
      if (d.serial === device.serial)
        throw new CliError(
          `serial ${d.serial} is recorded already, for device ${d.deviceId} (${where})`,
          EXIT.conflict,
          ['nothing was changed; check the --serial read from the device'],
        );
      if (device.publicKey && d.publicKey === device.publicKey)
        throw new CliError(
          `the key in this device's trust anchor is recorded already, for device ${d.deviceId} (${where})`,
          EXIT.conflict,
          [
            'nothing was changed; this trust anchor was provisioned before: a device keeps the identity it was given',
          ],
        );
      if (d.tpm && (d.tpm.ek === device.tpm?.ek || d.tpm.ak === device.tpm?.ak))
        throw new CliError(
          `this TPM was provisioned already, as device ${d.deviceId} (${where})`,
          EXIT.conflict,
          ['nothing was changed; one TPM is one device'],
        );
    }
}

/** Append `device` to `batch` (opened with it when new). Call under the station's lock, after checkNewDevice. */
export function appendDevice(
  station: Station,
  batch: string,
  device: ManifestDevice,
  now = new Date(),
): BatchRecord {
  const record: BatchRecord = readBatch(station, batch) ?? {
    format: BATCH_FORMAT,
    batch,
    station: station.record.name,
    createdAt: now.toISOString(),
    closedAt: null,
    manifest: null,
    devices: [],
  };
  if (record.closedAt) throw closedProblem(record, station);
  record.devices.push(device);
  try {
    mkdirSync(station.paths.batches, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new CliError(`cannot create ${station.paths.batches}: ${(err as Error).message}`, EXIT.failed);
  }
  replaceFile(batchFile(station, batch), JSON.stringify(record, null, 2) + '\n', 0o644);
  return record;
}

/**
 * Close `batch`: its manifest, signed with the station key, is written to
 * `batches/<batch>.manifest.json`, and the batch takes no more devices. Call under the station's lock.
 */
export async function closeBatch(
  station: Station,
  batch: string,
  key: KeyObject,
  now = new Date(),
): Promise<{ record: BatchRecord; manifest: BatchManifest; file: string }> {
  const record = readBatch(station, batch);
  if (!record)
    throw new CliError(`station ${station.record.name} has no batch ${batch}`, EXIT.notFound, [
      `see its batches with: rampart factory status --station-dir ${station.paths.dir}`,
    ]);
  if (record.closedAt) throw closedProblem(record, station);
  if (record.devices.length === 0)
    throw new CliError(`batch ${batch} has no devices; a manifest lists at least one`, EXIT.conflict);
  const closedAt = now.toISOString();
  const manifest = (await signDocument(
    {
      format: MANIFEST_FORMAT,
      batch,
      station: station.record.name,
      createdAt: record.createdAt,
      closedAt,
      devices: record.devices,
    },
    { publicKey: station.publicKey, sign: async (data) => sign('sha256', data, key) },
  )) as BatchManifest;
  // What the platform checks first: the shape, and the station's signature.
  const problem = manifestProblem(manifest) ?? signatureProblem(manifest, station.publicKey);
  if (problem)
    throw new CliError(`the manifest of batch ${batch} cannot be written: ${problem}`, EXIT.failed);
  const file = manifestFile(station, batch);
  replaceFile(file, JSON.stringify(manifest, null, 2) + '\n', 0o644);
  const closed: BatchRecord = { ...record, closedAt, manifest: file };
  replaceFile(batchFile(station, batch), JSON.stringify(closed, null, 2) + '\n', 0o644);
  return { record: closed, manifest, file };
}
