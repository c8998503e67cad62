import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '@rampart/shared/logging';
import { PkiFormatError, parseCsr, type ParsedCsr, type RevocationReason } from '@rampart/shared/pki';
import type { AuditLog } from '../audit/log.js';
import { writeFileAtomic } from '../files.js';
import type { FleetRegistry } from '../fleet/registry.js';
import { getOrCreateKey, type KeyStore, type PlatformKey } from '../keystore/index.js';
import type { Executor, Storage } from '../storage/index.js';
import { whenCommitted } from '../storage/committed.js';
import { GroupCommit } from '../storage/group-commit.js';
import { printable } from '../text.js';
import { CertificateAuthorities, type CaRecord, type HierarchySettings } from './authorities.js';
import { CertificateRegistry, type CertificateRecord, type RevocationResult } from './certificates.js';
import { CrlService } from './crl.js';
import { checkCsr } from './csr-policy.js';
import { CertificateIssuer, type IssuedCertificate, type PkiUrls } from './issuer.js';
import { OcspResponder, type OcspSigner } from './ocsp.js';
import {
  EnrollmentRefusal,
  type EnrollmentContext,
  type EnrollmentPolicy,
  type IssuanceGate,
} from './enrollment/policy.js';
import { EnrollmentTokens } from './enrollment/tokens.js';
import { OneTimeTokenPolicy } from './enrollment/token-policy.js';
import { CurrentCertificatePolicy } from './enrollment/reenroll-policy.js';
import { certificateStatusChanged } from './certificate-status.js';

export interface IdentitySettings {
  hierarchy: HierarchySettings;
  /** Validity of operational device certificates the shipped policies issue. */
  deviceValidityHours: number;
  crlValidityHours: number;
  ocspValidityMinutes: number;
  /** Revoke the previous certificate as `superseded` when a device renews. */
  supersedeOnRenewal: boolean;
  serverCertificateDays: number;
}

export const TLS_KEY_LABEL = 'tls-server';

const OCSP_SIGNER_DAYS = 30;

export interface ServerTls {
  key: string;
  /** Server certificate followed by its issuing CA. */
  cert: string;
  /** The root CA certificate clients pin. */
  rootPem: string;
}

/**
 * Capability 1 in one place: the CA hierarchy, issuance, enrollment policies, revocation with
 * lineage, CRLs and the OCSP responder. Transports (EST, the PKI listener, the management API) call
 * into this service and never touch keys or SQL themselves.
 */
export class IdentityService {
  readonly authorities: CertificateAuthorities;
  readonly registry = new CertificateRegistry();
  readonly issuer: CertificateIssuer;
  readonly crl: CrlService;
  readonly ocsp: OcspResponder;
  readonly tokens = new EnrollmentTokens();
  private readonly policies: EnrollmentPolicy[] = [];
  /** Enrollments share commits: see `enroll`. */
  private readonly writes: GroupCommit;
  private readonly ocspSigners = new Map<string, OcspSigner>();
  private readonly ocspPending = new Map<string, Promise<OcspSigner>>();

  constructor(
    private readonly storage: Storage,
    private readonly keys: KeyStore,
    private readonly audit: AuditLog,
    private readonly fleet: FleetRegistry,
    readonly settings: IdentitySettings,
    private readonly logger?: Logger,
  ) {
    this.writes = new GroupCommit(storage.db, { afterCommit: () => audit.sealSoon() });
    this.authorities = new CertificateAuthorities(storage, keys);
    this.issuer = new CertificateIssuer(this.authorities, this.registry, settings.hierarchy.organization);
    this.crl = new CrlService(storage, this.authorities, this.registry, settings.crlValidityHours, logger);
    this.ocsp = new OcspResponder(
      storage,
      this.authorities,
      this.registry,
      (ca) => this.ocspSigner(ca),
      settings.ocspValidityMinutes,
      logger,
    );
    this.policies.push(
      new OneTimeTokenPolicy(
        this.tokens,
        () => this.settings.deviceValidityHours,
        async (tx, deviceId) => {
          await fleet.devices.setDeviceStatus(tx, deviceId, 'active');
        },
      ),
      new CurrentCertificatePolicy(
        this.registry,
        () => this.settings.deviceValidityHours,
        () => this.settings.supersedeOnRenewal,
      ),
    );
    // Disabling a device revokes its certificates in the same transaction.
    // Decommissioning revokes them too, and drops the device's enrollment secrets (history stays).
    fleet.devices.onStatusChange(async (db, change) => {
      if (change.to === 'decommissioned') {
        await db.deleteFrom('enrollment_tokens').where('device_id', '=', change.deviceId).execute();
        await db
          .updateTable('devices')
          .set({ decommissioned_at: change.at })
          .where('id', '=', change.deviceId)
          .execute();
      } else if (change.from === 'decommissioned') {
        await db
          .updateTable('devices')
          .set({ decommissioned_at: null })
          .where('id', '=', change.deviceId)
          .execute();
      }
      if (change.to !== 'disabled' && change.to !== 'decommissioned') return;
      const reason = change.to === 'disabled' ? 'privilegeWithdrawn' : 'cessationOfOperation';
      const revoked = await this.registry.revokeForDevice(db, change.deviceId, reason);
      if (revoked.length) {
        await this.audit.append(db, {
          actor: 'system',
          action: 'certificate.revoke',
          target: `device:${change.deviceId}`,
          outcome: 'success',
          details: {
            reason,
            cause: `device ${change.to}`,
            serials: revoked.map((r) => r.serial),
          },
        });
        const serial = revoked[0]!.serial;
        whenCommitted(
          async () =>
            (
              await this.storage.db
                .selectFrom('certificates')
                .select('status')
                .where('serial', '=', serial)
                .executeTakeFirst()
            )?.status === 'revoked',
          () => {
            this.audit.sealSoon();
            this.revoked(revoked);
          },
          (err) => this.logger?.error({ err }, 'revocation follow-up failed'),
        );
      }
    });
  }

