import { normalizeSerial } from '@rampart/shared/pki';
import { deviceIdFromSan } from '../x509.js';
import { checkDeviceIdentity } from '../csr-policy.js';
import type { CertificateRegistry } from '../certificates.js';
import type { Executor } from '../../storage/index.js';
import { enrollableDevice } from './device-check.js';
import {
  EnrollmentRefusal,
  type EnrollmentContext,
  type EnrollmentDecision,
  type EnrollmentPolicy,
} from './policy.js';

/**
 * Re-enrollment (EST simplereenroll) authenticated by the device's current certificate over mutual
 * TLS. The certificate must be one Rampart issued to a device, unrevoked and unexpired; the new
 * certificate is for the same identity, renews it (lineage) and, by default, supersedes it.
 */
export class CurrentCertificatePolicy implements EnrollmentPolicy {
  readonly name = 'current-certificate';

  constructor(
    private readonly registry: CertificateRegistry,
    private readonly validityHours: () => number,
    private readonly supersede: () => boolean,
  ) {}

  handles(ctx: EnrollmentContext): boolean {
    return ctx.operation === 'simplereenroll';
  }

  async decide(db: Executor, ctx: EnrollmentContext): Promise<EnrollmentDecision> {
    const cert = ctx.credentials.clientCertificate;
    if (!cert && ctx.credentials.clientCertificateError)
      throw new EnrollmentRefusal(
        403,
        `the client certificate was not accepted (${ctx.credentials.clientCertificateError}); a device whose certificate expired or is not from Rampart's CA enrolls again with a new token`,
      );
    if (!cert)
      throw new EnrollmentRefusal(
        401,
        'simplereenroll needs the current device certificate as the TLS client certificate; a device without a valid certificate enrolls again with a new token',
      );
    const serial = normalizeSerial(cert.serialNumber);
    const record = await this.registry.find(db, serial);
    if (!record || record.profile !== 'device' || !record.deviceId)
      throw new EnrollmentRefusal(
        403,
        `the client certificate ${serial} is not a device certificate Rampart issued`,
      );
    const deviceId = record.deviceId;
    if (record.state === 'revoked')
      throw new EnrollmentRefusal(
        403,
        `the client certificate ${serial} was revoked (${record.revocationReason ?? 'unspecified'}); the device must enroll again with a new token`,
        deviceId,
      );
    if (record.state === 'expired' || Date.parse(record.notAfter) <= Date.now())
      throw new EnrollmentRefusal(
        403,
        `the client certificate ${serial} has expired; the device must enroll again with a new token`,
        deviceId,
      );
    const sanDevice = deviceIdFromSan(cert);
    if (sanDevice && sanDevice !== deviceId)
      throw new EnrollmentRefusal(
        403,
        `the client certificate names device ${sanDevice}, but it was issued to ${deviceId}`,
        deviceId,
      );
    const mismatch = checkDeviceIdentity(ctx.csr, deviceId);
    if (mismatch)
      throw new EnrollmentRefusal(403, `re-enrollment must keep the identity: ${mismatch.reason}`, deviceId);
    await enrollableDevice(db, deviceId);
    return {
      deviceId,
      policy: this.name,
      validityHours: this.validityHours(),
      renews: serial,
      supersede: this.supersede(),
      credential: { clientCertificate: serial },
      commit: async () => {},
    };
  }
}
