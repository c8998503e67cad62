import { createHmac, createPublicKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { MeasuredComponent } from '@rampart/shared/attestation';
import {
  appraiseEvidence,
  evidenceDigest,
  evidenceProblem,
  type AttestationEvidence,
  type AttestationStatus,
  type TrustAnchorKind,
} from '@rampart/shared/provisioning';
import type {
  AttestationMode,
  AttestationResultView,
  ModelAttestationBody,
  ModelAttestationView,
  ReferenceValueBody,
  ReferenceValueView,
} from '@rampart/shared/api';
import { sql, type Selectable } from 'kysely';
import type { Logger } from '@rampart/shared/logging';
import type { AuditLog } from '../audit/log.js';
import { RampartError } from '../errors.js';
import type { FleetRegistry } from '../fleet/registry.js';
import { isUniqueViolation } from '../fleet/devices.js';
import { sha256Hex } from '../fleet/import.js';
import { keyFingerprintOf } from '../identity/x509.js';
import type { Executor, Storage } from '../storage/index.js';
import type { AttestationResultsTable, ReferenceValuesTable } from '../storage/schema.js';
import { isoNow } from '../time.js';
import { BirthRefusal, type BirthCertificates } from './birth.js';
import type { Batches } from './batches.js';

/**
 * The verifier of remote attestation (RATS background-check model). A device asks for a nonce,
 * answers with evidence over it, and gets an attestation result — and, when the result may admit
 * it, a one-time attestation token that the enrollment (EST) presents. The relying party (the
 * enrollment policy) decides with the stored result; it never sees the evidence itself.
 *
 * Nonces are stateless (HMAC over a random value and an expiry, with a key that lives in memory)
 * and single-use: the verifier records every nonce it accepts until it expires, so a replayed one
 * is refused even within its lifetime.
 */
export class AttestationRefusal extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 409,
    message: string,
    readonly deviceId?: string,
  ) {
    super(message);
    this.name = 'AttestationRefusal';
  }
}

export interface AttestationSettings {
  nonceTtlSeconds: number;
  /** How long an attestation token may wait for the enrollment it admits. */
  tokenTtlSeconds: number;
  /** Default certificate validity for models without their own setting. */
  certificateHours: number;
}

export interface SubmittedResult {
  result: AttestationResultView;
  token: string | null;
}

const TOKEN_PREFIX = 'rpa_';

const replayedNonce = (claimed: string) =>
  new AttestationRefusal(401, 'the nonce was already used (a replayed nonce); ask for a new one', claimed);

export function toResultView(r: AttestationResultsTable): AttestationResultView {
  return {
    id: r.id,
    deviceId: r.device_id,
    status: r.status as AttestationStatus,
    anchor: r.anchor as TrustAnchorKind,
    anchorStrength: r.anchor === 'software' ? 'software' : 'hardware',
    reasons: JSON.parse(r.reasons) as string[],
    measurements: JSON.parse(r.measurements) as AttestationResultView['measurements'],
    evidenceDigest: r.evidence_digest,
    keyFingerprint: r.key_fingerprint,
    createdAt: r.created_at,
    used: r.token_used_at !== null,
  };
}

function toReference(r: Selectable<ReferenceValuesTable>): ReferenceValueView {
  return {
    id: Number(r.id),
    model: r.model,
    component: r.component as MeasuredComponent,
    digest: r.digest,
    description: r.description,
    source: r.source,
    createdAt: r.created_at,
  };
}

/**
 * A write of the verifier waiting for the next group commit: the nonce burned and, for authentic
 * evidence, the result stored with its audit entry (and a quarantine when it is contraindicated).
 */
interface PendingWrite {
  nonce: string;
  expiresMs: number;
  claimed: string;
  result: { row: AttestationResultsTable; remoteAddress: string; reasons: string[] } | null;
  resolve: (quarantined: boolean) => void;
  reject: (err: unknown) => void;
}

export class AttestationService {
  private readonly nonceKey = randomBytes(32);
  private lastPurge = 0;
  private readonly pending: PendingWrite[] = [];
  private writing = false;
  private static readonly BATCH_LIMIT = 64;