  private gate: IssuanceGate | null = null;

  /** The check every issuance passes after its policy (attestation gating, transcripts). */
  setIssuanceGate(gate: IssuanceGate): void {
    this.gate = gate;
  }

  /** Add an enrollment policy; it is asked after the ones registered before it. */
  addPolicy(policy: EnrollmentPolicy, first = false): void {
    if (first) this.policies.unshift(policy);
    else this.policies.push(policy);
  }

  /** Load the hierarchy; create it on first start. Returns the CAs created now (empty when it existed). */
  async open(): Promise<CaRecord[]> {
    await this.authorities.load();
    if (this.authorities.isInitialized()) {
      this.ocsp.reindex();
      return [];
    }
    const created = await this.authorities.initialize(this.settings.hierarchy);
    await this.audit.record({
      actor: 'system',
      action: 'ca.init',
      target: `ca:${created[0]!.id}`,
      outcome: 'success',
      details: {
        algorithm: this.settings.hierarchy.keyAlgorithm,
        keyStore: this.keys.backend,
        authorities: created.map((c) => ({
          id: c.id,
          subject: c.subject,
          serial: c.serial,
          notAfter: c.notAfter,
        })),
      },
    });
    this.ocsp.reindex();
    return created;
  }

  /** Public URLs of the listeners (set by the platform once they listen). */
  endpoints: { est: string | null; ocsp: string; crl: (caId: string) => string } | null = null;

  setUrls(urls: PkiUrls, est: string | null = null): void {
    this.issuer.setUrls(urls);
    this.endpoints = { est, ocsp: urls.ocsp(), crl: urls.crl };
  }

  /** The root CA followed by every served issuing CA, as EST `cacerts` returns them. */
  caCertificates(): Buffer[] {
    return [...this.authorities.served('root'), ...this.authorities.served('issuing')].map((c) => c.der);
  }

  /** Every CA certificate a TLS peer may chain to (root, issuing, manufacturing). */
  trustedCaPems(): string[] {
    return this.authorities.served().map((c) => c.certificatePem);
  }

  rootPem(): string {
    return this.authorities.root().certificatePem;
  }

