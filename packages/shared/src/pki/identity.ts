/**
 * How a device's identity appears in its certificate: the device id is the subject CN and the
 * SAN URI `urn:rampart:device:<id>`. Device ids are the registry's ids (letters, digits, `.`, `_`, `:`, `-`).
 */
export const DEVICE_URI_PREFIX = 'urn:rampart:device:';
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function deviceUri(deviceId: string): string {
  return DEVICE_URI_PREFIX + deviceId;
}

/** The device id in a `urn:rampart:device:` URI, or null when the URI is not one. */
export function deviceIdFromUri(uri: string): string | null {
  if (!uri.startsWith(DEVICE_URI_PREFIX)) return null;
  const id = uri.slice(DEVICE_URI_PREFIX.length);
  return DEVICE_ID_PATTERN.test(id) ? id : null;
}

/**
 * A claim certificate names its enrollment policy in the SAN URI `urn:rampart:claim:<policy>`; it is
 * shared by the devices of a batch and identifies none of them.
 */
export const CLAIM_URI_PREFIX = 'urn:rampart:claim:';

export function claimUri(policy: string): string {
  return CLAIM_URI_PREFIX + policy;
}
