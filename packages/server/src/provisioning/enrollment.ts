import { X509Certificate } from 'node:crypto';
import type { EnrollmentPolicyView } from '@rampart/shared/api';
import { checkDeviceIdentity } from '../identity/csr-policy.js';
import { keyFingerprintOf } from '../identity/x509.js';
import {
  EnrollmentRefusal,
  type AttestationEvidenceRef,
  type EnrollmentContext,
  type EnrollmentDecision,
  type EnrollmentPolicy,
  type IssuanceGate,
} from '../identity/enrollment/policy.js';
import type { FleetRegistry } from '../fleet/registry.js';
import type { Executor } from '../storage/index.js';
import type { AttestationResultsTable } from '../storage/schema.js';
import type { AttestationService } from './attestation.js';
import type { Batches, ManifestRecord } from './batches.js';
import { BirthRefusal, type BirthCertificates, type CheckedBirthCertificate } from './birth.js';
import type { EnrollmentPolicies } from './policies.js';
import type { Transcripts } from './transcripts.js';
import { claimPolicyOf, placeAndActivate, refuseUnlessEnrollable, type ClaimPolicy } from './claim.js';
import type { IndividualPolicy } from './individual.js';
import { certificateFingerprint } from './stations.js';

/**
 * Zero-touch enrollment: a factory-made device, known by its birth certificate and found in an
 * imported manifest, enrolls under the first enabled `group` policy that accepts its issuer and
 * model. It authenticates either with a one-time attestation token (the agent's way: the birth key
 * signed the evidence, and the CSR is for that key) or with the birth certificate as TLS client
 * certificate (what an unmodified EST client does). Either way the device is registered on its first
 * enrollment where the policy places it.
 */
function issuerMatches(policy: EnrollmentPolicyView, issuer: CheckedBirthCertificate['issuer']): boolean {
  const issuers = policy.config.issuers ?? ['*'];
  return issuers.some(
    (i) =>
      i === '*' || (i === 'rampart' && issuer.kind === 'rampart') || i === `${issuer.kind}:${issuer.name}`,
  );
}

export class ZeroTouchPolicy implements EnrollmentPolicy {
  readonly name = 'zero-touch';

  constructor(
    private readonly birth: BirthCertificates,
    private readonly batches: Batches,
    private readonly policies: EnrollmentPolicies,
    private readonly attestation: AttestationService,
    private readonly fleet: FleetRegistry,
  ) {}

  handles(ctx: EnrollmentContext): boolean {
    if (ctx.operation !== 'simpleenroll' || ctx.credentials.basic) return false;
    if (ctx.credentials.attestationToken) return true;
    // A presented certificate that is not a Rampart device certificate: a birth certificate.
    return (
      !ctx.credentials.bearer &&
      !ctx.credentials.clientCertificate &&
      !!ctx.credentials.presentedChain?.length
    );
  }

