import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger } from '@rampart/shared/logging';
import { TokenService } from './access/tokens.js';
import type { Role } from '@rampart/shared/access';
import { buildApi, type Api } from './api/server.js';
import { PlatformMetrics } from './api/metrics.js';
import { AuditLog } from './audit/log.js';
import { databaseUrlOf, type ServerConfig } from './config/index.js';
import { FleetRegistry } from './fleet/registry.js';
import { getOrCreateKey, openKeyStore, type KeyStore, type PlatformKey } from './keystore/index.js';
import { openStorage, type Storage } from './storage/index.js';
import { IdentityService, type IdentitySettings } from './identity/service.js';
import { buildEstServer, type EstServer } from './identity/est-server.js';
import { buildPkiServer, pkiPaths, type PkiServer } from './identity/pki-server.js';
import { Gateway } from './gateway/gateway.js';
import { ProvisioningService } from './provisioning/service.js';
import { UpdatesService, updatesSettingsOf } from './updates/service.js';
import { buildUpdatesListener, type UpdatesListener } from './updates/listener.js';
import { DeploymentEngine, DeploymentScheduler, recordOutcome } from './updates/deployments/index.js';
import { assign as directorAssign, unassign as directorUnassign } from './updates/director/assignments.js';
import { TRANSCRIPT_KEY_LABEL } from './provisioning/transcripts.js';
import { PolicyStore } from './gateway/policies.js';
import { ShadowService } from './gateway/shadows.js';
import { CommandService } from './gateway/commands.js';
import { AedesAdapter } from './gateway/aedes-adapter.js';
import type { BrokerAdapter } from './gateway/broker.js';
import { lockDataDir } from './data-dir-lock.js';
import { RampartError } from './errors.js';
import { writeFileAtomic } from './files.js';
import { VERSION } from './version.js';
import { connectableHost } from './text.js';

export const AUDIT_KEY_LABEL = 'audit-checkpoint';

/** Files `rampart up` leaves in the data directory for the CLI and for people. */
export const dataFiles = (dataDir: string) => ({
  adminToken: join(dataDir, 'admin-token'),
  caCert: join(dataDir, 'ca.pem'),
  runtime: join(dataDir, 'runtime.json'),
  auditPublicKey: join(dataDir, 'audit-checkpoint.pub.pem'),
  transcriptPublicKey: join(dataDir, 'transcript-signing.pub.pem'),
  keys: join(dataDir, 'keys'),
});

export interface Listener {
  name: string;
  url: string;
}

export interface Platform {
  config: ServerConfig;
  storage: Storage;
  audit: AuditLog;
  api: Api;
  identity: IdentityService;
  updates: UpdatesService;
  /** Deployments: `tick()` advances them now (the scheduler does it every few seconds). */
  deployments: DeploymentEngine;
  keys: KeyStore;
  listeners: Listener[];
  /** The first admin token, present only on the start that created it. */
  initialAdminToken: string | null;
  /**
   * Create an API token for a component that runs beside the platform in the same process (the
   * demo fleet), audited as created by `system`. The secret is returned, never written anywhere.
   */
  issueServiceToken(input: { name: string; role: Role; ttlMs: number; reason: string }): Promise<string>;
  logger: Logger;
  stop(reason?: string): Promise<void>;
}

export interface StartOptions {
  env?: Record<string, string | undefined>;
  logger?: Logger;
}

export { openKeyStore };

/** Start every service of the platform on the given configuration. */
export async function startPlatform(config: ServerConfig, options: StartOptions = {}): Promise<Platform> {
  const env = options.env ?? process.env;
  const logger = options.logger ?? createLogger({ level: config.log.level, format: config.log.format });
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const unlock = lockDataDir(config.dataDir);
  try {
    return await startLocked(config, env, logger, unlock);
  } catch (err) {
    unlock();
    throw err;
  }
}

export function identitySettingsOf(config: ServerConfig): IdentitySettings {
  return {
    hierarchy: {
      organization: config.ca.organization,
      keyAlgorithm: config.ca.keyAlgorithm,
      rootValidityDays: 20 * 365,
      issuingValidityDays: 5 * 365,
      manufacturingValidityDays: 20 * 365,
    },
    deviceValidityHours: config.ca.deviceCertificateHours,
    crlValidityHours: config.ca.crlValidityHours,
    ocspValidityMinutes: config.ca.ocspValidityMinutes,
    supersedeOnRenewal: config.ca.supersedeOnRenewal,
    serverCertificateDays: 90,
  };
}

function listenError(name: string, host: string, port: number, flag: string, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
    return new RampartError(
      'CONFLICT',
      `the ${name} cannot listen on ${host}:${port} (${code}); choose another with ${flag} (0 picks a free one)`,
    );
  }
  return err;
}

