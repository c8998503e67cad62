import { X509Certificate, createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { EnrollmentPolicyView } from '@rampart/shared/api';
import { CLAIM_URI_PREFIX, DEVICE_ID_PATTERN, PkiFormatError, fromPem, parseCsr } from '@rampart/shared/pki';
import { RampartError } from '../errors.js';
import { isUniqueViolation } from '../fleet/devices.js';
import type { FleetRegistry } from '../fleet/registry.js';
import { checkDeviceIdentity } from '../identity/csr-policy.js';
import {
  EnrollmentRefusal,
  type EnrollmentContext,
  type EnrollmentDecision,
} from '../identity/enrollment/policy.js';
import type { IdentityService } from '../identity/service.js';
import type { Executor } from '../storage/index.js';
import { isoNow } from '../time.js';
import type { Batches } from './batches.js';
import type { EnrollmentPolicies } from './policies.js';
import { certificateFingerprint } from './stations.js';

/**
 * Claim-certificate enrollment: one certificate (and key) shared by the devices of a batch — baked
 * into their firmware image, say — that lets each of them enroll once for its own operational
 * certificate. Deny by default: a device enrolls only if its id is on the policy's allowlist, only
 * once per device id, and at most `ratePerMinute` enrollments a minute go through the policy, so a
 * leaked claim key is worth little: no id outside the allowlist, no second certificate for an id, and
 * a slow trickle an operator sees in the audit log long before the batch is used up.
 *
 * The claim certificate is the TLS client certificate of the request; TLS proves the key. Rampart
 * recognises it by its serial and exact bytes among the certificates it issued, never by the chain
 * the client sends.
 */
export const DEFAULT_CLAIM_RATE_PER_MINUTE = 60;
export const DEFAULT_CLAIM_VALIDITY_DAYS = 365;

/** The policy a certificate claims to be a claim certificate for, by its SAN URI; null if none. */
export function claimPolicyOf(cert: X509Certificate): string | null {
  const san = cert.subjectAltName ?? '';
  for (const entry of san.split(/,\s*/)) {
    if (entry.startsWith(`URI:${CLAIM_URI_PREFIX}`)) return entry.slice(4 + CLAIM_URI_PREFIX.length);
  }
  return null;
}

export interface IssuedClaimCertificate {
  certificate: string;
  chain: string[];
  privateKey?: string;
  serial: string;
  fingerprint: string;
  notAfter: string;
}

/** Refuse enrollment of a device whose registry status forbids it (shared by the provisioning policies). */
export async function refuseUnlessEnrollable(db: Executor, deviceId: string): Promise<string | null> {
  const existing = await db
    .selectFrom('devices')
    .select('status')
    .where('id', '=', deviceId)
    .executeTakeFirst();
  if (existing?.status === 'disabled')
    throw new EnrollmentRefusal(
      403,
      `device ${deviceId} is disabled; enable it before it can get a certificate`,
      deviceId,
    );
  if (existing?.status === 'decommissioned')
    throw new EnrollmentRefusal(
      403,
      `device ${deviceId} was decommissioned; to provision it again: rampart device reprovision ${deviceId}`,
      deviceId,
    );
  if (existing?.status === 'quarantined')
    throw new EnrollmentRefusal(
      403,
      `device ${deviceId} is quarantined; release it after investigation first`,
      deviceId,
    );
  return existing?.status ?? null;
}

export class ClaimPolicy {
  constructor(
    private readonly identity: IdentityService,
    private readonly batches: Batches,
    private readonly policies: EnrollmentPolicies,
    private readonly fleet: FleetRegistry,
    private readonly certificateHours: () => number,
  ) {}

  /**
   * Issue the claim certificate of a claim policy: for the key of `csrPem` when given (the key never
   * leaves whoever holds it), otherwise for a new key returned once with the certificate.
   */
  async issue(
    db: Executor,
    name: string,
    options: { csrPem?: string; validityDays?: number } = {},
  ): Promise<IssuedClaimCertificate> {
    const policy = await this.policies.get(db, name);
    if (policy.kind !== 'claim')
      throw new RampartError(
        'CONFLICT',
        `enrollment policy ${name} is a ${policy.kind} policy; claim certificates belong to claim policies`,
      );
    let spki: Buffer;
    let privateKey: string | undefined;
    if (options.csrPem) {
      const bad = (message: string) =>
        new RampartError('VALIDATION', `csr: ${message}`, [{ field: 'csr', message }]);
      let csr;
      try {
        const der = fromPem(options.csrPem, 'CERTIFICATE REQUEST')[0];
        if (!der) throw bad('is not a PEM certificate request');
        csr = parseCsr(der);
      } catch (err) {
        if (err instanceof PkiFormatError) throw bad(err.message);
        throw err;
      }
      if (!csr.signatureValid) throw bad('the signature does not verify');
      spki = csr.publicKeyDer;
    } else {
      const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      spki = createPublicKey(pair.privateKey).export({ type: 'spki', format: 'der' });
      privateKey = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    }
    const issued = await this.identity.issuer.issueClaim(db, {
      spki,
      policy: name,
      batch: policy.config.batch!,
      validityDays: options.validityDays ?? DEFAULT_CLAIM_VALIDITY_DAYS,
    });
    const pem = issued.record.certificatePem;
    const chain = this.identity.chainOf(issued.record).slice(pem.length);
    return {
      certificate: pem,
      chain: chain.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g) ?? [],
      ...(privateKey ? { privateKey } : {}),
      serial: issued.record.serial,
      fingerprint: certificateFingerprint(new X509Certificate(issued.der)),
      notAfter: issued.record.notAfter,
    };
  }

  async decide(db: Executor, ctx: EnrollmentContext, leaf: X509Certificate): Promise<EnrollmentDecision> {
    const claimed = ctx.csr.commonName ?? undefined;
    const serial = leaf.serialNumber.toLowerCase();
    const row = await db
      .selectFrom('certificates')
      .select(['certificate', 'status', 'not_before', 'not_after', 'enrollment_policy'])
      .where('serial', '=', serial)
      .where('profile', '=', 'claim')
      .executeTakeFirst();
    if (!row || !new X509Certificate(row.certificate).raw.equals(leaf.raw))
      throw new EnrollmentRefusal(401, 'the claim certificate was not issued by this Rampart', claimed);
    if (row.status !== 'good')
      throw new EnrollmentRefusal(
        401,
        `the claim certificate ${serial} was revoked; ask for a new one (rampart enrollment policy claim-certificate)`,
        claimed,
      );
    const now = Date.now();
    if (now < Date.parse(row.not_before) || now > Date.parse(row.not_after))
      throw new EnrollmentRefusal(
        401,
        `the claim certificate ${serial} is not valid now (valid ${row.not_before} to ${row.not_after})`,
        claimed,
      );
    const policy = row.enrollment_policy ? await this.policies.find(db, row.enrollment_policy) : null;
    if (!policy || policy.kind !== 'claim')
      throw new EnrollmentRefusal(
        403,
        `the claim policy ${row.enrollment_policy ?? '(none)'} of this claim certificate no longer exists`,
        claimed,
      );
    if (!policy.enabled) throw new EnrollmentRefusal(403, `claim policy ${policy.name} is disabled`, claimed);
    if (!claimed || !DEVICE_ID_PATTERN.test(claimed))
      throw new EnrollmentRefusal(
        400,
        'the CSR subject CN must be the device id when enrolling with a claim certificate',
        claimed,
      );
    const deviceId = claimed;
    const mismatch = checkDeviceIdentity(ctx.csr, deviceId);
    if (mismatch) throw new EnrollmentRefusal(403, mismatch.reason, deviceId);
    if (!(policy.config.allowlist ?? []).includes(deviceId))
      throw new EnrollmentRefusal(
        403,
        `device ${deviceId} is not on the allowlist of claim policy ${policy.name}`,
        deviceId,
      );
    const batch = policy.config.batch!;
    const record = await this.batches.byDevice(db, deviceId);
    if (record && record.batch !== batch)
      throw new EnrollmentRefusal(
        403,
        `device ${deviceId} was made in batch ${record.batch}, not in batch ${batch} that claim policy ${policy.name} serves`,
        deviceId,
      );
    const used = await db
      .selectFrom('claim_uses')
      .select('used_at')
      .where('policy', '=', policy.name)
      .where('device_id', '=', deviceId)
      .executeTakeFirst();
    if (used)
      throw new EnrollmentRefusal(
        403,
        `the claim certificate of policy ${policy.name} was already used for device ${deviceId} (${used.used_at}); a device enrolls with it once`,
        deviceId,
      );
    const rate = policy.config.ratePerMinute ?? DEFAULT_CLAIM_RATE_PER_MINUTE;
    const recent = await db
      .selectFrom('claim_uses')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('policy', '=', policy.name)
      .where('used_at', '>', new Date(now - 60_000).toISOString())
      .executeTakeFirstOrThrow();
    if (Number(recent.n) >= rate)
      throw Object.assign(
        new EnrollmentRefusal(
          403,
          `claim policy ${policy.name} admits ${rate} enrollments a minute; retry later`,
          deviceId,
        ),
        { httpStatus: 429 },
      );
    const status = await refuseUnlessEnrollable(db, deviceId);
    const model = record?.model ?? policy.placement.model;
    if (!model && !status)
      throw new EnrollmentRefusal(
        403,
        `claim policy ${policy.name} places devices in no model and device ${deviceId} is in no manifest; set placement.model`,
        deviceId,
      );
    const batchRow = record ? await this.batches.batch(db, record.batch) : null;
    return {
      deviceId,
      policy: `${policy.name}@${policy.version}`,
      policyKind: 'claim',
      policyVersion: policy.version,
      ...(model ? { model } : {}),
      zeroTouch: !!record,
      trace: batchRow ? { batch: batchRow.id, station: batchRow.station } : null,
      validityHours: this.certificateHours(),
      renews: null,
      supersede: false,
      credential: { claimCertificate: serial },
      commit: async (tx, issuedSerial) => {
        try {
          await tx
            .insertInto('claim_uses')
            .values({
              policy: policy.name,
              device_id: deviceId,
              certificate_serial: issuedSerial,
              used_at: isoNow(),
            })
            .execute();
        } catch (err) {
          if (isUniqueViolation(err))
            throw new EnrollmentRefusal(
              403,
              `the claim certificate of policy ${policy.name} was already used for device ${deviceId}`,
              deviceId,
            );
          throw err;
        }
        await placeAndActivate(tx, this.policies, this.fleet, deviceId, policy, record, status);
      },
    };
  }
}

/** Register the device where the policy places it on first enrollment, and activate a pending one. */
export async function placeAndActivate(
  tx: Executor,
  policies: EnrollmentPolicies,
  fleet: FleetRegistry,
  deviceId: string,
  policy: EnrollmentPolicyView,
  record: { model: string; hardwareRevision: string | null; serial: string } | null,
  status: string | null,
): Promise<void> {
  const placed = await policies.place(
    tx,
    deviceId,
    {
      model: record?.model ?? '',
      hardwareRevision: record?.hardwareRevision ?? null,
      serial: record?.serial ?? null,
    },
    policy.placement,
  );
  if ((placed.created ? 'pending' : status) === 'pending')
    await fleet.devices.setDeviceStatus(tx, deviceId, 'active');
}