  /** `redeemed`: the token's lookup when the caller made it already (the router does). */
  async decide(
    db: Executor,
    ctx: EnrollmentContext,
    redeemed?: AttestationResultsTable | string,
  ): Promise<EnrollmentDecision> {
    const claimed = ctx.csr.commonName ?? undefined;
    let result: AttestationResultsTable | null = null;
    // With a token, the device is the one its attestation found in a manifest (the birth
    // certificate stored there is checked again below: the station may have been revoked since).
    let record: ManifestRecord | null = null;
    let birthPem: string;
    if (ctx.credentials.attestationToken) {
      const r = redeemed ?? (await this.attestation.redeemable(db, ctx.credentials.attestationToken));
      if (typeof r === 'string') throw new EnrollmentRefusal(401, r, claimed);
      result = r;
      if (!r.birth_fingerprint)
        throw new EnrollmentRefusal(
          403,
          'this attestation token was not earned with a birth certificate, and no individual enrollment policy knows the key; a device without a birth certificate enrolls with an enrollment token or an individual policy',
          r.device_id,
        );
      record = await this.batches.byBirthFingerprint(db, r.birth_fingerprint);
      if (!record?.birthCertificate)
        throw new EnrollmentRefusal(
          403,
          `device ${r.device_id} is not in any imported manifest`,
          r.device_id,
        );
      birthPem = record.birthCertificate;
    } else {
      birthPem = ctx.credentials.presentedChain![0]!.toString();
    }
    let checked: CheckedBirthCertificate;
    try {
      checked = await this.birth.check(db, birthPem);
    } catch (err) {
      if (err instanceof BirthRefusal) throw new EnrollmentRefusal(403, err.message, claimed);
      throw err;
    }
    record ??= await this.batches.byBirthFingerprint(db, checked.fingerprint);
    if (!record)
      throw new EnrollmentRefusal(
        403,
        `device ${checked.deviceId ?? claimed ?? '(unnamed)'} is not in any imported manifest: import its batch first (rampart batch import FILE)`,
        checked.deviceId ?? claimed,
      );
    const deviceId = record.deviceId;
    const mismatch = checkDeviceIdentity(ctx.csr, deviceId);
    if (mismatch) throw new EnrollmentRefusal(403, mismatch.reason, deviceId);
    // The birth key is the device key: the CSR's signature proves the requester holds it.
    if (!ctx.csr.publicKeyDer.equals(checked.publicKey.export({ type: 'spki', format: 'der' })))
      throw new EnrollmentRefusal(
        403,
        'the request is for another key than the one the birth certificate certifies',
        deviceId,
      );
    if (result && result.key_fingerprint !== keyFingerprintOf(ctx.csr.publicKeyDer))
      throw new EnrollmentRefusal(
        403,
        'the attestation was for another key than the one in the request',
        deviceId,
      );

    const policy = (await this.policies.list(db, 'group')).find(
      (p) =>
        p.enabled &&
        issuerMatches(p, checked.issuer) &&
        (!p.config.models || p.config.models.includes(record.model)),
    );
    if (!policy)
      throw new EnrollmentRefusal(
        403,
        `no enabled group enrollment policy accepts birth certificates from ${checked.issuer.kind} ${checked.issuer.name} for model ${record.model}; create one: rampart enrollment policy create`,
        deviceId,
      );
    const status = await refuseUnlessEnrollable(db, deviceId);
    const batch = await this.batches.batch(db, record.batch);
    const attestation: AttestationEvidenceRef | null = result
      ? {
          id: result.id,
          status: result.status as AttestationEvidenceRef['status'],
          anchor: result.anchor as AttestationEvidenceRef['anchor'],
          reasons: JSON.parse(result.reasons) as string[],
          evidenceDigest: result.evidence_digest,
        }
      : null;
    const resultId = result?.id;
    return {
      deviceId,
      policy: `${policy.name}@${policy.version}`,
      policyKind: 'group',
      policyVersion: policy.version,
      model: record.model,
      zeroTouch: true,
      attestation,
      trace: { batch: record.batch, station: batch.station },
      validityHours: this.attestation.settings.certificateHours,
      renews: null,
      supersede: false,
      credential: resultId
        ? { attestationResult: resultId, birthCertificate: checked.serial }
        : { birthCertificate: checked.serial },
      commit: async (tx) => {
        if (resultId && !(await this.attestation.redeem(tx, resultId)))
          throw new EnrollmentRefusal(401, 'the attestation token was already used; attest again', deviceId);
        await placeAndActivate(tx, this.policies, this.fleet, deviceId, policy, record, status);
      },
    };
  }
}

/**
 * The provisioning capability's one entry into the EST server's policy list. Requests that carry a
 * certificate the TLS layer did not recognise as a Rampart device certificate, or an attestation
 * token, are routed: a claim certificate (by its SAN) to its claim policy; a key or certificate an
 * individual policy knows to that policy; everything else to zero-touch (birth certificate).
 */
export class ProvisioningEnrollment implements EnrollmentPolicy {
  readonly name = 'provisioning';

  constructor(
    private readonly zeroTouch: ZeroTouchPolicy,
    private readonly claim: ClaimPolicy,
    private readonly individual: IndividualPolicy,
    private readonly attestation: AttestationService,
  ) {}

  handles(ctx: EnrollmentContext): boolean {
    return this.zeroTouch.handles(ctx);
  }

  async decide(db: Executor, ctx: EnrollmentContext): Promise<EnrollmentDecision> {
    const leaf = ctx.credentials.presentedChain?.[0];
    if (leaf && claimPolicyOf(leaf) !== null) return this.claim.decide(db, ctx, leaf);
    let keyFingerprint: string | null = null;
    let certFingerprint: string | null = null;
    let redeemed: AttestationResultsTable | string | undefined;
    if (leaf) {
      keyFingerprint = keyFingerprintOf(leaf.publicKey.export({ type: 'spki', format: 'der' }));
      certFingerprint = certificateFingerprint(leaf);
    } else if (ctx.credentials.attestationToken) {
      // A token earned without a birth certificate: the evidence was signed by the device key.
      redeemed = await this.attestation.redeemable(db, ctx.credentials.attestationToken);
      if (typeof redeemed !== 'string' && !redeemed.birth_fingerprint)
        keyFingerprint = redeemed.key_fingerprint;
    }
    const match = await this.individual.match(db, {
      keyFingerprint,
      certificateFingerprint: certFingerprint,
    });
    if (match) return this.individual.decide(db, ctx, match);
    return this.zeroTouch.decide(db, ctx, redeemed);
  }
}

/**
 * The attestation gate every issuance passes: a model that requires attestation gets a certificate
 * only with a fresh, unused attestation result that admits it; the validity comes from the model's
 * setting; and every issuance leaves a signed transcript.
 */