async function startLocked(
  config: ServerConfig,
  env: Record<string, string | undefined>,
  logger: Logger,
  unlock: () => void,
): Promise<Platform> {
  const files = dataFiles(config.dataDir);
  const keys = await openKeyStore(config, env, logger);
  const auditKey: PlatformKey = await getOrCreateKey(keys, AUDIT_KEY_LABEL, 'ec-p256');
  writeFileSync(files.auditPublicKey, auditKey.publicKey.export({ type: 'spki', format: 'pem' }) as string, {
    mode: 0o644,
  });

  const storage = await openStorage(databaseUrlOf(config), {
    poolSize: config.database.poolSize,
    sqliteSynchronous: config.database.sqliteSynchronous,
  });
  let api: Api | null = null;
  let est: EstServer | null = null;
  let pki: PkiServer | null = null;
  let identity: IdentityService | null = null;
  let broker: BrokerAdapter | null = null;
  let updatesListener: UpdatesListener | null = null;
  try {
    const metrics = new PlatformMetrics(VERSION);
    const audit = new AuditLog(storage, auditKey, {
      onSealError: (err) =>
        logger.error({ err }, 'sealing audit entries failed; they stay queued and are retried'),
      onAppend: (outcome) => metrics.auditEntries.inc({ outcome }),
    });
    // Entries a crash left in the queue join the chain before anything else happens.
    await audit.flush();
    audit.startSealer();
    const tokens = new TokenService();
    const fleet = new FleetRegistry(storage);
    metrics.gaugeFromCallback('rampart_devices', 'Registered devices by status.', ['status'], async () =>
      (await fleet.countByStatus()).map((r) => ({ labels: { status: r.status }, value: r.n })),
    );
    metrics.gaugeFromCallback(
      'rampart_audit_head_seq',
      'Sequence number of the newest audit entry.',
      [],
      async () => [{ labels: {}, value: (await audit.head()).seq }],
    );

    identity = new IdentityService(storage, keys, audit, fleet, identitySettingsOf(config), logger);
    const createdCas = await identity.open();
    for (const ca of createdCas)
      logger.info({ ca: ca.id, subject: ca.subject }, 'certificate authority created');
    metrics.gaugeFromCallback(
      'rampart_certificates',
      'Certificates Rampart issued, by issuing CA and state (valid, expired, revoked).',
      ['issuer', 'state'],
      async () =>
        (await identity!.registry.countsByState(storage.db)).map((r) => ({
          labels: { issuer: r.issuerId, state: r.state },
          value: r.n,
        })),
    );

    /** A token created by the platform itself, audited as `system`. */
    const systemToken = (name: string, role: Role, expiresAt: string | null, reason: string) =>
      storage.db.transaction().execute(async (tx) => {
        const created = await tokens.create(tx, { name, role, expiresAt, createdBy: 'system' });
        await audit.append(tx, {
          actor: 'system',
          action: 'token.create',
          target: `token:${created.record.id}`,
          outcome: 'success',
          details: { name, role, reason },
        });
        return created.token;
      });
    let initialAdminToken: string | null = null;
    if ((await tokens.countActive(storage.db)) === 0) {
      initialAdminToken = await systemToken('initial admin', 'admin', null, 'first start');
      writeFileAtomic(files.adminToken, initialAdminToken + '\n', 0o600);
    }

    // The PKI listener comes first: every certificate names its URLs.
    pki = await buildPkiServer({
      identity,
      logger,
      onOcsp: (status) => metrics.ocspResponses.inc({ status }),
    });
    try {
      await pki.listen({ host: config.pki.host, port: config.pki.port });
    } catch (err) {
      throw listenError('PKI listener', config.pki.host, config.pki.port, '--pki-port', err);
    }
    const pkiAddress = pki.server.address() as AddressInfo;
    const pkiUrl = config.pki.publicUrl ?? `http://${connectableHost(config.pki.host)}:${pkiAddress.port}`;
    identity.setUrls({
      crl: (caId) => pkiUrl + pkiPaths.crl(caId),
      ocsp: () => pkiUrl + pkiPaths.ocsp,
      caIssuer: (caId) => pkiUrl + pkiPaths.caCert(caId),
    });
    identity.start();

    const tls = await identity.serverTls(config.dataDir, config.api.publicHostnames);
    writeFileAtomic(files.caCert, tls.rootPem, 0o644);

    // Security events go to the gateway's store once it runs (it starts after the EST listener).
    let gatewayRef: Gateway | null = null;
    const shadows = new ShadowService();
    const transcriptKey = await getOrCreateKey(keys, TRANSCRIPT_KEY_LABEL, 'ec-p256');
    writeFileAtomic(
      files.transcriptPublicKey,
      transcriptKey.publicKey.export({ type: 'spki', format: 'pem' }) as string,
      0o644,
    );
    const provisioning = new ProvisioningService(
      storage,
      identity,
      fleet,
      shadows,
      audit,
      transcriptKey,
      {
        nonceTtlSeconds: 300,
        tokenTtlSeconds: 600,
        certificateHours: config.ca.deviceCertificateHours,
      },
      {
        securityEvent: (kind, deviceId, source, reason) =>
          gatewayRef?.stats.event(kind, deviceId, source, reason),
      },
      logger.child({ component: 'provisioning' }),
    );
    const defaultPolicy = await provisioning.open();
    if (defaultPolicy)
      await audit.record({
        actor: 'system',
        action: 'enrollment.policy.create',
        target: `enrollment-policy:${defaultPolicy.name}`,
        outcome: 'success',
        details: { kind: defaultPolicy.kind, reason: 'first start' },
      });
    // The release repository and its listener (plain HTTP: TUF metadata and targets verify themselves).
    const updates = new UpdatesService(
      storage,
      keys,
      audit,
      updatesSettingsOf(config),
      config.dataDir,
      logger.child({ component: 'updates' }),
    );
    await updates.open();
    updates.onServed((kind, bytes) => metrics.updatesServedBytes.inc({ kind }, bytes));
    updatesListener = buildUpdatesListener(updates, logger.child({ component: 'updates' }));
    let updatesAddress: AddressInfo;
    try {
      updatesAddress = await updatesListener.listen({ host: config.updates.host, port: config.updates.port });
    } catch (err) {
      throw listenError('updates listener', config.updates.host, config.updates.port, '--updates-port', err);
    }
    updates.url =
      config.updates.publicUrl ?? `http://${connectableHost(config.updates.host)}:${updatesAddress.port}`;
    updates.start();
    // Deployments hand devices to the director, which tells each device what to install.
    const deployments = new DeploymentEngine(
      storage.db,
      storage.dialect,
      { assign: directorAssign, unassign: directorUnassign },
      () => new Date(),
      audit,
      logger.child({ component: 'deployments' }),
    );
    // A device's receipt for a deployment's release counts it as succeeded or failed there.
    updates.director.onOutcome((tx, report) => recordOutcome(tx, report));
    const deploymentScheduler = new DeploymentScheduler(
      deployments,
      logger.child({ component: 'deployments' }),
    );
    deploymentScheduler.start();

    est = await buildEstServer({
      identity,
      provisioning,
      updates,
      tls,
      logger,
      onRequest: (operation, outcome) => metrics.estRequests.inc({ operation, outcome }),
      refusalsPerMinute: config.est.refusalsPerMinute,
    });
    try {
      await est.listen({ host: config.est.host, port: config.est.port });
    } catch (err) {
      throw listenError('EST server', config.est.host, config.est.port, '--est-port', err);
    }
    const estAddress = est.server.address() as AddressInfo;

    // The MQTT gateway: mTLS with the same server certificate, trusting Rampart's CAs.
    const policies = new PolicyStore(storage);
    const gateway = new Gateway(storage, identity, fleet, policies, shadows, logger, {
      onRefusal: (e) => metrics.gatewayRefusals.inc({ kind: e.kind }),
      onConnect: () => metrics.gatewayConnects.inc(),
      onTraffic: (direction, bytes) => {
        metrics.gatewayMessages.inc({ direction });
        metrics.gatewayBytes.inc({ direction }, bytes);
      },
    });
    gatewayRef = gateway;
    let gatewayTls = tls;
    broker = new AedesAdapter({
      host: config.gateway.host,
      port: config.gateway.port,
      insecurePlainPort: config.gateway.insecurePlainPort ?? null,
      tls: { key: tls.key, cert: tls.cert, ca: identity.trustedCaPems() },
      hooks: gateway,
      logger: logger.child({ component: 'gateway' }),
      limits: config.gateway.limits,
      onLimitExceeded: (kind) => metrics.gatewayRefusals.inc({ kind: `limit-${kind}` }),
    });
    const runningBroker = broker;
    gateway.bindBroker(runningBroker);
    gateway.stats.start(10_000);
    const commands = new CommandService(storage, gateway, logger.child({ component: 'commands' }));
    gateway.onDevicePublish((session, topic, payload) => commands.responded(session, topic, payload));
    const reloadBrokerTls = () =>
      runningBroker.updateTls({ key: gatewayTls.key, cert: gatewayTls.cert, ca: identity!.trustedCaPems() });
    identity.onHierarchyChange(reloadBrokerTls);
    identity.onServerTlsChange((next) => {
      gatewayTls = next;
      reloadBrokerTls();
    });
    let brokerListeners;
    try {
      brokerListeners = await broker.listen();
    } catch (err) {
      throw listenError('MQTT gateway', config.gateway.host, config.gateway.port, '--mqtt-port', err);
    }
    metrics.gaugeFromCallback(
      'rampart_gateway_sessions',
      'Live MQTT sessions on this gateway.',
      [],
      async () => [{ labels: {}, value: runningBroker.sessionCount() }],
    );
    identity.endpoints = {
      ...identity.endpoints!,
      est: `https://${connectableHost(config.est.host)}:${estAddress.port}/.well-known/est`,
    };

    api = await buildApi(
      {
        config,
        storage,
        audit,
        auditPublicKey: auditKey.publicKey,
        tokens,
        fleet,
        identity,
        policies,
        gateway,
        shadows,
        commands,
        provisioning,
        updates,
        deployments,
        metrics,
        logger,
        version: VERSION,
      },
      { https: { key: tls.key, cert: tls.cert } },
    );
    try {
      await api.listen({ host: config.api.host, port: config.api.port });
    } catch (err) {
      throw listenError('management API', config.api.host, config.api.port, '--api-port', err);
    }
    const address = api.server.address() as AddressInfo;
    const runningApiServer = api.server as unknown as { setSecureContext(o: object): void };
    identity.onServerTlsChange((next) =>
      runningApiServer.setSecureContext({ key: next.key, cert: next.cert, minVersion: 'TLSv1.2' }),
    );
    const stopTlsRenewal = identity.keepServerTlsFresh(config.dataDir, config.api.publicHostnames);
    const listeners: Listener[] = [
      { name: 'api', url: `https://${connectableHost(config.api.host)}:${address.port}` },
      { name: 'est', url: `https://${connectableHost(config.est.host)}:${estAddress.port}/.well-known/est` },
      { name: 'pki', url: `http://${connectableHost(config.pki.host)}:${pkiAddress.port}` },
      { name: 'updates', url: updates.url },
      ...brokerListeners,
    ];

    await audit.record({
      actor: 'system',
      action: 'platform.start',
      target: '',
      outcome: 'success',
      details: {
        version: VERSION,
        database: storage.dialect,
        keyStore: keys.backend,
        listeners: Object.fromEntries(listeners.map((l) => [l.name, l.url])),
      },
    });
    writeFileAtomic(
      files.runtime,
      JSON.stringify(
        {
          pid: process.pid,
          version: VERSION,
          startedAt: new Date().toISOString(),
          listeners,
          caCert: files.caCert,
        },
        null,
        2,
      ) + '\n',
      0o644,
    );

    const timer = setInterval(() => {
      audit.checkpoint().catch((err: unknown) => logger.error({ err }, 'audit checkpoint failed'));
    }, config.audit.checkpointIntervalSeconds * 1000);
    timer.unref();

    let stopping: Promise<void> | null = null;
    const running = {
      api,
      est,
      pki,
      identity,
      broker,
      commands,
      gateway,
      updates,
      updatesListener,
      deploymentScheduler,
    };
    const stop = (reason = 'shutdown') => {
      stopping ??= (async () => {
        clearInterval(timer);
        stopTlsRenewal();
        running.identity.stop();
        audit.stopSealer();
        running.commands.stop();
        await running.updates.stop();
        await running.deploymentScheduler.stop();
        await running.broker.close();
        await running.gateway.stats.stop();
        await Promise.all([
          running.api.close(),
          running.est.close(),
          running.pki.close(),
          running.updatesListener.close(),
        ]);
        try {
          await audit.record({
            actor: 'system',
            action: 'platform.stop',
            target: '',
            outcome: 'success',
            details: { reason },
          });
          await audit.checkpoint();
        } finally {
          await storage.close();
          await keys.close?.();
          rmSync(files.runtime, { force: true });
          unlock();
        }
      })();
      return stopping;
    };
    const issueServiceToken: Platform['issueServiceToken'] = (input) =>
      systemToken(input.name, input.role, new Date(Date.now() + input.ttlMs).toISOString(), input.reason);
    return {
      config,
      storage,
      audit,
      api,
      identity,
      updates,
      deployments,
      keys,
      listeners,
      initialAdminToken,
      issueServiceToken,
      logger,
      stop,
    };
  } catch (err) {
    identity?.stop();
    await broker?.close().catch(() => {});
    await api?.close().catch(() => {});
    await est?.close().catch(() => {});
    await pki?.close().catch(() => {});
    await updatesListener?.close().catch(() => {});
    await storage.close().catch(() => {});
    await keys.close?.().catch(() => {});
    throw err;
  }
}
