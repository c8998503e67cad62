import type { X509Certificate } from 'node:crypto';
import type { ParsedCsr } from '@rampart/shared/pki';
import type { Executor } from '../../storage/index.js';

/**
 * Who may enroll is decided by enrollment policies. The EST server parses the request and its
 * credentials, asks each policy in turn whether it handles them, and lets the first that does
 * decide. A policy either returns a decision — which device the certificate is for, for how long,
 * which certificate it renews — or throws an {@link EnrollmentRefusal}. Everything a policy writes
 * (a token marked used, a device registered) happens in the transaction that records the
 * certificate, so a refused or failed issuance changes nothing.
 *
 * This issue ships the one-time token policy and re-enrollment by current certificate; the
 * provisioning capability adds individual, group (manufacturing CA + batch manifest), claim
 * certificate and attestation-gated policies through this same interface.
 */
export type EstOperation = 'simpleenroll' | 'simplereenroll';

export interface EnrollmentCredentials {
  basic?: { username: string; password: string };
  bearer?: string;
  /** The TLS client certificate, when the client presented one that chains to a Rampart CA. */
  clientCertificate?: X509Certificate;
  /**
   * The client certificate as presented, verified or not, with the intermediates the client sent:
   * birth and claim certificates are checked by their policies against the issuers Rampart knows.
   */
  presentedChain?: X509Certificate[];
  /** A one-time attestation token (`rpa_…`), from `Authorization: Bearer` or `Rampart-Attestation`. */
  attestationToken?: string;
  /** Why a presented client certificate was not accepted by TLS (e.g. `CERT_HAS_EXPIRED`), when it was not. */
  clientCertificateError?: string;
}

export interface EnrollmentContext {
  operation: EstOperation;
  csr: ParsedCsr;
  credentials: EnrollmentCredentials;
  remoteAddress: string;
}

export interface EnrollmentDecision {
  deviceId: string;
  /** Name (and version) of the deciding policy, recorded with the certificate. */
  policy: string;
  validityHours: number;
  /** Serial of the certificate this one renews (lineage), if any. */
  renews: string | null;
  /** Revoke the renewed certificate as superseded once the new one is issued. */
  supersede: boolean;
  /** What to record in the audit entry about the credentials (never secrets). */
  credential: Record<string, string>;
  /** Writes that belong to the decision (token used, device activated); run in the issuing transaction. */
  commit(tx: Executor, issuedSerial: string): Promise<void>;
  /** The kind and version of the deciding policy, for the provisioning transcript. */
  policyKind?: string;
  policyVersion?: number;
  /** The device model, when the policy knows it before the device is registered. */
  model?: string;
  /** Zero-touch: the device comes from the factory (the attestation defaults are stricter). */
  zeroTouch?: boolean;
  /** The attestation result the policy already redeemed, if it decided on one. */
  attestation?: AttestationEvidenceRef | null;
  /** Where the device was made, if known. */
  trace?: { batch: string; station: string } | null;
}

export interface AttestationEvidenceRef {
  id: string;
  status: 'affirming' | 'warning' | 'contraindicated';
  anchor: 'tpm' | 'pkcs11' | 'software';
  reasons: string[];
  evidenceDigest: string;
}

/**
 * A check every issuance passes after its policy decided (the attestation gate): it may refuse,
 * change the validity, and add writes and transcript facts.
 */
export interface IssuanceGate {
  check(
    tx: Executor,
    ctx: EnrollmentContext,
    decision: EnrollmentDecision,
  ): Promise<{
    validityHours?: number;
    attestation: AttestationEvidenceRef | null;
    commit?(tx: Executor): Promise<void>;
  }>;
  /** After the certificate is recorded, in the same transaction (the transcript). */
  issued(
    tx: Executor,
    ctx: EnrollmentContext,
    decision: EnrollmentDecision,
    attestation: AttestationEvidenceRef | null,
    certificate: { serial: string; pem: string },
  ): Promise<void>;
}

export class EnrollmentRefusal extends Error {
  constructor(
    /** 401: credentials missing or not accepted; 403: accepted but this enrollment is not allowed; 400: request at fault. */
    readonly status: 400 | 401 | 403,
    message: string,
    /** The device the request claimed to be, for the audit entry. */
    readonly deviceId?: string,
  ) {
    super(message);
    this.name = 'EnrollmentRefusal';
  }
}

export interface EnrollmentPolicy {
  readonly name: string;
  /** Whether this policy handles requests with these credentials. */
  handles(ctx: EnrollmentContext): boolean;
  /** Decide, reading what it needs through `db`; throw EnrollmentRefusal to refuse. */
  decide(db: Executor, ctx: EnrollmentContext): Promise<EnrollmentDecision>;
}
