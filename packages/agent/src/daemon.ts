import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '@rampart/shared/logging';
import type { AgentConfig } from './config.js';
import { CommandDispatcher } from './connection/commands.js';
import { DeviceConnection, type OfflineEvent } from './connection/connection.js';
import { identityCredentials } from './connection/credentials.js';
import { FileQueue, processAlive } from './connection/file-queue.js';
import { ShadowSync } from './connection/shadow.js';
import { AgentError } from './errors.js';
import type { EstClient } from './est/client.js';
import type { CertificateInfo } from './identity/certificate.js';
import { renewDevice } from './identity/enroll.js';
import { writeFileAtomic } from './identity/files.js';
import { RenewalScheduler, type RenewalEvent, type SchedulerOutcome } from './identity/renewal.js';
import type { IdentityStore } from './identity/store.js';
import type { TrustAnchor } from './trust-anchor/trust-anchor.js';
import type { Installer, UpdateResult } from './updates/installer.js';
import type { UpdateClient } from './updates/client.js';
import { VERSION } from './version.js';

/**
 * The update check at start-up, before the agent connects: an install cut short is abandoned, a slot
 * on trial is counted as started and rolled back after too many starts or past its deadline, else
 * self-tested and committed or rolled back. A failure here is logged, never fatal: the agent must
 * still come up to report it.
 */
export async function updateStartupCheck(installer: Installer, log: Logger): Promise<UpdateResult | null> {
  try {
    const result = await installer.boot();
    if (result.outcome !== 'nothing-pending')
      log.info(
        {
          outcome: result.outcome,
          reason: result.reason,
          slot: result.slot,
          version: result.version,
          receipt: result.receipt,
        },
        `update check at start: ${result.outcome}${result.reason ? ` (${result.reason})` : ''}, version ${result.version ?? '-'}; slot ${result.running} runs`,
      );
    return result;
  } catch (err) {
    log.error({ err }, `update check at start failed: ${(err as Error).message}`);
    return null;
  }
}

/** The gateway port devices use unless told otherwise. */
export const DEFAULT_GATEWAY_PORT = 8883;

/** What `rampart-agent run` writes to `<dataDir>/status.json` and `rampart-agent status` shows. */
export interface AgentStatus {
  pid: number;
  version: string;
  deviceId: string;
  gateway: string;
  state: 'idle' | 'connecting' | 'online' | 'offline' | 'stopped';
  since: string;
  certificate: { serial: string; notAfter: string } | null;
  nextRenewal: string | null;
  queue: { messages: number; bytes: number; dropped: number };
  lastFailure: { kind: string; message: string; at: string } | null;
  updatedAt: string;
}

export function statusFile(dataDir: string): string {
  return join(dataDir, 'status.json');
}

/** The status the daemon last wrote, or null when it never ran here. */
export function readAgentStatus(dataDir: string): AgentStatus | null {
  const file = statusFile(dataDir);
  if (!existsSync(file)) return null;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as AgentStatus;
  } catch {
    return null;
  }
}

/** Whether the daemon that wrote `status` still runs. */
export function agentRunning(status: AgentStatus): boolean {
  return status.state !== 'stopped' && processAlive(status.pid);
}

/**
 * The gateway to connect to: `mqtt.url`, else the host of the EST server (as configured, or as
 * remembered at enrollment) on port 8883.
 */
export function gatewayUrl(config: AgentConfig, store: IdentityStore): string {
  if (config.mqtt.url) return config.mqtt.url.replace(/\/$/, '');
  const est = config.est.url ?? store.server()?.estUrl;
  if (!est)
    throw new AgentError(
      'USAGE',
      "no gateway given: pass --mqtt-url mqtts://host:port or set RAMPART_AGENT_MQTT_URL (mqtt.url) to the platform's gateway",
    );
  return `mqtts://${new URL(est).host.replace(/:\d+$/, '')}:${DEFAULT_GATEWAY_PORT}`;
}

/** One log line per renewal decision, as `rampart-agent run` writes them. */
export function logRenewalEvent(log: Logger, e: RenewalEvent): void {
  switch (e.type) {
    case 'scheduled':
      log.info(
        { serial: e.certificate.serial, notAfter: e.certificate.notAfter, renewAt: e.at },
        `certificate ${e.certificate.serial} valid until ${e.certificate.notAfter.toISOString()}; renewal planned at ${e.at.toISOString()}`,
      );
      break;
    case 'renewing':
      log.info({ serial: e.certificate.serial, attempt: e.attempt }, 'renewing the device certificate');
      break;
    case 'renewed':
      log.info(
        {
          serial: e.certificate.serial,
          previousSerial: e.previous.serial,
          notAfter: e.certificate.notAfter,
          nextRenewal: e.next,
        },
        `certificate renewed: serial ${e.certificate.serial}, valid until ${e.certificate.notAfter.toISOString()}; next renewal at ${e.next.toISOString()}`,
      );
      break;
    case 'failed':
      log.warn(
        { attempt: e.attempt, retryAt: e.retryAt, serial: e.certificate?.serial },
        `renewal failed (attempt ${e.attempt}): ${e.reason}; retrying at ${e.retryAt.toISOString()}`,
      );
      break;
    case 'expired':
    case 'not-enrolled':
      log.error(e.reason);
      break;
    case 'stopped':
      log.info('stopped');
      break;
  }
}

