import { X509Certificate } from 'node:crypto';
import type { DeviceTrace } from '@rampart/shared/api';
import type { Logger } from '@rampart/shared/logging';
import type { AuditLog } from '../audit/log.js';
import { RampartError } from '../errors.js';
import type { FleetRegistry } from '../fleet/registry.js';
import type { ShadowService } from '../gateway/shadows.js';
import type { IdentityService } from '../identity/service.js';
import type { PlatformKey } from '../keystore/index.js';
import type { Storage } from '../storage/index.js';
import { AttestationService, type AttestationSettings } from './attestation.js';
import { Batches } from './batches.js';
import { BirthCertificates } from './birth.js';
import { ClaimPolicy } from './claim.js';
import { AttestationGate, ProvisioningEnrollment, ZeroTouchPolicy } from './enrollment.js';
import { IndividualPolicy } from './individual.js';
import { EnrollmentPolicies } from './policies.js';
import { Stations } from './stations.js';
import { Transcripts } from './transcripts.js';

/**
 * Capability 3 in one place: stations and manufacturing CAs, batch manifests and traceability,
 * stored enrollment policies, the attestation verifier, attestation-gated issuance and signed
 * provisioning transcripts. It plugs into the identity service through the enrollment-policy and
 * issuance-gate interfaces; transports (the API, the EST listener) call into it.
 */
export class ProvisioningService {
  readonly stations: Stations;
  readonly birth: BirthCertificates;
  readonly batches: Batches;
  readonly policies: EnrollmentPolicies;
  readonly attestation: AttestationService;
  readonly transcripts: Transcripts;
  readonly claims: ClaimPolicy;
  readonly individual: IndividualPolicy;

  constructor(
    private readonly storage: Storage,
    readonly identity: IdentityService,
    fleet: FleetRegistry,
    shadows: ShadowService,
    audit: AuditLog,
    transcriptKey: PlatformKey,
    settings: AttestationSettings,
    events: {
      securityEvent(kind: string, deviceId: string | null, source: string | null, reason: string): void;
    },
    logger?: Logger,
  ) {
    this.stations = new Stations(identity);
    this.birth = new BirthCertificates(identity, this.stations);
    this.batches = new Batches(identity, this.stations, this.birth);
    this.policies = new EnrollmentPolicies(fleet, shadows);
    this.attestation = new AttestationService(
      storage,
      fleet,
      this.batches,
      this.birth,
      audit,
      settings,
      events,
      logger,
    );
    this.transcripts = new Transcripts(transcriptKey);
    const hours = () => this.attestation.settings.certificateHours;
    this.claims = new ClaimPolicy(identity, this.batches, this.policies, fleet, hours);
    this.individual = new IndividualPolicy(this.batches, this.policies, fleet, hours);
    identity.addPolicy(
      new ProvisioningEnrollment(
        new ZeroTouchPolicy(this.birth, this.batches, this.policies, this.attestation, fleet),
        this.claims,
        this.individual,
        this.attestation,
      ),
      true,
    );
    identity.setIssuanceGate(new AttestationGate(this.attestation, this.transcripts));
  }

  /** Create the default zero-touch policy on first start; returns it when created. */
  async open() {
    return this.policies.ensureDefault(this.storage.db);
  }

  /** device ← batch ← station ← time, and what happened at each enrollment since. */
  async trace(deviceId: string): Promise<DeviceTrace> {
    const db = this.storage.db;
    const device = await db
      .selectFrom('devices')
      .select(['status'])
      .where('id', '=', deviceId)
      .executeTakeFirst();
    const record = await this.batches.byDevice(db, deviceId);
    let manufacture: DeviceTrace['manufacture'] = null;
    if (record) {
      const batch = await this.batches.batch(db, record.batch);
      const station = await this.stations.get(db, batch.station);
      const birth = record.birthCertificate ? new X509Certificate(record.birthCertificate) : null;
      manufacture = {
        serial: record.serial,
        model: record.model,
        hardwareRevision: record.hardwareRevision,
        trustAnchor: record.trustAnchor,
        keyFingerprint: record.keyFingerprint,
        provisionedAt: record.provisionedAt,
        birthCertificate: {
          serial: record.birthSerial,
          fingerprint: record.birthFingerprint,
          issuer: birth ? birth.issuer.replace(/\n/g, ', ') : '',
          notAfter: birth ? new Date(birth.validTo).toISOString() : '',
        },
        tpm: record.ak !== null,
        batch: {
          id: batch.id,
          manifestDigest: batch.manifest_digest,
          createdAt: batch.created_at,
          closedAt: batch.closed_at,
          importedAt: batch.imported_at,
          importedBy: batch.imported_by,
        },
        station: {
          name: station.name,
          keyId: station.keyId,
          status: station.status,
          registeredAt: station.registeredAt,
        },
      };
    }
    const transcripts = await this.transcripts.list(db, deviceId);
    if (!device && !record && !transcripts.length)
      throw new RampartError(
        'NOT_FOUND',
        `device ${deviceId} is neither registered nor in any imported manifest`,
      );
    return {
      deviceId,
      registered: !!device,
      status: device?.status ?? null,
      manufacture,
      enrollments: transcripts.map((t) => ({
        time: t.time,
        decision: t.decision,
        policy: `${t.policy.name}@${t.policy.version}`,
        certificateSerial: t.certificate
          ? new X509Certificate(t.certificate).serialNumber.toLowerCase()
          : null,
        attestation: t.attestation ? `${t.attestation.status} (${t.attestation.id})` : null,
        transcript: t.id,
      })),
    };
  }
}
