import { Type, type Static } from '@sinclair/typebox';
import { StringEnum, describeError, errorPath, validatorFor } from '../schema/index.js';
import { MEASURED_COMPONENTS } from '../attestation/index.js';
import type { DocumentSignature } from './signed.js';

/**
 * Wire formats of provisioning: what a factory station writes (batch manifests), what a device
 * sends to be attested (evidence), what the verifier concludes (attestation results) and what the
 * platform signs for every enrollment (transcripts). Documented in docs/provisioning.md.
 */

export const TRUST_ANCHOR_KINDS = ['tpm', 'pkcs11', 'software'] as const;
export type TrustAnchorKind = (typeof TRUST_ANCHOR_KINDS)[number];

const Base64 = (description: string, maxLength = 16_384) =>
  Type.String({ pattern: '^[A-Za-z0-9+/]+={0,2}$', maxLength, description });
const Hex64 = Type.String({ pattern: '^[0-9a-f]{64}$' });
const Pem = (label: string) => Type.String({ pattern: `^-----BEGIN ${label}-----`, maxLength: 16_384 });
const Name = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' });
const Time = Type.String({ format: 'date-time' });

const SignatureSchema = Type.Object(
  {
    algorithm: Type.Literal('ecdsa-p256-sha256'),
    keyId: Hex64,
    value: Base64('DER ECDSA signature', 512),
  },
  { additionalProperties: false },
);

// ---------------------------------------------------------------------------------------------
// Batch manifest

export const MANIFEST_FORMAT = 'rampart-batch-manifest/1';

export const ManifestDevice = Type.Object(
  {
    deviceId: Name,
    serial: Type.String({ minLength: 1, maxLength: 128 }),
    model: Name,
    hardwareRevision: Type.Union([Type.String({ minLength: 1, maxLength: 64 }), Type.Null()]),
    trustAnchor: StringEnum(TRUST_ANCHOR_KINDS),
    /** The device key's SubjectPublicKeyInfo (DER, base64): created inside the trust anchor. */
    publicKey: Base64('SubjectPublicKeyInfo, DER', 2048),
    /** The birth certificate (IDevID) the station issued, PEM; absent when `csr` is given. */
    birthCertificate: Type.Optional(Pem('CERTIFICATE')),
    /** A PKCS#10 request (DER, base64) for a birth certificate to be issued at import. */
    csr: Type.Optional(Base64('PKCS#10, DER', 8192)),
    /** For TPM devices: the endorsement and attestation keys' public areas (TPM2B_PUBLIC, base64). */
    tpm: Type.Optional(
      Type.Object(
        { ek: Base64('TPM2B_PUBLIC of the EK', 4096), ak: Base64('TPM2B_PUBLIC of the AK', 4096) },
        { additionalProperties: false },
      ),
    ),
    provisionedAt: Time,
  },
  { additionalProperties: false },
);
export type ManifestDevice = Static<typeof ManifestDevice>;

export const BatchManifest = Type.Object(
  {
    format: Type.Literal(MANIFEST_FORMAT),
    batch: Name,
    station: Name,
    createdAt: Time,
    closedAt: Time,
    devices: Type.Array(ManifestDevice, { minItems: 1, maxItems: 100_000 }),
    signature: SignatureSchema,
  },
  { additionalProperties: false },
);
export type BatchManifest = Static<typeof BatchManifest> & { signature: DocumentSignature };

function schemaProblem(
  schema: Parameters<typeof validatorFor>[0],
  value: unknown,
  what: string,
): string | null {
  const validate = validatorFor(schema);
  if (validate(value)) return null;
  const e = validate.errors![0]!;
  const path = errorPath(e);
  return `${what}${path ? ` field ${path}` : ''} ${describeError(e)}`;
}