export interface AgentDaemonOptions {
  config: AgentConfig;
  log: Logger;
  anchor: TrustAnchor;
  store: IdentityStore;
  /** The EST client renewal uses (it trusts the root pinned at enrollment). */
  est: EstClient;
  /** Periodic update checks (updates.checkIntervalSeconds), when given. */
  updates?: UpdateClient;
  /** The signed receipt of an update decided at this start, delivered to the director through `updates`. */
  receipt?: string | null;
}

/** How often the status file is refreshed while nothing else changes. */
const STATUS_INTERVAL_MS = 30_000;

/**
 * `rampart-agent run`: keeps the certificate renewed and the device connected to the gateway.
 * Messages wait in the offline queue under `<dataDir>/queue/`; the shadow is synchronised after
 * every connect and reports the agent's version and certificate; the built-in `ping` command shows
 * that the device is alive. A renewal switches the connection to the new certificate without losing
 * messages. stop() (SIGINT/SIGTERM) ends everything cleanly and flushes the queue to disk.
 */
export class AgentDaemon {
  readonly deviceId: string;
  readonly connection: DeviceConnection;
  readonly shadow: ShadowSync;
  readonly commands: CommandDispatcher;
  readonly scheduler: RenewalScheduler;
  /** Settles when the daemon has stopped: 'stopped' after stop(), else why renewal gave up. */
  readonly done: Promise<SchedulerOutcome>;
  private readonly options: AgentDaemonOptions;
  private readonly startedAt = Date.now();
  private stopping: Promise<void> | null = null;
  private since = new Date();
  private lastFailure: AgentStatus['lastFailure'] = null;
  private statusTimer: NodeJS.Timeout | null = null;
  private updateTimer: NodeJS.Timeout | null = null;
  private checking = false;
  /** A signed receipt the director has not taken yet: sent again at every connection and update check. */
  private unsentReceipt: string | null = null;
  private sendingReceipt: Promise<void> | null = null;

  private constructor(options: AgentDaemonOptions) {
    this.options = options;
    const { config, log, anchor, store, est } = options;
    const current = store.current();
    if (!current?.info.deviceId)
      throw new AgentError(
        'NOT_ENROLLED',
        `the device has no certificate in ${store.dir} yet; enroll it first: rampart-agent enroll --token-file FILE`,
      );
    this.deviceId = current.info.deviceId;
    if (config.deviceId && config.deviceId !== this.deviceId)
      throw new AgentError(
        'USAGE',
        `the device certificate is for "${this.deviceId}" but the configuration says device id "${config.deviceId}"; ` +
          'fix deviceId (RAMPART_AGENT_DEVICE_ID), or enroll again as the configured device',
      );
    const url = gatewayUrl(config, store);
    const queue = FileQueue.open(join(config.dataDir, 'queue'), {
      maxMessages: config.queue.maxMessages,
      maxBytes: config.queue.maxBytes,
      syncIntervalMs: config.queue.syncIntervalMs,
      log,
    });
    if (queue.recovery.messages > 0)
      log.info(
        { messages: queue.recovery.messages },
        `${queue.recovery.messages} messages from the offline queue will be delivered once connected`,
      );
    this.connection = new DeviceConnection({
      url,
      deviceId: this.deviceId,
      credentials: () => identityCredentials(store, anchor),
      queue,
      keepaliveSeconds: config.mqtt.keepaliveSeconds,
      connectTimeoutMs: config.mqtt.connectTimeoutMs,
      backoff: config.mqtt.backoff,
      log,
    });
    this.shadow = new ShadowSync(this.connection, { log });
    this.commands = new CommandDispatcher(this.connection, { log }).handle('ping', () => ({
      pong: true,
      agentVersion: VERSION,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      certificateSerial: this.connection.certificateSerial,
      time: new Date().toISOString(),
    }));
    this.scheduler = new RenewalScheduler({
      current: () => store.current()?.info ?? null,
      // Renewal and connection work together: nothing in flight is lost when the certificate changes.
      renew: () =>
        this.connection.switchCertificate(() =>
          renewDevice({ anchor, store, est, deviceId: config.deviceId }),
        ),
      onEvent: (e) => {
        logRenewalEvent(log, e);
        if (e.type === 'renewed') this.reportIdentity(e.certificate);
        this.writeStatus();
      },
    });
    this.connection.on('state', (state) => {
      this.since = new Date();
      this.writeStatus();
      // Online again: the platform is reachable, so a receipt that could not be sent goes now.
      if (state === 'online') void this.deliverReceipt();
    });
    this.connection.on('offline', (e: OfflineEvent) => {
      this.lastFailure = { kind: e.failure.kind, message: e.failure.message, at: new Date().toISOString() };
      this.writeStatus();
    });
    this.done = this.scheduler.done.then(async (outcome) => {
      await this.stop();
      return outcome;
    });
    log.info(
      {
        deviceId: this.deviceId,
        gateway: url,
        est: est.baseUrl,
        trustAnchor: anchor.kind,
        strength: anchor.strength,
        version: VERSION,
      },
      `rampart-agent running as ${this.deviceId}: connecting to ${url} and keeping the certificate renewed`,
    );
    this.connection.start();
    this.scheduler.start();
    this.reportIdentity(current.info);
    this.statusTimer = setInterval(() => this.writeStatus(), STATUS_INTERVAL_MS);
    this.statusTimer.unref();
    this.writeStatus();
    const every = config.updates.checkIntervalSeconds * 1000;
    if (options.updates && every > 0) {
      const first = setTimeout(() => this.checkForUpdate(), Math.min(every, 30_000));
      first.unref();
      this.updateTimer = setInterval(() => this.checkForUpdate(), every);
      this.updateTimer.unref();
    }
    if (options.receipt) {
      this.unsentReceipt = options.receipt;
      void this.deliverReceipt();
    }
  }

