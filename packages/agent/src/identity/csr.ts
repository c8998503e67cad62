import { DEVICE_ID_PATTERN, buildCsr, deviceUri } from '@rampart/shared/pki';
import { AgentError } from '../errors.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';

/** Refuse a device id the registry (and so the CA) would never accept, before anything is sent. */
export function checkDeviceId(deviceId: string): string {
  if (!DEVICE_ID_PATTERN.test(deviceId))
    throw new AgentError(
      'USAGE',
      `"${deviceId}" is not a device id: use 1 to 128 letters, digits, ".", "_", ":" or "-", starting with a letter or digit`,
    );
  return deviceId;
}

/**
 * A PKCS#10 request for the device's identity key: subject CN = device id, SAN URI
 * `urn:rampart:device:<id>`. The key is created in the anchor if there is none yet, and the request
 * is signed by the anchor (the key never leaves it). Returns DER.
 */
export async function createDeviceCsr(anchor: TrustAnchor, deviceId: string): Promise<Buffer> {
  checkDeviceId(deviceId);
  const publicKey = await anchor.ensureKey();
  return buildCsr({
    commonName: deviceId,
    publicKey,
    sanUris: [deviceUri(deviceId)],
    sign: (data) => anchor.sign(data),
  });
}