export class AttestationGate implements IssuanceGate {
  constructor(
    private readonly attestation: AttestationService,
    private readonly transcripts: Transcripts,
  ) {}

  async check(tx: Executor, ctx: EnrollmentContext, decision: EnrollmentDecision) {
    const model =
      decision.model ??
      (
        await tx
          .selectFrom('devices')
          .select('model_id')
          .where('id', '=', decision.deviceId)
          .executeTakeFirst()
      )?.model_id;
    if (!model) return { attestation: null };
    const zeroTouch =
      decision.zeroTouch ??
      !!(await tx
        .selectFrom('manifest_devices')
        .select('device_id')
        .where('device_id', '=', decision.deviceId)
        .executeTakeFirst());
    const settings = await this.attestation.modelSettings(tx, model, zeroTouch);
    const validityHours = settings.configured ? settings.certificateHours : undefined;
    let ref = decision.attestation ?? null;
    let commit: ((tx: Executor) => Promise<void>) | undefined;
    if (!ref && ctx.credentials.attestationToken) {
      const r = await this.attestation.redeemable(tx, ctx.credentials.attestationToken);
      if (typeof r === 'string') throw new EnrollmentRefusal(401, r, decision.deviceId);
      if (r.device_id !== decision.deviceId)
        throw new EnrollmentRefusal(
          403,
          `the attestation token is for device ${r.device_id}`,
          decision.deviceId,
        );
      if (r.key_fingerprint !== keyFingerprintOf(ctx.csr.publicKeyDer))
        throw new EnrollmentRefusal(
          403,
          'the attestation was for another key than the one in the request',
          decision.deviceId,
        );
      ref = {
        id: r.id,
        status: r.status as AttestationEvidenceRef['status'],
        anchor: r.anchor as AttestationEvidenceRef['anchor'],
        reasons: JSON.parse(r.reasons) as string[],
        evidenceDigest: r.evidence_digest,
      };
      const id = r.id;
      commit = async (t) => {
        if (!(await this.attestation.redeem(t, id)))
          throw new EnrollmentRefusal(
            401,
            'the attestation token was already used; attest again',
            decision.deviceId,
          );
      };
    }
    if (!ref) {
      if (settings.attestation === 'required')
        throw new EnrollmentRefusal(
          403,
          `model ${model} requires a fresh affirming attestation before a certificate is ${ctx.operation === 'simplereenroll' ? 'renewed' : 'issued'}: attest first (rampart-agent provision / renew do) and present the attestation token`,
          decision.deviceId,
        );
      return { attestation: null, ...(validityHours ? { validityHours } : {}) };
    }
    if (ref.status === 'contraindicated')
      throw new EnrollmentRefusal(
        403,
        `the attestation result is contraindicated: ${ref.reasons.join('; ')}`,
        decision.deviceId,
      );
    if (ref.status === 'warning' && !settings.acceptWarning && settings.attestation !== 'off')
      throw new EnrollmentRefusal(
        403,
        `the attestation result is a warning (${ref.reasons.join('; ')}) and model ${model} admits only affirming results`,
        decision.deviceId,
      );
    if (ref.anchor === 'software' && !settings.admitSoftwareAnchor && settings.attestation !== 'off')
      throw new EnrollmentRefusal(
        403,
        `model ${model} does not admit devices with a software trust anchor (weaker: the key is a file on the device)`,
        decision.deviceId,
      );
    return { attestation: ref, ...(validityHours ? { validityHours } : {}), ...(commit ? { commit } : {}) };
  }

  async issued(
    tx: Executor,
    ctx: EnrollmentContext,
    decision: EnrollmentDecision,
    attestation: AttestationEvidenceRef | null,
    certificate: { serial: string; pem: string },
  ): Promise<void> {
    await this.transcripts.record(tx, {
      ctx,
      deviceId: decision.deviceId,
      policy: {
        name: decision.policy.replace(/@\d+$/, ''),
        kind: decision.policyKind ?? decision.policy,
        version: decision.policyVersion ?? 1,
      },
      credential: decision.credential,
      attestation,
      trace: decision.trace ?? null,
      decision: 'issued',
      reason: null,
      certificate,
    });
  }
}

/** The intermediates a TLS client sent after its certificate (leaf first). */
export function presentedChainOf(
  peer: { raw: Buffer; issuerCertificate?: unknown } | null | undefined,
): X509Certificate[] {
  const out: X509Certificate[] = [];
  let cur = peer as { raw: Buffer; issuerCertificate?: { raw: Buffer } } | undefined;
  while (cur?.raw && out.length < 4) {
    out.push(new X509Certificate(cur.raw));
    const next = cur.issuerCertificate as typeof cur | undefined;
    if (!next || next === cur || next.raw.equals(cur.raw)) break;
    cur = next;
  }
  return out;
}
