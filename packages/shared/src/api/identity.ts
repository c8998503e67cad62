import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from '../schema/index.js';
import { REVOCATION_REASON_NAMES } from '../pki/reasons.js';

export const CA_KINDS = ['root', 'issuing', 'manufacturing'] as const;

/**
 * `station-ca`: a factory station's birth-certificate CA; `birth`: a birth certificate (IDevID)
 * issued at batch import.
 */
export const CERTIFICATE_PROFILES = ['device', 'server', 'ocsp', 'station-ca', 'birth', 'claim'] as const;

export const CertificateAuthority = Type.Object(
  {
    id: Type.String({ description: 'e.g. `issuing-2`: kind and generation.' }),
    kind: StringEnum(CA_KINDS),
    generation: Type.Integer(),
    parentId: Type.Union([Type.String(), Type.Null()]),
    subject: Type.String(),
    serial: Type.String(),
    notBefore: Type.String(),
    notAfter: Type.String(),
    status: StringEnum(['active', 'retiring', 'retired'], {
      description:
        '`retiring`: replaced by a rollover; still served (chain, CRL, OCSP) but no longer issuing.',
    }),
    keyAlgorithm: Type.String(),
    keyState: StringEnum(['online', 'offline'], {
      description: '`offline`: the key was exported and removed.',
    }),
    keyExportedAt: Type.Union([Type.String(), Type.Null()]),
    crl: Type.Union([
      Type.Object({
        number: Type.Integer(),
        thisUpdate: Type.String(),
        nextUpdate: Type.String(),
        url: Type.String(),
      }),
      Type.Null(),
    ]),
    certificates: Type.Object({ valid: Type.Integer(), expired: Type.Integer(), revoked: Type.Integer() }),
  },
  { additionalProperties: false },
);
export type CertificateAuthority = Static<typeof CertificateAuthority>;

export const CaStatus = Type.Object(
  {
    keyStore: Type.String({ description: '`file` or `pkcs11`.' }),
    authorities: Type.Array(CertificateAuthority),
    endpoints: Type.Object({
      est: Type.Union([Type.String(), Type.Null()]),
      ocsp: Type.String(),
      crl: Type.Record(Type.String(), Type.String()),
    }),
    deviceCertificateHours: Type.Integer(),
  },
  { additionalProperties: false },
);
export type CaStatus = Static<typeof CaStatus>;

export const CertificateSummary = Type.Object(
  {
    serial: Type.String({ description: 'Lowercase hex, as `openssl x509 -serial` prints it (case aside).' }),
    issuerId: Type.String(),
    profile: StringEnum(CERTIFICATE_PROFILES),
    deviceId: Type.Union([Type.String(), Type.Null()]),
    subject: Type.String(),
    notBefore: Type.String(),
    notAfter: Type.String(),
    keyFingerprint: Type.String({ description: 'SHA-256 of the SubjectPublicKeyInfo, hex.' }),
    keyAlgorithm: Type.String(),
    renewedFrom: Type.Union([Type.String(), Type.Null()], { description: 'Serial this certificate renews.' }),
    enrollmentPolicy: Type.Union([Type.String(), Type.Null()]),
    state: StringEnum(['valid', 'revoked', 'expired']),
    revokedAt: Type.Union([Type.String(), Type.Null()]),
    revocationReason: Type.Union([StringEnum(REVOCATION_REASON_NAMES), Type.Null()]),
    createdAt: Type.String(),
  },
  { additionalProperties: false },
);
export type CertificateSummary = Static<typeof CertificateSummary>;

export const CertificateDetail = Type.Composite(
  [CertificateSummary, Type.Object({ certificatePem: Type.String() })],
  { additionalProperties: false },
);
export type CertificateDetail = Static<typeof CertificateDetail>;

