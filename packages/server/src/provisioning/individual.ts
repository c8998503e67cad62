import type { EnrollmentPolicyView } from '@rampart/shared/api';
import type { FleetRegistry } from '../fleet/registry.js';
import { checkDeviceIdentity } from '../identity/csr-policy.js';
import {
  EnrollmentRefusal,
  type EnrollmentContext,
  type EnrollmentDecision,
} from '../identity/enrollment/policy.js';
import { keyFingerprintOf } from '../identity/x509.js';
import type { Executor } from '../storage/index.js';
import type { Batches } from './batches.js';
import { placeAndActivate, refuseUnlessEnrollable } from './claim.js';
import type { EnrollmentPolicies } from './policies.js';

/**
 * Individual enrollment: one device known in advance by its key (SHA-256 of the SPKI) or by a
 * certificate it holds (SHA-256 of the DER) — a vendor certificate, a self-signed one, a TPM key a
 * customer registered. The device proves the key either as its TLS client certificate or through
 * an attestation token earned with evidence signed by that key. A known key enrolls for that same
 * key; a known certificate authenticates the request for whatever key the CSR carries.
 */
export interface IndividualMatch {
  policy: EnrollmentPolicyView;
  by: 'key' | 'certificate';
  fingerprint: string;
}

export class IndividualPolicy {
  constructor(
    private readonly batches: Batches,
    private readonly policies: EnrollmentPolicies,
    private readonly fleet: FleetRegistry,
    private readonly certificateHours: () => number,
  ) {}

  /** The enabled individual policy for this key or certificate, if there is one. */
  async match(
    db: Executor,
    presented: { keyFingerprint: string | null; certificateFingerprint: string | null },
  ): Promise<IndividualMatch | null> {
    if (!presented.keyFingerprint && !presented.certificateFingerprint) return null;
    for (const policy of await this.policies.list(db, 'individual')) {
      if (!policy.enabled) continue;
      const { keyFingerprint, certificateFingerprint } = policy.config;
      if (keyFingerprint && keyFingerprint === presented.keyFingerprint)
        return { policy, by: 'key', fingerprint: keyFingerprint };
      if (certificateFingerprint && certificateFingerprint === presented.certificateFingerprint)
        return { policy, by: 'certificate', fingerprint: certificateFingerprint };
    }
    return null;
  }

  async decide(db: Executor, ctx: EnrollmentContext, match: IndividualMatch): Promise<EnrollmentDecision> {
    const { policy } = match;
    const deviceId = policy.config.deviceId!;
    const mismatch = checkDeviceIdentity(ctx.csr, deviceId);
    if (mismatch) throw new EnrollmentRefusal(403, mismatch.reason, deviceId);
    if (match.by === 'key' && keyFingerprintOf(ctx.csr.publicKeyDer) !== match.fingerprint)
      throw new EnrollmentRefusal(
        403,
        `individual policy ${policy.name} enrolls device ${deviceId} for its registered key only; the request is for another key`,
        deviceId,
      );
    const status = await refuseUnlessEnrollable(db, deviceId);
    const record = await this.batches.byDevice(db, deviceId);
    const model = record?.model ?? policy.placement.model;
    if (!model && !status)
      throw new EnrollmentRefusal(
        403,
        `individual policy ${policy.name} places device ${deviceId} in no model; set placement.model`,
        deviceId,
      );
    const batchRow = record ? await this.batches.batch(db, record.batch) : null;
    return {
      deviceId,
      policy: `${policy.name}@${policy.version}`,
      policyKind: 'individual',
      policyVersion: policy.version,
      ...(model ? { model } : {}),
      zeroTouch: !!record,
      trace: batchRow ? { batch: batchRow.id, station: batchRow.station } : null,
      validityHours: this.certificateHours(),
      renews: null,
      supersede: false,
      credential:
        match.by === 'key'
          ? { individualKey: match.fingerprint }
          : { individualCertificate: match.fingerprint },
      commit: (tx) => placeAndActivate(tx, this.policies, this.fleet, deviceId, policy, record, status),
    };
  }
}