  constructor(
    private readonly storage: Storage,
    private readonly fleet: FleetRegistry,
    private readonly batches: Batches,
    private readonly birth: BirthCertificates,
    private readonly audit: AuditLog,
    readonly settings: AttestationSettings,
    private readonly events: {
      securityEvent(kind: string, deviceId: string | null, source: string | null, reason: string): void;
    },
    private readonly logger?: Logger,
  ) {}

  /** Raise a security event (refused or contraindicated evidence). */
  securityEvent(kind: string, deviceId: string | null, source: string | null, reason: string): void {
    this.events.securityEvent(kind, deviceId, source, reason.slice(0, 500));
  }

  // -- nonces --------------------------------------------------------------------------------

  issueNonce(now = Date.now()): { nonce: string; expiresAt: string } {
    const random = randomBytes(16);
    const expires = Buffer.alloc(8);
    expires.writeBigUInt64BE(BigInt(Math.floor(now / 1000) + this.settings.nonceTtlSeconds));
    const body = Buffer.concat([random, expires]);
    const mac = this.nonceMac(body);
    return {
      nonce: Buffer.concat([body, mac]).toString('base64url'),
      expiresAt: new Date(Number(expires.readBigUInt64BE()) * 1000).toISOString(),
    };
  }

  private nonceMac(body: Buffer): Buffer {
    return createHmac('sha256', this.nonceKey).update(body).digest().subarray(0, 16);
  }

  /** The nonce's expiry (ms), or a reason it is not one of ours or no longer fresh. */
  private nonceExpiry(nonce: string, now: number): number | string {
    const raw = Buffer.from(nonce, 'base64url');
    if (raw.length !== 40 || raw.toString('base64url') !== nonce)
      return 'the nonce is not one this verifier issued';
    const body = raw.subarray(0, 24);
    const mac = this.nonceMac(body);
    if (!timingSafeEqual(mac, raw.subarray(24)))
      return 'the nonce is not one this verifier issued (or the verifier restarted since)';
    const expires = Number(body.readBigUInt64BE(16)) * 1000;
    if (expires < now) return `the nonce expired at ${new Date(expires).toISOString()}; ask for a new one`;
    return expires;
  }

  // -- model settings and reference values ----------------------------------------------------

  /** What a model requires; `zeroTouch` decides the default when the model has no setting. */
  async modelSettings(db: Executor, model: string, zeroTouch: boolean): Promise<ModelAttestationView> {
    const row = await db
      .selectFrom('model_provisioning')
      .selectAll()
      .where('model', '=', model)
      .executeTakeFirst();
    if (!row)
      return {
        model,
        attestation: zeroTouch ? 'required' : 'off',
        acceptWarning: false,
        admitSoftwareAnchor: true,
        certificateHours: this.settings.certificateHours,
        configured: false,
      };
    return {
      model,
      attestation: row.attestation as AttestationMode,
      acceptWarning: row.accept_warning === 1,
      admitSoftwareAnchor: row.admit_software === 1,
      certificateHours: row.certificate_hours,
      configured: true,
    };
  }

  async setModelSettings(
    db: Executor,
    model: string,
    body: ModelAttestationBody,
  ): Promise<ModelAttestationView> {
    const exists = await db
      .selectFrom('device_models')
      .select('id')
      .where('id', '=', model)
      .executeTakeFirst();
    if (!exists) throw new RampartError('NOT_FOUND', `device model ${model} does not exist`);
    const current = await this.modelSettings(db, model, true);
    const row = {
      model,
      attestation: body.attestation ?? current.attestation,
      accept_warning: (body.acceptWarning ?? current.acceptWarning) ? 1 : 0,
      admit_software: (body.admitSoftwareAnchor ?? current.admitSoftwareAnchor) ? 1 : 0,
      certificate_hours: body.certificateHours ?? current.certificateHours,
      updated_at: isoNow(),
    };
    await db
      .insertInto('model_provisioning')
      .values(row)
      .onConflict((oc) => oc.column('model').doUpdateSet(row))
      .execute();
    return this.modelSettings(db, model, true);
  }

