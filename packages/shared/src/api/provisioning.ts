import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from '../schema/index.js';
import { Attributes } from './fleet.js';
import { MEASURED_COMPONENTS } from '../attestation/index.js';
import { ATTESTATION_STATUSES, TRUST_ANCHOR_KINDS } from '../provisioning/formats.js';

const NAME = '^[a-z0-9][a-z0-9._-]{0,62}$';
const ID = '^[A-Za-z0-9._-]{1,128}$';

export const RegisterStationBody = Type.Object(
  {
    name: Type.String({ pattern: NAME, description: 'Lower-case name of the station, e.g. `line-1`.' }),
    publicKey: Type.String({ maxLength: 4096, description: "The station's ECDSA P-256 public key, PEM." }),
    description: Type.Optional(Type.String({ maxLength: 512 })),
  },
  { additionalProperties: false },
);
export type RegisterStationBody = Static<typeof RegisterStationBody>;

export const StationView = Type.Object({
  name: Type.String(),
  keyId: Type.String({ description: 'SHA-256 of the station key (SPKI), hex.' }),
  publicKey: Type.String(),
  caSerial: Type.Union([Type.String(), Type.Null()]),
  description: Type.String(),
  status: StringEnum(['active', 'revoked']),
  registeredAt: Type.String(),
  registeredBy: Type.String(),
  revokedAt: Type.Union([Type.String(), Type.Null()]),
});
export type StationView = Static<typeof StationView>;

export const RegisteredStation = Type.Object({
  station: StationView,
  certificate: Type.String({ description: "The station's CA certificate (PEM), for birth certificates." }),
  chain: Type.String({ description: 'The manufacturing CA and root above it (PEM).' }),
  rootCertificate: Type.String({ description: "Rampart's root CA (PEM), for devices to pin." }),
});

export const AddManufacturerBody = Type.Object(
  {
    name: Type.String({ pattern: NAME }),
    certificate: Type.String({ maxLength: 16_384, description: 'The CA certificate, PEM.' }),
  },
  { additionalProperties: false },
);
export type AddManufacturerBody = Static<typeof AddManufacturerBody>;

export const ManufacturerView = Type.Object({
  name: Type.String(),
  subject: Type.String(),
  fingerprint: Type.String(),
  notAfter: Type.String(),
  registeredAt: Type.String(),
  registeredBy: Type.String(),
  certificate: Type.String(),
});

export const ImportedBatchView = Type.Object({
  batch: Type.String(),
  station: Type.String(),
  manifestDigest: Type.String(),
  devices: Type.Integer(),
  createdAt: Type.String(),
  closedAt: Type.String(),
  importedAt: Type.String(),
  importedBy: Type.String(),
  issued: Type.Array(Type.Object({ deviceId: Type.String(), certificate: Type.String() })),
});
export type ImportedBatchView = Static<typeof ImportedBatchView>;

export const Placement = Type.Object(
  {
    model: Type.Optional(
      Type.String({ pattern: ID, description: 'Model for devices the manifest does not give one.' }),
    ),
    hardwareRevision: Type.Optional(Type.String({ maxLength: 64 })),
    groups: Type.Optional(Type.Array(Type.String({ pattern: ID }), { maxItems: 100 })),
    attributes: Type.Optional(Attributes),
    shadow: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), { description: 'Initial desired state.' }),
    ),
  },
  { additionalProperties: false },
);
export type Placement = Static<typeof Placement>;

export const ENROLLMENT_POLICY_KINDS = ['group', 'claim', 'individual'] as const;
export type EnrollmentPolicyKind = (typeof ENROLLMENT_POLICY_KINDS)[number];