  /**
   * Rampart's TLS server certificate, issued by the issuing CA, kept in `<data-dir>/tls/` and
   * renewed when it nears expiry, when the names change or after an issuing-CA rollover.
   */
  async serverTls(dataDir: string, extraNames: readonly string[]): Promise<ServerTls> {
    const dir = join(dataDir, 'tls');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const certPath = join(dir, 'server.crt');
    const names = [...new Set(['localhost', '127.0.0.1', '::1', hostname(), ...extraNames])].sort();
    const key = await getOrCreateKey(this.keys, TLS_KEY_LABEL, 'ec-p256', { exportable: true });
    const issuing = this.authorities.active('issuing');
    let pem = existsSync(certPath) ? readFileSync(certPath, 'utf8') : null;
    if (pem) {
      const cert = new X509Certificate(pem.split(/(?<=-----END CERTIFICATE-----)/)[0]!);
      const certNames = (cert.subjectAltName ?? '')
        .split(', ')
        .map((n) => n.replace(/^(DNS|IP Address):/, ''));
      const fresh =
        Date.parse(cert.validTo) - Date.now() > (this.settings.serverCertificateDays / 3) * 86400_000;
      const sameKey = cert.publicKey
        .export({ type: 'spki', format: 'der' })
        .equals(key.publicKey.export({ type: 'spki', format: 'der' }));
      const sameIssuer = cert.checkIssued(new X509Certificate(issuing.der));
      if (!fresh || !sameKey || !sameIssuer || names.some((n) => !certNames.includes(n))) pem = null;
    }
    if (!pem) {
      const issued = await this.storage.db.transaction().execute(async (tx) => {
        const out = await this.issuer.issueServer(
          tx,
          key.publicKey,
          names,
          this.settings.serverCertificateDays,
        );
        await this.audit.append(tx, {
          actor: 'system',
          action: 'certificate.issue',
          target: `certificate:${out.record.serial}`,
          outcome: 'success',
          details: { profile: 'server', names, issuer: out.record.issuerId, notAfter: out.record.notAfter },
        });
        return out;
      });
      this.audit.sealSoon();
      pem = issued.record.certificatePem + issuing.certificatePem;
      writeFileAtomic(certPath, pem, 0o644);
    }
    const privateKey = await this.keys.exportPrivateKey(TLS_KEY_LABEL);
    const tls: ServerTls = {
      key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      cert: pem,
      rootPem: this.rootPem(),
    };
    if (this.lastTlsCert !== null && this.lastTlsCert !== pem) for (const l of this.tlsListeners) l(tls);
    this.lastTlsCert = pem;
    return tls;
  }

  private readonly tlsListeners: ((tls: ServerTls) => void)[] = [];
  private lastTlsCert: string | null = null;

  /** Called when `serverTls` issued a new server certificate (listeners reload their TLS context). */
  onServerTlsChange(listener: (tls: ServerTls) => void): void {
    this.tlsListeners.push(listener);
  }

