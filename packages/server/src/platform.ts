import { mkdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger } from '@rampart/shared/logging';
import { TokenService } from './access/tokens.js';
import { buildApi, type Api } from './api/server.js';
import { PlatformMetrics } from './api/metrics.js';
import { AuditLog } from './audit/log.js';
import { databaseUrlOf, type ServerConfig } from './config/index.js';
import { FleetRegistry } from './fleet/registry.js';
import {
  FileKeyStore,
  getOrCreateKey,
  resolvePassphrase,
  type KeyStore,
  type PlatformKey,
} from './keystore/index.js';
import { openStorage, type Storage } from './storage/index.js';
import { ensureApiTls } from './tls/bootstrap.js';
import { lockDataDir } from './data-dir-lock.js';
import { RampartError } from './errors.js';
import { writeFileAtomic } from './files.js';
import { VERSION } from './version.js';

export const AUDIT_KEY_LABEL = 'audit-checkpoint';

/** Files `rampart up` leaves in the data directory for the CLI and for people. */
export const dataFiles = (dataDir: string) => ({
  adminToken: join(dataDir, 'admin-token'),
  caCert: join(dataDir, 'ca.pem'),
  runtime: join(dataDir, 'runtime.json'),
  auditPublicKey: join(dataDir, 'audit-checkpoint.pub.pem'),
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
  listeners: Listener[];
  /** The first admin token, present only on the start that created it. */
  initialAdminToken: string | null;
  logger: Logger;
  stop(reason?: string): Promise<void>;
}

export interface StartOptions {
  env?: Record<string, string | undefined>;
  logger?: Logger;
}

function connectableHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

/** Open the key store with the configured or generated passphrase. */
export async function openKeyStore(
  config: ServerConfig,
  env: Record<string, string | undefined>,
  logger?: Logger,
): Promise<KeyStore> {
  const source = resolvePassphrase(env, config.keystore.passphraseFile, config.dataDir, {
    // Generate a passphrase only for a new key store: an existing one needs the passphrase it was made with.
    create: !existsSync(join(dataFiles(config.dataDir).keys, 'keystore.json')),
  });
  if (source.warning) logger?.warn(source.warning);
  return FileKeyStore.open(dataFiles(config.dataDir).keys, source.passphrase);
}

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

    let initialAdminToken: string | null = null;
    if ((await tokens.countActive(storage.db)) === 0) {
      initialAdminToken = await storage.db.transaction().execute(async (tx) => {
        const created = await tokens.create(tx, {
          name: 'initial admin',
          role: 'admin',
          expiresAt: null,
          createdBy: 'system',
        });
        await audit.append(tx, {
          actor: 'system',
          action: 'token.create',
          target: `token:${created.record.id}`,
          outcome: 'success',
          details: { name: 'initial admin', role: 'admin', reason: 'first start' },
        });
        return created.token;
      });
      writeFileAtomic(files.adminToken, initialAdminToken + '\n', 0o600);
    }

    const tls = await ensureApiTls(config.dataDir, keys, config.api.publicHostnames);
    api = await buildApi(
      {
        config,
        storage,
        audit,
        auditPublicKey: auditKey.publicKey,
        tokens,
        fleet,
        metrics,
        logger,
        version: VERSION,
      },
      { https: { key: tls.key, cert: tls.cert } },
    );
    try {
      await api.listen({ host: config.api.host, port: config.api.port });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
        throw new RampartError(
          'CONFLICT',
          `the management API cannot listen on ${config.api.host}:${config.api.port} (${code}); choose another with --api-port (0 picks a free one) or --api-host`,
        );
      }
      throw err;
    }
    const address = api.server.address() as AddressInfo;
    const listeners: Listener[] = [
      { name: 'api', url: `https://${connectableHost(config.api.host)}:${address.port}` },
    ];

    await audit.record({
      actor: 'system',
      action: 'platform.start',
      target: '',
      outcome: 'success',
      details: {
        version: VERSION,
        database: storage.dialect,
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
          caCert: tls.caPath,
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
    const runningApi = api;
    const stop = (reason = 'shutdown') => {
      stopping ??= (async () => {
        clearInterval(timer);
        audit.stopSealer();
        await runningApi.close();
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
          rmSync(files.runtime, { force: true });
          unlock();
        }
      })();
      return stopping;
    };
    return { config, storage, audit, api, listeners, initialAdminToken, logger, stop };
  } catch (err) {
    await api?.close().catch(() => {});
    await storage.close().catch(() => {});
    throw err;
  }
}
