import { randomBytes } from 'node:crypto';
import {
  TRANSCRIPT_FORMAT,
  keyIdOf,
  signingBytes,
  type ProvisioningTranscript,
} from '@rampart/shared/provisioning';
import type { AttestationEvidenceRef, EnrollmentContext } from '../identity/enrollment/policy.js';
import { RampartError } from '../errors.js';
import type { PlatformKey } from '../keystore/index.js';
import type { Executor } from '../storage/index.js';
import { isoNow } from '../time.js';

/**
 * Provisioning transcripts: for every enrollment, a JSON record of what was presented and decided
 * — evidence digest, attestation result, the policy and its version, CSR, certificate, decision,
 * time — signed by the platform's transcript key (a key of its own, used for nothing else). Anyone
 * with the published public key can check one offline: `rampart transcript verify FILE`.
 */
export const TRANSCRIPT_KEY_LABEL = 'provisioning-transcript';

export interface TranscriptInput {
  ctx: EnrollmentContext;
  deviceId: string;
  policy: { name: string; kind: string; version: number };
  credential: Record<string, string>;
  attestation: AttestationEvidenceRef | null;
  trace: { batch: string; station: string } | null;
  decision: 'issued' | 'refused';
  reason: string | null;
  certificate: { serial: string; pem: string } | null;
}

export class Transcripts {
  /** The key id every signature names (SHA-256 of the key's SPKI), computed once. */
  private readonly keyId: string;

  constructor(private readonly key: PlatformKey) {
    this.keyId = keyIdOf(key.publicKey);
  }

  publicKeyPem(): string {
    return this.key.publicKey.export({ type: 'spki', format: 'pem' }) as string;
  }

  async record(db: Executor, input: TranscriptInput): Promise<ProvisioningTranscript> {
    const id = `tr-${randomBytes(9).toString('base64url')}`;
    const time = isoNow();
    const body = {
      format: TRANSCRIPT_FORMAT as typeof TRANSCRIPT_FORMAT,
      id,
      deviceId: input.deviceId,
      time,
      operation: input.ctx.operation,
      decision: input.decision,
      reason: input.reason,
      policy: input.policy,
      credential: input.credential,
      evidenceDigest: input.attestation?.evidenceDigest ?? null,
      attestation: input.attestation
        ? {
            id: input.attestation.id,
            status: input.attestation.status,
            anchor: input.attestation.anchor,
            reasons: input.attestation.reasons,
          }
        : null,
      trace: input.trace,
      csr: input.ctx.csr.der.toString('base64'),
      certificate: input.certificate?.pem ?? null,
    };
    // As signDocument signs (canonical JSON without `signature`), with the key id computed once.
    const value = await this.key.sign(signingBytes(body));
    const doc = {
      ...body,
      signature: {
        algorithm: 'ecdsa-p256-sha256' as const,
        keyId: this.keyId,
        value: value.toString('base64'),
      },
    };
    await db
      .insertInto('provisioning_transcripts')
      .values({
        id,
        device_id: input.deviceId,
        certificate_serial: input.certificate?.serial ?? null,
        decision: input.decision,
        created_at: time,
        document: JSON.stringify(doc),
      })
      .execute();
    return doc as ProvisioningTranscript;
  }

  async list(db: Executor, deviceId: string): Promise<ProvisioningTranscript[]> {
    const rows = await db
      .selectFrom('provisioning_transcripts')
      .select('document')
      .where('device_id', '=', deviceId)
      .orderBy('created_at', 'desc')
      .execute();
    return rows.map((r) => JSON.parse(r.document) as ProvisioningTranscript);
  }

  async get(db: Executor, id: string): Promise<ProvisioningTranscript> {
    const row = await db
      .selectFrom('provisioning_transcripts')
      .select('document')
      .where('id', '=', id)
      .executeTakeFirst();
    if (!row) throw new RampartError('NOT_FOUND', `transcript ${id} does not exist`);
    return JSON.parse(row.document) as ProvisioningTranscript;
  }
}