  /**
   * Keep the server certificate fresh while running: check twice a day, and hand a renewed
   * certificate to every listener. Returns a function that stops the timer.
   */
  keepServerTlsFresh(dataDir: string, extraNames: readonly string[]): () => void {
    const timer = setInterval(() => {
      this.serverTls(dataDir, extraNames).catch((err: unknown) =>
        this.logger?.error({ err }, 'renewing the server certificate failed; retrying in 12 h'),
      );
    }, 12 * 3600_000);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** The delegated OCSP signer of a CA, issued on first use and renewed when a third of its life is left. */
  async ocspSigner(ca: CaRecord): Promise<OcspSigner> {
    const cached = this.ocspSigners.get(ca.id);
    if (cached && this.signerFresh(cached)) return cached;
    const pending = this.ocspPending.get(ca.id);
    if (pending) return pending;
    const p = this.loadOrIssueOcspSigner(ca).finally(() => this.ocspPending.delete(ca.id));
    this.ocspPending.set(ca.id, p);
    return p;
  }

  private readonly signerExpiry = new WeakMap<OcspSigner, number>();

  private signerFresh(s: OcspSigner): boolean {
    let notAfter = this.signerExpiry.get(s);
    if (notAfter === undefined) {
      notAfter = Date.parse(new X509Certificate(s.certificateDer).validTo);
      this.signerExpiry.set(s, notAfter);
    }
    return notAfter - Date.now() > (OCSP_SIGNER_DAYS / 3) * 86400_000;
  }

  private async loadOrIssueOcspSigner(ca: CaRecord): Promise<OcspSigner> {
    const key: PlatformKey = await getOrCreateKey(
      this.keys,
      `ocsp-${ca.id}`,
      ca.keyAlgorithm === 'ec-p384' ? 'ec-p384' : 'ec-p256',
    );
    const spki = key.publicKey.export({ type: 'spki', format: 'der' });
    const existing = await this.storage.db
      .selectFrom('certificates')
      .select('certificate')
      .where('issuer_id', '=', ca.id)
      .where('profile', '=', 'ocsp')
      .where('status', '=', 'good')
      .orderBy('not_after', 'desc')
      .limit(1)
      .executeTakeFirst();
    if (existing) {
      const x = new X509Certificate(existing.certificate);
      const candidate = { key, certificateDer: Buffer.from(x.raw) };
      if (x.publicKey.export({ type: 'spki', format: 'der' }).equals(spki) && this.signerFresh(candidate)) {
        this.ocspSigners.set(ca.id, candidate);
        return candidate;
      }
    }
    const issued = await this.storage.db.transaction().execute(async (tx) => {
      const out = await this.issuer.issueOcspSigner(tx, ca, key.publicKey, OCSP_SIGNER_DAYS);
      await this.audit.append(tx, {
        actor: 'system',
        action: 'certificate.issue',
        target: `certificate:${out.record.serial}`,
        outcome: 'success',
        details: { profile: 'ocsp', issuer: ca.id, notAfter: out.record.notAfter },
      });
      return out;
    });
    this.audit.sealSoon();
    const signer = { key, certificateDer: issued.der };
    this.ocspSigners.set(ca.id, signer);
    this.ocsp.clear();
    return signer;
  }

  /** Parse a CSR and apply the checks every enrollment shares; refusal reasons say what was wrong. */
  parseRequest(der: Buffer): ParsedCsr {
    let csr: ParsedCsr;
    try {
      csr = parseCsr(der);
    } catch (err) {
      if (err instanceof PkiFormatError) throw new EnrollmentRefusal(400, err.message);
      throw err;
    }
    const rejection = checkCsr(csr);
    if (rejection) throw new EnrollmentRefusal(400, rejection.reason, csr.commonName ?? undefined);
    return csr;
  }

  /**
   * Decide and issue: the first policy that handles the credentials decides; the certificate, the
   * policy's own writes, the superseding revocation and the audit entry commit together. Group
   * commit: enrollments that arrive while a batch is being written go into the next transaction
   * together, one commit (one fsync on SQLite) for many certificates, each under its own savepoint;
   * none is acknowledged before its transaction has committed.
   */
  async enroll(ctx: EnrollmentContext): Promise<IssuedCertificate> {
    const policy = this.policies.find((p) => p.handles(ctx));
    if (!policy)
      throw new EnrollmentRefusal(
        401,
        ctx.operation === 'simplereenroll'
          ? 'simplereenroll needs the current device certificate as the TLS client certificate'
          : 'no credentials were presented: send the enrollment token as the HTTP Basic password (user name = device id) or as a Bearer token',
      );
    const issued = await this.writes.run((tx) => this.enrollOne(tx, ctx, policy));
    if (issued.superseded.length) this.revoked(issued.superseded);
    return issued.out;
  }

  private async enrollOne(
    tx: Executor,
    ctx: EnrollmentContext,
    policy: EnrollmentPolicy,
  ): Promise<{ out: IssuedCertificate; superseded: RevocationResult['revoked'] }> {
    let superseded: RevocationResult['revoked'] = [];
    const decision = await policy.decide(tx, ctx);
    const gated = this.gate ? await this.gate.check(tx, ctx, decision) : null;
    const out = await this.issuer.issueDevice(tx, {
      csr: ctx.csr,
      deviceId: decision.deviceId,
      validityHours: gated?.validityHours ?? decision.validityHours,
      renews: decision.renews,
      policy: decision.policy,
    });
    await decision.commit(tx, out.record.serial);
    await gated?.commit?.(tx);
    await this.gate?.issued(tx, ctx, decision, gated?.attestation ?? null, {
      serial: out.record.serial,
      pem: out.record.certificatePem,
    });
    if (decision.renews && decision.supersede) {
      const old = await this.registry.get(tx, decision.renews);
      if (old.status === 'good') {
        await tx
          .updateTable('certificates')
          .set({ status: 'revoked', revoked_at: out.record.createdAt, revocation_reason: 'superseded' })
          .where('serial', '=', old.serial)
          .execute();
        certificateStatusChanged();
        superseded = [
          { serial: old.serial, deviceId: old.deviceId, issuerId: old.issuerId, reason: 'superseded' },
        ];
      }
    }
    await this.audit.append(tx, {
      actor: `device:${decision.deviceId}`,
      action: 'certificate.issue',
      target: `certificate:${out.record.serial}`,
      outcome: 'success',
      details: {
        operation: ctx.operation,
        policy: decision.policy,
        ...decision.credential,
        issuer: out.record.issuerId,
        keyFingerprint: out.record.keyFingerprint,
        notAfter: out.record.notAfter,
        ...(decision.renews ? { renews: decision.renews } : {}),
        ...(superseded.length ? { superseded: decision.renews } : {}),
        ...(gated?.attestation ? { attestation: gated.attestation.id } : {}),
        remoteAddress: ctx.remoteAddress,
      },
    });
    return { out, superseded };
  }

  /** Record a refused enrollment in the audit log. */
  async auditRefusal(
    operation: string,
    err: EnrollmentRefusal,
    remoteAddress: string,
    details: Record<string, unknown> = {},
  ): Promise<void> {
    // The claimed id comes from the client (user name, CSR CN).
    const claimed = err.deviceId === undefined ? undefined : printable(err.deviceId);
    await this.audit.record({
      actor: claimed ? `device:${claimed}` : `anonymous:${remoteAddress}`,
      action: 'certificate.enroll',
      target: claimed ? `device:${claimed}` : '',
      outcome: err.status === 400 ? 'failure' : 'denied',
      details: { operation, status: err.status, reason: err.message, remoteAddress, ...details },
    });
  }

  /** Record refused attestation evidence in the audit log. */
  async auditAttestationRefusal(
    reason: string,
    deviceId: string | null,
    remoteAddress: string,
    status: number,
  ): Promise<void> {
    await this.audit.record({
      actor: deviceId ? `device:${deviceId}` : `anonymous:${remoteAddress}`,
      action: 'attestation.verify',
      target: deviceId ? `device:${deviceId}` : '',
      outcome: status === 400 ? 'failure' : 'denied',
      details: { status, reason, remoteAddress },
    });
  }

  /** Revoke a certificate and its lineage; audited in the same transaction. */
  async revoke(serial: string, reason: RevocationReason, actor: string): Promise<RevocationResult> {
    const result = await this.storage.db.transaction().execute(async (tx) => {
      const r = await this.registry.revoke(tx, serial, reason);
      await this.audit.append(tx, {
        actor,
        action: 'certificate.revoke',
        target: `certificate:${r.revoked[0]?.serial ?? serial}`,
        outcome: 'success',
        details: {
          reason,
          revoked: r.revoked.map((c) => c.serial),
          ...(r.upgraded.length ? { upgraded: r.upgraded.map((c) => c.serial) } : {}),
          ...(r.alreadyRevoked ? { alreadyRevoked: true } : {}),
        },
      });
      return r;
    });
    this.audit.sealSoon();
    if (result.upgraded.length) {
      // A changed reason changes what OCSP and the CRL say as well.
      this.ocsp.invalidate(result.upgraded);
      const regenerated = new Set(result.revoked.map((r) => r.issuerId));
      this.crl.invalidate(result.upgraded.map((r) => r.issuerId).filter((id) => !regenerated.has(id)));
    }
    this.revoked(result.revoked);
    return result;
  }

  /** After revocations commit: fresh CRLs, no stale pre-signed OCSP answers, and listeners told. */
  private revoked(list: RevocationResult['revoked']): void {
    if (!list.length) return;
    // Bumped in the transaction too; again now that it has committed (see certificate-status.ts).
    certificateStatusChanged();
    this.ocsp.invalidate(list);
    this.crl.invalidate(list.map((r) => r.issuerId));
    for (const l of this.revocationListeners) l(list);
  }

  private readonly hierarchyListeners: (() => void)[] = [];

  /** Called after a rollover or retirement changed which CAs are served. */
  onHierarchyChange(listener: () => void): void {
    this.hierarchyListeners.push(listener);
  }

  /** Roll over a CA: new generation active, previous retiring; trust, OCSP and CRLs follow at once. */
  async rollover(kind: 'issuing' | 'manufacturing') {
    const result = await this.authorities.rollover(kind, this.settings.hierarchy);
    this.hierarchyChanged();
    await this.crl.get(result.next.id);
    return result;
  }

  async retire(id: string) {
    const ca = await this.authorities.retire(id);
    this.hierarchyChanged();
    return ca;
  }

  private hierarchyChanged(): void {
    this.ocsp.reindex();
    for (const l of this.hierarchyListeners) l();
  }

  private readonly revocationListeners: ((list: RevocationResult['revoked']) => void)[] = [];

  /** Called after certificates are revoked (the gateway uses this to end live sessions). */
  onRevoked(listener: (list: RevocationResult['revoked']) => void): void {
    this.revocationListeners.push(listener);
  }

  async certificate(serial: string): Promise<CertificateRecord> {
    return this.registry.get(this.storage.db, serial);
  }

  /** The chain for a certificate: itself, then its CA, up to the root (PEM). */
  chainOf(record: CertificateRecord): string {
    const out = [record.certificatePem];
    let ca: CaRecord | undefined = this.authorities.find(record.issuerId);
    while (ca) {
      out.push(ca.certificatePem);
      ca = ca.parentId ? this.authorities.find(ca.parentId) : undefined;
    }
    return out.join('');
  }

  start(): void {
    this.crl.start();
  }

  stop(): void {
    this.crl.stop();
  }
}