/** What is wrong with a manifest's shape (signature not checked), or null. */
export function manifestProblem(value: unknown): string | null {
  const shape = schemaProblem(BatchManifest, value, 'manifest');
  if (shape) return shape;
  const m = value as BatchManifest;
  const ids = new Set<string>();
  const serials = new Set<string>();
  for (const [i, d] of m.devices.entries()) {
    if (ids.has(d.deviceId)) return `manifest field devices.${i}.deviceId repeats device ${d.deviceId}`;
    if (serials.has(d.serial)) return `manifest field devices.${i}.serial repeats serial ${d.serial}`;
    ids.add(d.deviceId);
    serials.add(d.serial);
    if ((d.birthCertificate === undefined) === (d.csr === undefined))
      return `manifest field devices.${i} must have either birthCertificate or csr`;
    if (d.trustAnchor === 'tpm' && !d.tpm)
      return `manifest field devices.${i}.tpm is required for a TPM device`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Attestation evidence (device → verifier)

export const EVIDENCE_FORMAT = 'rampart-evidence/1';
export const SOFTWARE_QUOTE_FORMAT = 'rampart-software-quote/1';

const TpmSigned = Type.Object(
  { attest: Base64('TPMS_ATTEST', 4096), signature: Base64('TPMT_SIGNATURE', 1024) },
  { additionalProperties: false },
);

export const MeasurementEventSchema = Type.Object(
  {
    seq: Type.Integer({ minimum: 1 }),
    pcr: Type.Integer({ minimum: 0, maximum: 23 }),
    component: StringEnum(MEASURED_COMPONENTS),
    digest: Hex64,
    description: Type.String({ maxLength: 512 }),
    at: Type.String({ maxLength: 64 }),
  },
  { additionalProperties: false },
);

export const AttestationEvidence = Type.Object(
  {
    format: Type.Literal(EVIDENCE_FORMAT),
    /** The nonce the verifier handed out (single use). */
    nonce: Type.String({ minLength: 16, maxLength: 256 }),
    deviceId: Name,
    anchor: StringEnum(TRUST_ANCHOR_KINDS),
    /** The device key (SPKI DER, base64) the operational certificate will certify. */
    key: Base64('SubjectPublicKeyInfo, DER', 2048),
    /** Birth certificate first, then the station CA that issued it (PEM). */
    birthCertificates: Type.Optional(Type.Array(Pem('CERTIFICATE'), { minItems: 1, maxItems: 4 })),
    eventLog: Type.Array(MeasurementEventSchema, { maxItems: 1024 }),
    /** TPM evidence: a quote by the attestation key, and the AK certified by the device key. */
    tpm: Type.Optional(
      Type.Object(
        { ak: Base64('TPM2B_PUBLIC of the AK', 4096), certify: Type.Optional(TpmSigned), quote: TpmSigned },
        { additionalProperties: false },
      ),
    ),
    /** Software (and PKCS#11) evidence: a statement of the measurement register signed by the device key. */
    statement: Type.Optional(
      Type.Object(
        { body: Base64('canonical JSON of the software quote', 8192), signature: Base64('DER ECDSA', 512) },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);
export type AttestationEvidence = Static<typeof AttestationEvidence>;

export function evidenceProblem(value: unknown): string | null {
  const shape = schemaProblem(AttestationEvidence, value, 'evidence');
  if (shape) return shape;
  const e = value as AttestationEvidence;
  if (e.anchor === 'tpm' && !e.tpm) return 'evidence from a TPM needs the tpm member (quote and AK)';
  if (e.anchor !== 'tpm' && !e.statement)
    return `evidence from a ${e.anchor} anchor needs the statement member`;
  return null;
}

/** What the software and PKCS#11 anchors sign in place of a TPM quote. */
export interface SoftwareQuote {
  format: typeof SOFTWARE_QUOTE_FORMAT;
  /** Hex of attestationQualifyingData(nonce, key). */
  qualifyingData: string;
  /** The measurement register's values, by PCR number. */
  registers: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Attestation result (verifier → relying party), RATS vocabulary

export const ATTESTATION_STATUSES = ['affirming', 'warning', 'contraindicated'] as const;
export type AttestationStatus = (typeof ATTESTATION_STATUSES)[number];

// ---------------------------------------------------------------------------------------------
// Provisioning transcript

export const TRANSCRIPT_FORMAT = 'rampart-provisioning-transcript/1';

export const ProvisioningTranscript = Type.Object(
  {
    format: Type.Literal(TRANSCRIPT_FORMAT),
    id: Type.String(),
    deviceId: Type.String(),
    time: Time,
    operation: StringEnum(['simpleenroll', 'simplereenroll']),
    decision: StringEnum(['issued', 'refused']),
    reason: Type.Union([Type.String(), Type.Null()]),
    policy: Type.Object({ name: Type.String(), kind: Type.String(), version: Type.Integer() }),
    credential: Type.Record(Type.String(), Type.String()),
    evidenceDigest: Type.Union([Hex64, Type.Null()]),
    attestation: Type.Union([
      Type.Object({
        id: Type.String(),
        status: StringEnum(ATTESTATION_STATUSES),
        anchor: StringEnum(TRUST_ANCHOR_KINDS),
        reasons: Type.Array(Type.String()),
      }),
      Type.Null(),
    ]),
    trace: Type.Union([Type.Object({ batch: Type.String(), station: Type.String() }), Type.Null()]),
    csr: Base64('PKCS#10, DER', 8192),
    certificate: Type.Union([Pem('CERTIFICATE'), Type.Null()]),
    signature: SignatureSchema,
  },
  { additionalProperties: false },
);
export type ProvisioningTranscript = Static<typeof ProvisioningTranscript> & { signature: DocumentSignature };

export function transcriptProblem(value: unknown): string | null {
  return schemaProblem(ProvisioningTranscript, value, 'transcript');
}
