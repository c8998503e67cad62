import { createHash, type KeyObject } from 'node:crypto';
import { measure, type EventLog, type MeasurementRegister } from '@rampart/agent';
import type { MeasuredComponent } from '@rampart/shared/attestation';
import {
  MANIFEST_FORMAT,
  signDocument,
  type BatchManifest,
  type ManifestDevice,
} from '@rampart/shared/provisioning';

/**
 * The factory's side of zero-touch provisioning, as the simulator plays it: a station that issues
 * birth certificates and signs batch manifests, and the measured boot every virtual device goes
 * through before it attests. How the station is registered and the manifest imported (the
 * management API in `rampart sim`, plain HTTP in the benchmark) is the caller's.
 */

/** A digest the platform must know for a model's measured component (a reference value). */
export interface ReferenceValue {
  component: MeasuredComponent;
  /** SHA-256, hex. */
  digest: string;
  description: string;
}

/** A registered factory station, ready to make devices. */
export interface FactoryStation {
  readonly name: string;
  /** The station's CA certificate (PEM): it issues the birth certificates. */
  readonly caPem: string;
  /** Rampart's root CA (PEM), which devices pin for provisioning. */
  readonly rootPem: string;
  /** The station key, which also signs the batch manifests. */
  readonly publicKey: KeyObject;
  sign(data: Uint8Array): Promise<Buffer>;
  /** A birth certificate (PEM) for a device key (SPKI, DER). */
  issueBirthCertificate(device: { deviceId: string; serial: string; spki: Buffer }): Promise<string>;
}

/** What the simulator needs of a factory; `rampart sim --zero-touch` implements it over the API. */
export interface Factory {
  /**
   * Get the station ready for devices of `model`: registered (or found again), the model created,
   * and `references` registered as the model's reference values.
   */
  open(model: string, references: readonly ReferenceValue[]): Promise<FactoryStation>;
  /** Import a signed batch manifest into the platform. */
  importBatch(manifest: BatchManifest): Promise<void>;
}

/** The firmware a virtual device boots: what it measures, in boot order, one image per component. */
export const SIMULATED_BOOT: readonly { component: MeasuredComponent; description: string }[] = [
  { component: 'bootloader', description: 'rampart-sim bootloader 2026.01' },
  { component: 'os', description: 'rampart-sim rootfs 2026.11' },
  { component: 'application', description: 'rampart-sim application 1.0.0-sim' },
  { component: 'configuration', description: 'rampart-sim configuration 1' },
];

const imageOf = (description: string) => Buffer.from(`${description}\n`, 'utf8');

/** The reference values of the simulated firmware: what the platform must know to affirm a virtual device. */
export function simulatedReferenceValues(): ReferenceValue[] {
  return SIMULATED_BOOT.map(({ component, description }) => ({
    component,
    digest: createHash('sha256').update(imageOf(description)).digest('hex'),
    description,
  }));
}

/**
 * A measured boot of the simulated firmware: each image's SHA-256 extended into its component's
 * register (a TPM PCR, or the software register) and appended to the event log, as the agent's
 * `measure` does on a real device. Starts from a fresh register and log.
 */
export async function measureSimulatedBoot(register: MeasurementRegister, log: EventLog): Promise<void> {
  for (const { component, description } of SIMULATED_BOOT)
    await measure({ register, log, component, data: imageOf(description), description });
}

/** The manifest of a batch, signed by the station (`rampart-batch-manifest/1`). */
export function signedManifest(
  station: FactoryStation,
  batch: string,
  devices: readonly ManifestDevice[],
  createdAt: Date,
): Promise<BatchManifest> {
  return signDocument(
    {
      format: MANIFEST_FORMAT,
      batch,
      station: station.name,
      createdAt: createdAt.toISOString(),
      closedAt: new Date().toISOString(),
      devices: [...devices],
    },
    station,
  ) as Promise<BatchManifest>;
}

/** A batch name from its time: `<prefix>-YYYYMMDD-HHMMSS-mmm`. */
export function batchName(prefix: string, at: Date): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace('T', '-').replace('.', '-').replace(/Z$/, '');
  return `${prefix}-${stamp}`;
}