  async addReference(db: Executor, body: ReferenceValueBody, source = 'manual'): Promise<ReferenceValueView> {
    const exists = await db
      .selectFrom('device_models')
      .select('id')
      .where('id', '=', body.model)
      .executeTakeFirst();
    if (!exists)
      throw new RampartError('VALIDATION', `model ${body.model} does not exist`, [
        { field: 'model', message: 'is not a device model' },
      ]);
    try {
      const row = await db
        .insertInto('reference_values')
        .values({
          model: body.model,
          component: body.component,
          digest: body.digest,
          description: body.description ?? '',
          source,
          created_at: isoNow(),
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      this.referenceCache.delete(body.model);
      return toReference(row);
    } catch (err) {
      if (isUniqueViolation(err))
        throw new RampartError(
          'CONFLICT',
          `this ${body.component} digest is already a reference value of ${body.model}`,
        );
      throw err;
    }
  }

  async listReferences(db: Executor, model?: string): Promise<ReferenceValueView[]> {
    let q = db.selectFrom('reference_values').selectAll().orderBy('model').orderBy('component').orderBy('id');
    if (model) q = q.where('model', '=', model);
    return (await q.execute()).map(toReference);
  }

  async removeReference(db: Executor, id: number): Promise<ReferenceValueView> {
    const row = await db.selectFrom('reference_values').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw new RampartError('NOT_FOUND', `reference value ${id} does not exist`);
    await db.deleteFrom('reference_values').where('id', '=', id).execute();
    this.referenceCache.delete(row.model);
    return toReference(row);
  }

  private readonly referenceCache = new Map<string, Map<MeasuredComponent, Set<string>>>();

  private async references(model: string): Promise<Map<MeasuredComponent, Set<string>>> {
    const cached = this.referenceCache.get(model);
    if (cached) return cached;
    const map = new Map<MeasuredComponent, Set<string>>();
    const rows = await this.storage.db
      .selectFrom('reference_values')
      .select(['component', 'digest'])
      .where('model', '=', model)
      .execute();
    for (const r of rows) {
      const c = r.component as MeasuredComponent;
      if (!map.has(c)) map.set(c, new Set());
      map.get(c)!.add(r.digest);
    }
    this.referenceCache.set(model, map);
    return map;
  }

  // -- evidence -------------------------------------------------------------------------------

  /**
   * Verify evidence and store the result. Refusals (evidence that is malformed, not fresh, not
   * authentic, or for a device Rampart cannot place) throw AttestationRefusal and store nothing
   * but the burned nonce; they are audited and raised as security events by the caller.
   */
  async submit(raw: unknown, remoteAddress: string, now = Date.now()): Promise<SubmittedResult> {
    const shape = evidenceProblem(raw);
    if (shape) throw new AttestationRefusal(400, shape);
    const evidence = raw as AttestationEvidence;
    const claimed = evidence.deviceId;
    const expiry = this.nonceExpiry(evidence.nonce, now);
    if (typeof expiry === 'string') throw new AttestationRefusal(401, expiry, claimed);

    const db = this.storage.db;
    let deviceKey: KeyObject;
    let deviceKeyDer: Buffer | null = null;
    let model: string;
    let expectedAk: Buffer | null = null;
    let birthFingerprint: string | null = null;
    if (evidence.birthCertificates) {
      let checked;
      try {
        checked = await this.birth.check(db, evidence.birthCertificates[0]!, now);
      } catch (err) {
        if (err instanceof BirthRefusal) throw new AttestationRefusal(403, err.message, claimed);
        throw err;
      }
      const record = await this.batches.byBirthFingerprint(db, checked.fingerprint);
      if (!record)
        throw new AttestationRefusal(
          403,
          `device ${claimed} is not in any imported manifest: import its batch first (rampart batch import FILE)`,
          claimed,
        );
      if (record.deviceId !== claimed)
        throw new AttestationRefusal(
          403,
          `the birth certificate belongs to device ${record.deviceId}, not ${claimed}`,
          claimed,
        );
      deviceKey = checked.publicKey;
      deviceKeyDer = checked.publicKeyDer;
      model = record.model;
      expectedAk = record.ak ? Buffer.from(record.ak, 'base64') : null;
      birthFingerprint = checked.fingerprint;
    } else {
      const device = await db
        .selectFrom('devices')
        .select(['model_id'])
        .where('id', '=', claimed)
        .executeTakeFirst();
      if (!device)
        throw new AttestationRefusal(
          403,
          `device ${claimed} is not registered; a factory-made device presents its birth certificate`,
          claimed,
        );
      try {
        deviceKey = createPublicKey({
          key: Buffer.from(evidence.key, 'base64'),
          format: 'der',
          type: 'spki',
        });
      } catch {
        throw new AttestationRefusal(400, 'evidence field key is not a SubjectPublicKeyInfo', claimed);
      }
      // A device the factory recorded proves its key with the birth certificate, not by saying so.
      if (await this.batches.byDevice(db, claimed))
        throw new AttestationRefusal(
          403,
          `device ${claimed} was made at the factory; its evidence must carry its birth certificate`,
          claimed,
        );
      model = device.model_id;
    }

    // Single use, whatever the outcome: a used nonce is refused before the evidence is looked at,
    // and the nonce is burned with whatever the evidence leads to (below, in one commit).
    if (await this.nonceUsed(evidence.nonce)) throw replayedNonce(claimed);

    const appraisal = appraiseEvidence(evidence, {
      deviceKey,
      deviceKeyDer,
      expectedAk,
      references: await this.references(model),
      model,
    });
    if (!appraisal.authentic) {
      await this.write({ nonce: evidence.nonce, expiresMs: expiry, claimed, result: null });
      throw new AttestationRefusal(403, appraisal.problem, claimed);
    }

    const id = `att-${randomBytes(9).toString('base64url')}`;
    const token =
      appraisal.status === 'contraindicated' ? null : TOKEN_PREFIX + randomBytes(24).toString('base64url');
    const createdAt = new Date(now).toISOString();
    const row: AttestationResultsTable = {
      id,
      device_id: claimed,
      status: appraisal.status,
      anchor: evidence.anchor,
      reasons: JSON.stringify(appraisal.reasons),
      measurements: JSON.stringify(appraisal.measurements),
      evidence_digest: evidenceDigest(evidence),
      key_fingerprint: keyFingerprintOf(deviceKeyDer ?? deviceKey.export({ type: 'spki', format: 'der' })),
      birth_fingerprint: birthFingerprint,
      token_hash: token ? sha256Hex(token) : null,
      token_expires_at: token ? new Date(now + this.settings.tokenTtlSeconds * 1000).toISOString() : null,
      token_used_at: null,
      created_at: createdAt,
    };
    const quarantined = await this.write({
      nonce: evidence.nonce,
      expiresMs: expiry,
      claimed,
      result: { row, remoteAddress, reasons: appraisal.reasons },
    });
    if (appraisal.status === 'contraindicated') {
      this.events.securityEvent(
        'attestation.contraindicated',
        claimed,
        remoteAddress,
        appraisal.reasons.join('; ').slice(0, 500),
      );
      this.logger?.warn(
        { event: 'attestation.contraindicated', device: claimed, reasons: appraisal.reasons, quarantined },
        'attestation contraindicated',
      );
      if (quarantined) this.fleet.changed({ devices: [claimed] });
    }
    return { result: toResultView(row), token };
  }

  private async nonceUsed(nonce: string): Promise<boolean> {
    const row = await this.storage.db
      .selectFrom('attestation_nonces')
      .select('nonce_hash')
      .where('nonce_hash', '=', sha256Hex(nonce))
      .executeTakeFirst();
    return row !== undefined;
  }

  /** Queue a write for the next group commit; resolves (quarantined or not) once it has committed. */
  private write(w: Omit<PendingWrite, 'resolve' | 'reject'>): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.pending.push({ ...w, resolve, reject });
      if (this.writing) return;
      this.writing = true;
      setImmediate(() => void this.writeBatch());
    });
  }

  /**
   * Group commit, as enrollments do (IdentityService): writes that arrive while a batch is being
   * written go into the next transaction together — one commit (one fsync on SQLite) for many
   * devices. Each write has its own savepoint, so a replayed nonce rolls back only its own; none is
   * answered before the transaction has committed.
   */
  private async writeBatch(): Promise<void> {
    const batch = this.pending.splice(0, AttestationService.BATCH_LIMIT);
    const done: { w: PendingWrite; quarantined: boolean }[] = [];
    const failed: { w: PendingWrite; err: unknown }[] = [];
    try {
      await this.storage.db.transaction().execute(async (tx) => {
        const now = Date.now();
        if (now - this.lastPurge > 60_000) {
          this.lastPurge = now;
          await tx
            .deleteFrom('attestation_nonces')
            .where('expires_at', '<', new Date(now).toISOString())
            .execute();
        }
        for (const w of batch) {
          await sql`savepoint attestation`.execute(tx);
          try {
            const quarantined = await this.writeOne(tx, w);
            await sql`release savepoint attestation`.execute(tx);
            done.push({ w, quarantined });
          } catch (err) {
            await sql`rollback to savepoint attestation`.execute(tx);
            await sql`release savepoint attestation`.execute(tx);
            failed.push({ w, err });
          }
        }
      });
      if (done.some((d) => d.w.result)) this.audit.sealSoon();
      for (const d of done) d.w.resolve(d.quarantined);
    } catch (err) {
      // The transaction did not commit: nothing of this batch was stored.
      for (const d of done) d.w.reject(err);
    } finally {
      for (const f of failed) f.w.reject(f.err);
      this.writing = false;
      if (this.pending.length) {
        this.writing = true;
        setImmediate(() => void this.writeBatch());
      }
    }
  }

  /** Burn the nonce; store the result with its audit entry, quarantining a contraindicated device. */
  private async writeOne(tx: Executor, w: PendingWrite): Promise<boolean> {
    try {
      await tx
        .insertInto('attestation_nonces')
        .values({ nonce_hash: sha256Hex(w.nonce), expires_at: new Date(w.expiresMs).toISOString() })
        .execute();
    } catch (err) {
      if (isUniqueViolation(err)) throw replayedNonce(w.claimed);
      throw err;
    }
    if (!w.result) return false;
    const { row, remoteAddress, reasons } = w.result;
    const claimed = row.device_id;
    await tx.insertInto('attestation_results').values(row).execute();
    await this.audit.append(tx, {
      actor: `device:${claimed}`,
      action: 'attestation.verify',
      target: `device:${claimed}`,
      outcome: row.status === 'contraindicated' ? 'denied' : 'success',
      details: {
        result: row.id,
        status: row.status,
        anchor: row.anchor,
        reasons,
        evidenceDigest: row.evidence_digest,
        remoteAddress,
      },
    });
    if (row.status !== 'contraindicated') return false;
    const device = await tx
      .selectFrom('devices')
      .select('status')
      .where('id', '=', claimed)
      .executeTakeFirst();
    if (!device || device.status === 'quarantined' || device.status === 'decommissioned') return false;
    await this.fleet.devices.setDeviceStatus(tx, claimed, 'quarantined');
    await this.audit.append(tx, {
      actor: 'system',
      action: 'device.quarantine',
      target: `device:${claimed}`,
      outcome: 'success',
      details: { cause: 'attestation contraindicated', result: row.id },
    });
    return true;
  }

  // -- results, as the relying party and operators see them -----------------------------------

  /** The unused, unexpired result an attestation token stands for, or a reason it does not. */
  async redeemable(db: Executor, token: string, now = Date.now()): Promise<AttestationResultsTable | string> {
    if (!token.startsWith(TOKEN_PREFIX)) return 'the bearer token is not an attestation token';
    const row = await db
      .selectFrom('attestation_results')
      .selectAll()
      .where('token_hash', '=', sha256Hex(token))
      .executeTakeFirst();
    if (!row) return 'the attestation token is not known';
    if (row.token_used_at) return 'the attestation token was already used; attest again';
    if (Date.parse(row.token_expires_at!) < now) return 'the attestation token has expired; attest again';
    return row;
  }

  /** Mark a result's token used (in the issuing transaction); false when another enrollment won. */
  async redeem(tx: Executor, id: string): Promise<boolean> {
    const r = await tx
      .updateTable('attestation_results')
      .set({ token_used_at: isoNow() })
      .where('id', '=', id)
      .where('token_used_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async results(db: Executor, deviceId: string, limit = 20): Promise<AttestationResultView[]> {
    const rows = await db
      .selectFrom('attestation_results')
      .selectAll()
      .where('device_id', '=', deviceId)
      .orderBy('created_at', 'desc')
      .limit(limit)
      .execute();
    return rows.map(toResultView);
  }
}
