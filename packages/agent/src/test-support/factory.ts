import { join } from 'node:path';
import { toPem } from '@rampart/shared/pki';
import { createDeviceCsr } from '../identity/csr.js';
import { writeBirthIdentity, type BirthIdentity, type FactoryDevice } from '../provisioning/birth.js';
import { SoftwareTrustAnchor } from '../trust-anchor/software.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import type { TestCa, TestPki } from './pki.js';

/**
 * What a factory station does to a device, for the agent's tests: the key is created in the trust
 * anchor, a birth certificate for it is issued by the station CA, and the birth identity is written
 * into the device's data directory with the platform's root.
 */
export async function provisionAtFactory(options: {
  pki: TestPki;
  root: TestCa;
  station: TestCa;
  dataDir: string;
  deviceId: string;
  /** Default: the software anchor in `<dataDir>/identity/device-key.pem`. */
  anchor?: TrustAnchor;
  device?: Partial<Omit<FactoryDevice, 'format'>>;
}): Promise<{ anchor: TrustAnchor; birth: BirthIdentity }> {
  const anchor =
    options.anchor ?? new SoftwareTrustAnchor(join(options.dataDir, 'identity', 'device-key.pem'));
  await anchor.ensureKey();
  const csr = await createDeviceCsr(anchor, options.deviceId);
  const birthDer = options.pki.issue(csr, options.station, { days: 3650 });
  const birth = writeBirthIdentity(options.dataDir, {
    device: {
      deviceId: options.deviceId,
      serial: `SN-${options.deviceId}`,
      model: 'DW100',
      hardwareRevision: 'B',
      trustAnchor: anchor.kind,
      batch: 'batch-2026-11-a',
      station: 'station-1',
      provisionedAt: new Date().toISOString(),
      ...options.device,
    },
    birthCertificate: toPem('CERTIFICATE', birthDer),
    stationCaCertificate: options.station.pem,
    rootCa: options.root.pem,
  });
  return { anchor, birth };
}