export const CertificateListQuery = Type.Object(
  {
    device: Type.Optional(Type.String({ description: 'Only certificates of this device.' })),
    issuer: Type.Optional(Type.String({ description: 'Only certificates of this CA, e.g. `issuing-1`.' })),
    profile: Type.Optional(StringEnum(CERTIFICATE_PROFILES)),
    state: Type.Optional(StringEnum(['valid', 'revoked', 'expired'])),
    expiringWithinDays: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: 3650,
        description: 'Valid certificates that expire within this many days.',
      }),
    ),
    after: Type.Optional(Type.String({ description: 'Cursor: the last serial of the previous page.' })),
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  },
  { additionalProperties: false },
);
export type CertificateListQuery = Static<typeof CertificateListQuery>;

export const CertificateList = Type.Object({
  items: Type.Array(CertificateSummary),
  next: Type.Union([Type.String(), Type.Null()], { description: 'Pass as `after` for the next page.' }),
});
export type CertificateList = Static<typeof CertificateList>;

export const RevokeBody = Type.Object(
  {
    reason: StringEnum(REVOCATION_REASON_NAMES, { default: 'unspecified' }),
  },
  { additionalProperties: false },
);
export type RevokeBody = Static<typeof RevokeBody>;

export const RevokeResult = Type.Object({
  serial: Type.String(),
  reason: StringEnum(REVOCATION_REASON_NAMES),
  revoked: Type.Array(
    Type.Object({ serial: Type.String(), deviceId: Type.Union([Type.String(), Type.Null()]) }),
    {
      description: 'Every certificate revoked by this call: the one asked for and its lineage.',
    },
  ),
  alreadyRevoked: Type.Boolean(),
});
export type RevokeResult = Static<typeof RevokeResult>;

export const EnrollmentTokenRecord = Type.Object(
  {
    id: Type.String(),
    deviceId: Type.String(),
    createdAt: Type.String(),
    createdBy: Type.String(),
    expiresAt: Type.String(),
    usedAt: Type.Union([Type.String(), Type.Null()]),
    usedFor: Type.Union([Type.String(), Type.Null()], {
      description: 'Serial of the certificate it was used for.',
    }),
    revokedAt: Type.Union([Type.String(), Type.Null()]),
    state: StringEnum(['unused', 'used', 'expired', 'revoked']),
  },
  { additionalProperties: false },
);
export type EnrollmentTokenRecord = Static<typeof EnrollmentTokenRecord>;

export const CreateEnrollmentTokenBody = Type.Object(
  {
    deviceId: Type.String({ minLength: 1, maxLength: 128 }),
    expiresIn: Type.String({
      default: '1h',
      pattern: '^\\d+\\s*[smhdw]$',
      description: 'Lifetime such as `1h` (default), `30m`, `7d`.',
    }),
  },
  { additionalProperties: false },
);
export type CreateEnrollmentTokenBody = Static<typeof CreateEnrollmentTokenBody>;

export const CreatedEnrollmentToken = Type.Composite(
  [
    EnrollmentTokenRecord,
    Type.Object({
      token: Type.String({
        description:
          'The secret, shown once. Use it as the HTTP Basic password with the device id as user name.',
      }),
      estUrl: Type.Union([Type.String(), Type.Null()]),
    }),
  ],
  { additionalProperties: false },
);
export type CreatedEnrollmentToken = Static<typeof CreatedEnrollmentToken>;

export const RolloverBody = Type.Object(
  { kind: StringEnum(['issuing', 'manufacturing'], { default: 'issuing' }) },
  { additionalProperties: false },
);

export const RootExportBody = Type.Object(
  {
    passphrase: Type.String({
      minLength: 12,
      maxLength: 1024,
      description:
        'Encrypts the exported key (PKCS#8 with PBES2: PBKDF2 and AES-256-CBC), readable by openssl.',
    }),
  },
  { additionalProperties: false },
);

export const RootExport = Type.Object({
  keyPem: Type.String(),
  certificatePem: Type.String(),
});

export const RootImportBody = Type.Object(
  {
    keyPem: Type.String({ minLength: 1, maxLength: 100_000 }),
    passphrase: Type.String({ minLength: 1, maxLength: 1024 }),
  },
  { additionalProperties: false },
);