  /**
   * Send the receipt the director has not taken yet, if any. One that cannot be delivered (the
   * network is not up yet after a reboot, the platform is down) is kept and sent again, so that a
   * deployment still counts the device. One the director refuses is dropped: sending it again
   * cannot change the answer.
   */
  private deliverReceipt(): Promise<void> {
    const { updates, log } = this.options;
    const file = this.unsentReceipt;
    if (!updates || !file || this.stopping) return Promise.resolve();
    this.sendingReceipt ??= updates
      .sendReceipt(file)
      .then((delivery) => {
        if (delivery === 'unreachable' || this.unsentReceipt !== file) return;
        this.unsentReceipt = null;
        if (delivery === 'delivered') log.info({ receipt: file }, 'update receipt delivered to the platform');
        else log.warn({ receipt: file }, 'the director refused the update receipt; it is not sent again');
      })
      .finally(() => (this.sendingReceipt = null));
    return this.sendingReceipt;
  }

  /** One update cycle; its failures are logged (refusals as `update.refused`), never fatal. */
  private checkForUpdate(): void {
    const updates = this.options.updates;
    if (!updates || this.checking || this.stopping) return;
    this.checking = true;
    this.deliverReceipt()
      .then(() => updates.check())
      .then((r) => {
        this.options.log.info({ update: r.outcome, target: r.target }, `update check: ${r.detail}`);
        if (r.result?.receipt && !r.receiptSent) this.unsentReceipt = r.result.receipt;
      })
      .catch((err: unknown) =>
        this.options.log.warn({ err }, `update check failed: ${(err as Error).message}`),
      )
      .finally(() => (this.checking = false));
  }

  static start(options: AgentDaemonOptions): AgentDaemon {
    return new AgentDaemon(options);
  }

  /** Stop renewal, commands and shadow, disconnect cleanly and flush the offline queue to disk. */
  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      if (this.statusTimer) clearInterval(this.statusTimer);
      if (this.updateTimer) clearInterval(this.updateTimer);
      this.commands.stop();
      this.shadow.stop();
      await this.scheduler.stop();
      await this.connection.stop();
      this.writeStatus();
    })();
    return this.stopping;
  }

  /** The reported shadow says which agent runs and with which certificate. */
  private reportIdentity(certificate: CertificateInfo): void {
    this.shadow
      .report({
        agent: {
          version: VERSION,
          certificateSerial: certificate.serial,
          certificateNotAfter: certificate.notAfter.toISOString(),
          trustAnchor: this.options.anchor.kind,
        },
      })
      .catch((err: unknown) => {
        if (!(err instanceof AgentError && err.code === 'STOPPED'))
          this.options.log.warn({ err }, 'reporting the agent state to the shadow failed');
      });
  }

  private writeStatus(): void {
    const cert = (() => {
      try {
        return this.options.store.current()?.info ?? null;
      } catch {
        return null;
      }
    })();
    const status: AgentStatus = {
      pid: process.pid,
      version: VERSION,
      deviceId: this.deviceId,
      gateway: this.connection.url,
      state: this.connection.state,
      since: this.since.toISOString(),
      certificate: cert ? { serial: cert.serial, notAfter: cert.notAfter.toISOString() } : null,
      nextRenewal: this.scheduler.nextAttempt?.toISOString() ?? null,
      queue: {
        messages: this.connection.queue.size,
        bytes: this.connection.queue.bytes,
        dropped: this.connection.queue.dropped,
      },
      lastFailure: this.lastFailure,
      updatedAt: new Date().toISOString(),
    };
    try {
      writeFileAtomic(statusFile(this.options.config.dataDir), JSON.stringify(status, null, 2) + '\n', 0o644);
    } catch (err) {
      this.options.log.debug({ err }, 'cannot write the status file');
    }
  }
}