export const EnrollmentPolicyBody = Type.Object(
  {
    name: Type.String({ pattern: NAME }),
    kind: StringEnum(ENROLLMENT_POLICY_KINDS),
    description: Type.Optional(Type.String({ maxLength: 512 })),
    enabled: Type.Optional(Type.Boolean()),
    config: Type.Optional(
      Type.Object(
        {
          issuers: Type.Optional(
            Type.Array(Type.String({ maxLength: 128 }), {
              description:
                "group: `*` (every registered issuer), `station:NAME`, `manufacturer:NAME` or `rampart` (Rampart's manufacturing CAs).",
            }),
          ),
          models: Type.Optional(Type.Array(Type.String({ pattern: ID }))),
          batch: Type.Optional(
            Type.String({
              maxLength: 128,
              description: 'claim (required): the batch whose devices share the claim certificate.',
            }),
          ),
          allowlist: Type.Optional(
            Type.Array(Type.String({ pattern: ID }), {
              maxItems: 100_000,
              description: 'claim: the device ids that may enroll, each once. Empty or absent: none.',
            }),
          ),
          ratePerMinute: Type.Optional(
            Type.Integer({
              minimum: 1,
              maximum: 100_000,
              description: 'claim: enrollments admitted per minute (default 60).',
            }),
          ),
          deviceId: Type.Optional(
            Type.String({ pattern: ID, description: 'individual (required): the device.' }),
          ),
          keyFingerprint: Type.Optional(
            Type.String({
              pattern: '^[0-9a-f]{64}$',
              description: 'individual: SHA-256 (hex) of the device key (SPKI DER).',
            }),
          ),
          certificateFingerprint: Type.Optional(
            Type.String({
              pattern: '^[0-9a-f]{64}$',
              description: 'individual: SHA-256 (hex) of a certificate the device holds (DER).',
            }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    placement: Type.Optional(Placement),
  },
  { additionalProperties: false },
);
export type EnrollmentPolicyBody = Static<typeof EnrollmentPolicyBody>;

export const EnrollmentPolicyView = Type.Object({
  name: Type.String(),
  kind: StringEnum(ENROLLMENT_POLICY_KINDS),
  version: Type.Integer(),
  enabled: Type.Boolean(),
  description: Type.String(),
  config: Type.Record(Type.String(), Type.Unknown()),
  placement: Placement,
  createdAt: Type.String(),
  updatedAt: Type.String(),
});
export type EnrollmentPolicyView = Static<typeof EnrollmentPolicyView> & {
  config: NonNullable<EnrollmentPolicyBody['config']>;
};

export const ATTESTATION_MODES = ['required', 'optional', 'off'] as const;
export type AttestationMode = (typeof ATTESTATION_MODES)[number];

export const ModelAttestationBody = Type.Object(
  {
    attestation: Type.Optional(StringEnum(ATTESTATION_MODES)),
    acceptWarning: Type.Optional(Type.Boolean()),
    admitSoftwareAnchor: Type.Optional(Type.Boolean()),
    certificateHours: Type.Optional(Type.Integer({ minimum: 1, maximum: 24 * 397 })),
  },
  { additionalProperties: false },
);
export type ModelAttestationBody = Static<typeof ModelAttestationBody>;

export const ModelAttestationView = Type.Object({
  model: Type.String(),
  attestation: StringEnum(ATTESTATION_MODES),
  acceptWarning: Type.Boolean(),
  admitSoftwareAnchor: Type.Boolean(),
  certificateHours: Type.Integer(),
  configured: Type.Boolean({ description: 'false: the defaults apply.' }),
});
export type ModelAttestationView = Static<typeof ModelAttestationView>;

export const ReferenceValueBody = Type.Object(
  {
    model: Type.String({ pattern: ID }),
    component: StringEnum(MEASURED_COMPONENTS),
    digest: Type.String({ pattern: '^[0-9a-f]{64}$', description: 'SHA-256 of the measured image, hex.' }),
    description: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);
export type ReferenceValueBody = Static<typeof ReferenceValueBody>;

export const ReferenceValueView = Type.Object({
  id: Type.Integer(),
  model: Type.String(),
  component: StringEnum(MEASURED_COMPONENTS),
  digest: Type.String(),
  description: Type.String(),
  source: Type.String(),
  createdAt: Type.String(),
});
export type ReferenceValueView = Static<typeof ReferenceValueView>;

export const AttestationResultView = Type.Object({
  id: Type.String(),
  deviceId: Type.String(),
  status: StringEnum(ATTESTATION_STATUSES),
  anchor: StringEnum(TRUST_ANCHOR_KINDS),
  anchorStrength: StringEnum(['hardware', 'software']),
  reasons: Type.Array(Type.String()),
  measurements: Type.Array(
    Type.Object({
      seq: Type.Integer(),
      component: Type.String(),
      digest: Type.String(),
      description: Type.String(),
      verdict: StringEnum(['known', 'unknown', 'unreferenced']),
    }),
  ),
  evidenceDigest: Type.String(),
  keyFingerprint: Type.String(),
  createdAt: Type.String(),
  used: Type.Boolean({ description: 'Whether an enrollment consumed this result.' }),
});
export type AttestationResultView = Static<typeof AttestationResultView>;

export const DeviceTrace = Type.Object({
  deviceId: Type.String(),
  registered: Type.Boolean(),
  status: Type.Union([Type.String(), Type.Null()]),
  manufacture: Type.Union([
    Type.Object({
      serial: Type.String(),
      model: Type.String(),
      hardwareRevision: Type.Union([Type.String(), Type.Null()]),
      trustAnchor: Type.String(),
      keyFingerprint: Type.String(),
      provisionedAt: Type.String(),
      birthCertificate: Type.Object({
        serial: Type.Union([Type.String(), Type.Null()]),
        fingerprint: Type.Union([Type.String(), Type.Null()]),
        issuer: Type.String(),
        notAfter: Type.String(),
      }),
      tpm: Type.Boolean(),
      batch: Type.Object({
        id: Type.String(),
        manifestDigest: Type.String(),
        createdAt: Type.String(),
        closedAt: Type.String(),
        importedAt: Type.String(),
        importedBy: Type.String(),
      }),
      station: Type.Object({
        name: Type.String(),
        keyId: Type.String(),
        status: Type.String(),
        registeredAt: Type.String(),
      }),
    }),
    Type.Null(),
  ]),
  enrollments: Type.Array(
    Type.Object({
      time: Type.String(),
      decision: Type.String(),
      policy: Type.String(),
      certificateSerial: Type.Union([Type.String(), Type.Null()]),
      attestation: Type.Union([Type.String(), Type.Null()]),
      transcript: Type.String(),
    }),
  ),
});
export type DeviceTrace = Static<typeof DeviceTrace>;
