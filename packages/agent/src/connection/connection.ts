import { EventEmitter } from 'node:events';
import { PassThrough, type Duplex } from 'node:stream';
import { MqttClient, type IClientOptions } from 'mqtt';
import type { Logger } from '@rampart/shared/logging';
import { AgentError } from '../errors.js';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffPolicy } from './backoff.js';
import type { ConnectionCredentials } from './credentials.js';
import { describeConnectFailure, type ConnectFailure } from './failure.js';
import { MemoryQueue, type MessageQueue, type QueuedMessage } from './queue.js';
import { checkPublishTopic, checkTopicFilter, topicMatches } from './topics.js';

export type ConnectionState = 'idle' | 'connecting' | 'online' | 'offline' | 'stopped';

export interface DeviceConnectionOptions {
  /** The gateway, `mqtts://host:port`. */
  url: string;
  /** The device id: the MQTT client id, and the id the certificate must name. */
  deviceId: string;
  /** The certificate, key and pinned root; called before every connection attempt. */
  credentials: () => ConnectionCredentials | Promise<ConnectionCredentials>;
  /** Where outbound messages wait; the connection owns it from now on (stop() closes it). Default: in memory. */
  queue?: MessageQueue;
  /** MQTT keep-alive. Default 60 s. */
  keepaliveSeconds?: number;
  /** Time limit for TLS and CONNACK. Default 30 s. */
  connectTimeoutMs?: number;
  backoff?: Partial<BackoffPolicy>;
  /** QoS 1 messages sent without an acknowledgement yet, at most. Default 16. */
  maxInFlight?: number;
  /** How long a certificate switch or stop waits for acknowledgements of messages in flight. Default 10 s. */
  drainTimeoutMs?: number;
  /**
   * A message that is the oldest unacknowledged one each time the connection ends, this many times
   * in a row, is dropped as undeliverable (the gateway closes the connection on a publish its policy
   * refuses). Default 5.
   */
  maxDeliveryAttempts?: number;
  /** Uniform in [0, 1): the backoff jitter. */
  random?: () => number;
  log?: Logger;
}

export interface OnlineEvent {
  /** Serial of the certificate the connection authenticated with. */
  serial: string;
  /** Failed attempts before this connection. */
  attempt: number;
}

export interface OfflineEvent {
  failure: ConnectFailure;
  /** Failed attempts in a row, this one included. */
  attempt: number;
  /** When the next attempt is made; null while it waits for something else (a certificate switch, stop). */
  retryInMs: number | null;
}

export interface DroppedEvent {
  messages: QueuedMessage[];
  reason: 'queue-full' | 'undeliverable';
  /** Messages dropped since the queue was opened. */
  total: number;
}

export interface ConnectionEvents {
  state: [state: ConnectionState];
  online: [event: OnlineEvent];
  offline: [event: OfflineEvent];
  message: [topic: string, payload: Buffer];
  delivered: [message: QueuedMessage];
  dropped: [event: DroppedEvent];
}

export interface PublishOptions {
  /** Default 1: kept until the gateway acknowledges it. */
  qos?: 0 | 1;
  retain?: boolean;
}

type MessageHandler = (topic: string, payload: Buffer) => void;

/** What shadow sync and command handling need of a connection (a fake can stand in for it in tests). */
export interface GatewayLink {
  readonly deviceId: string;
  readonly isOnline: boolean;
  subscribe(filter: string, handler: MessageHandler, qos?: 0 | 1): () => void;
  publish(topic: string, payload: string | Uint8Array, options?: PublishOptions): QueuedMessage;
  publishNow(topic: string, payload: string | Uint8Array, qos?: 0 | 1): Promise<void>;
  on(event: 'online' | 'offline', listener: () => void): unknown;
  off(event: 'online' | 'offline', listener: () => void): unknown;
}

/** The MQTT over TLS port when the URL names none. */
const DEFAULT_MQTTS_PORT = 8883;
/** Drops are logged at most this often (with counts), so that a full queue cannot flood the log. */
const DROP_LOG_INTERVAL_MS = 10_000;
/** A clean disconnect that takes longer than this is cut. */
const DISCONNECT_TIMEOUT_MS = 5_000;

/**
 * The device's connection to the gateway: MQTT 3.1.1 over mutual TLS with the device's own
 * certificate and key (see MutualTls: the key may sign in a TPM or a PKCS#11 token, through the
 * OpenSSL tunnel), trusting only the pinned root and checking the server name; client id = the
 * device id; clean session. It reconnects by itself with exponential backoff and full jitter, and
 * re-subscribes on every connection. Outbound messages go through a bounded queue (kept on disk by
 * the daemon) and leave it in order, QoS 1 ones only once acknowledged.
 */
export class DeviceConnection extends EventEmitter<ConnectionEvents> implements GatewayLink {
  readonly url: string;
  readonly deviceId: string;
  readonly queue: MessageQueue;
  private readonly options: DeviceConnectionOptions;
  private readonly backoff: BackoffPolicy;
  private readonly keepaliveSeconds: number;
  private readonly connectTimeoutMs: number;
  private readonly maxInFlight: number;
  private readonly drainTimeoutMs: number;
  private readonly maxDeliveryAttempts: number;
  private readonly random: () => number;
  private readonly log: Logger | undefined;
  private readonly subscriptions = new Map<string, { qos: 0 | 1; handlers: Set<MessageHandler> }>();

  private current: ConnectionState = 'idle';
  private client: MqttClient | null = null;
  /** An attempt is reading the credentials (no client yet): a second attempt must not start. */
  private loadingCredentials = false;
  private clientError: unknown = null;
  private online = false;
  private stopping = false;
  private stopped: Promise<void> | null = null;
  /** While a certificate is being renewed: nothing new is sent and nothing reconnects. */
  private holding = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private stableTimer: NodeJS.Timeout | null = null;
  private serial: string | null = null;
  private readonly inFlight = new Set<number>();
  private readonly direct = new Set<(err: AgentError) => void>();
  private head: { seq: number; attempts: number } | null = null;
  private readonly waiters = new Set<() => void>();
  private dropLog = { at: 0, pending: 0 };

  constructor(options: DeviceConnectionOptions) {
    super();
    let parsed: URL;
    try {
      parsed = new URL(options.url);
    } catch {
      throw new AgentError('CONFIG_INVALID', `mqtt.url "${options.url}" is not a URL; use mqtts://host:port`);
    }
    if (parsed.protocol !== 'mqtts:')
      throw new AgentError(
        'CONFIG_INVALID',
        `mqtt.url "${options.url}" must use mqtts:// (MQTT over TLS): the gateway authenticates devices by certificate`,
      );
    this.options = options;
    this.url = options.url;
    this.deviceId = options.deviceId;
    this.queue = options.queue ?? new MemoryQueue();
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.keepaliveSeconds = options.keepaliveSeconds ?? 60;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 30_000;
    this.maxInFlight = Math.max(1, options.maxInFlight ?? 16);
    this.drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
    this.maxDeliveryAttempts = Math.max(1, options.maxDeliveryAttempts ?? 5);
    this.random = options.random ?? Math.random;
    this.log = options.log;
  }

  get state(): ConnectionState {
    return this.current;
  }

  /** Whether the gateway has accepted the connection and the subscriptions are in place. */
  get isOnline(): boolean {
    return this.online;
  }

  /** Serial of the certificate the current (or last) connection authenticated with. */
  get certificateSerial(): string | null {
    return this.serial;
  }

  /** Failed connection attempts in a row. */
  get failedAttempts(): number {
    return this.attempt;
  }

  /** Messages sent and not yet acknowledged. */
  get inFlightCount(): number {
    return this.inFlight.size + this.direct.size;
  }

  start(): void {
    if (this.current !== 'idle') return;
    void this.connect();
  }

  /**
   * Queue a message for the gateway. It is sent at once when online, otherwise when the connection
   * is back; queued messages leave in order. QoS 1 messages stay queued until acknowledged (and are
   * sent again on the next connection if the acknowledgement did not come). When the queue is full
   * the oldest messages are dropped (counted, logged, and reported by a `dropped` event).
   */
  publish(topic: string, payload: string | Uint8Array, options: PublishOptions = {}): QueuedMessage {
    if (this.stopping) throw new AgentError('STOPPED', 'the gateway connection is stopped');
    checkPublishTopic(topic);
    const { message, dropped } = this.queue.push({
      topic,
      payload: typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload),
      qos: options.qos ?? 1,
      retain: options.retain ?? false,
    });
    if (dropped.length) this.droppedMessages(dropped, 'queue-full');
    this.pump();
    return message;
  }

  /**
   * Publish now, bypassing the queue, and resolve once acknowledged (QoS 1) or written (QoS 0). Only
   * while online: otherwise, or if the connection ends first, it rejects with NOT_CONNECTED. For
   * requests that are made again after every reconnect anyway (shadow get and update).
   */
  publishNow(topic: string, payload: string | Uint8Array, qos: 0 | 1 = 1): Promise<void> {
    checkPublishTopic(topic);
    const client = this.client;
    if (!client || !this.online || this.holding)
      return Promise.reject(new AgentError('NOT_CONNECTED', 'not connected to the gateway'));
    return new Promise<void>((resolve, reject) => {
      const fail = (err: AgentError) => {
        this.direct.delete(fail);
        reject(err);
        this.wake();
      };
      this.direct.add(fail);
      client.publish(topic, Buffer.from(payload), { qos }, (err) => {
        if (!this.direct.has(fail)) return; // the connection ended first and rejected it
        this.direct.delete(fail);
        if (err) reject(new AgentError('NOT_CONNECTED', `not sent: ${err.message}`));
        else resolve();
        this.wake();
      });
    });
  }

  /**
   * Receive messages matching `filter` (MQTT wildcards allowed). The subscription is made on every
   * connection (sessions are clean). Returns a function that removes the handler.
   */
  subscribe(filter: string, handler: MessageHandler, qos: 0 | 1 = 1): () => void {
    checkTopicFilter(filter);
    let entry = this.subscriptions.get(filter);
    const isNew = !entry;
    if (!entry) this.subscriptions.set(filter, (entry = { qos, handlers: new Set() }));
    entry.handlers.add(handler);
    if (isNew && this.client && this.online) void this.subscribeOn(this.client, [filter]);
    return () => {
      const e = this.subscriptions.get(filter);
      if (!e) return;
      e.handlers.delete(handler);
      if (e.handlers.size === 0) {
        this.subscriptions.delete(filter);
        if (this.client && this.online) this.client.unsubscribe(filter);
      }
    };
  }

  /** Resolve true once every queued message is delivered, false if `timeoutMs` passes first. */
  drain(timeoutMs: number): Promise<boolean> {
    return this.waitFor(() => this.queue.size === 0 && this.inFlightCount === 0, timeoutMs);
  }

  /**
   * Switch to a renewed certificate without losing messages: stop sending, wait (up to
   * drainTimeoutMs) for the acknowledgements of messages in flight, run `renew`, then disconnect
   * cleanly and reconnect with the new certificate at once. Messages published meanwhile wait in the
   * queue; unacknowledged ones are still queued and are sent again. If `renew` fails, the connection
   * carries on with the current certificate. The gateway may close the old session as soon as the
   * new certificate is issued; the connection does not try to reconnect until `renew` has returned.
   */
  async switchCertificate<T>(renew: () => Promise<T>): Promise<T> {
    if (this.stopping || this.current === 'idle') return renew();
    this.holding = true;
    this.clearRetry();
    try {
      if (this.client && this.online && this.inFlightCount > 0) {
        this.log?.info(
          { inFlight: this.inFlightCount },
          'certificate renewal: waiting for the gateway to acknowledge messages in flight',
        );
        const drained = await this.waitFor(
          () => this.inFlightCount === 0 || !this.online,
          this.drainTimeoutMs,
        );
        if (!drained)
          this.log?.warn(
            { inFlight: this.inFlightCount },
            'messages still unacknowledged after the drain time; they stay queued and are sent again after the switch',
          );
      }
      let result: T;
      try {
        result = await renew();
      } catch (err) {
        this.holding = false;
        if (this.stopping) throw err;
        if (this.client && this.online) this.pump();
        else if (!this.client) void this.connect();
        throw err;
      }
      if (this.stopping) return result;
      if (this.client) await this.disconnect('switching to the renewed certificate');
      this.holding = false;
      this.attempt = 0;
      void this.connect();
      return result;
    } finally {
      this.holding = false;
    }
  }

  /**
   * Stop: no more reconnects; wait briefly for acknowledgements in flight, disconnect cleanly, and
   * flush and close the queue (what is left is delivered after the next start).
   */
  stop(): Promise<void> {
    if (this.stopped) return this.stopped;
    this.stopping = true;
    this.stopped = (async () => {
      this.clearRetry();
      this.clearStable();
      if (this.client && this.online && this.inFlightCount > 0)
        await this.waitFor(
          () => this.inFlightCount === 0 || !this.online,
          Math.min(this.drainTimeoutMs, 5000),
        );
      if (this.client) await this.disconnect('stopped');
      try {
        await this.queue.close();
      } catch (err) {
        this.log?.error({ err }, 'closing the offline queue failed');
      }
      this.setState('stopped');
      this.log?.info({ queued: this.queue.size }, 'gateway connection stopped');
    })();
    return this.stopped;
  }

  /**
   * End at once, as a power cut would: no DISCONNECT, no wait for acknowledgements, no more
   * reconnects. What the queue holds stays there (a file queue recovers it at the next start).
   */
  abort(): Promise<void> {
    if (this.stopped) return this.stopped;
    this.stopping = true;
    this.stopped = (async () => {
      this.clearRetry();
      this.clearStable();
      const client = this.client;
      this.client = null;
      this.endSession();
      if (client) await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
      try {
        await this.queue.close();
      } catch (err) {
        this.log?.error({ err }, 'closing the offline queue failed');
      }
      this.setState('stopped');
    })();
    return this.stopped;
  }

  private setState(state: ConnectionState): void {
    if (this.current === state) return;
    this.current = state;
    this.emit('state', state);
  }

  private async connect(): Promise<void> {
    if (this.stopping || this.holding || this.client || this.loadingCredentials) return;
    this.clearRetry();
    this.setState('connecting');
    let credentials: ConnectionCredentials;
    this.loadingCredentials = true;
    try {
      credentials = await this.options.credentials();
      if (credentials.deviceId !== this.deviceId)
        throw new AgentError(
          'CERT_REFUSED',
          `the device certificate names "${credentials.deviceId}", not the device id "${this.deviceId}" the connection is for`,
        );
    } catch (err) {
      this.loadingCredentials = false;
      if (!this.stopping && !this.holding) this.failed(err, false);
      return;
    }
    this.loadingCredentials = false;
    if (this.stopping || this.holding || this.client) return;
    this.log?.debug(
      { url: this.url, serial: credentials.serial, attempt: this.attempt + 1 },
      'connecting to the gateway',
    );
    const options: IClientOptions = {
      protocolVersion: 4,
      clientId: this.deviceId,
      clean: true,
      keepalive: this.keepaliveSeconds,
      connectTimeout: this.connectTimeoutMs,
      reconnectPeriod: 0,
      resubscribe: false,
      queueQoSZero: false,
    };
    const { hostname, port } = new URL(this.url);
    // Mutual TLS with the device's certificate, signed where its key lives (in-process, or in the
    // TPM or the token through the OpenSSL tunnel); only the pinned root is trusted, and the
    // server's certificate must name the host in the URL.
    const stream = (): Duplex => {
      try {
        return credentials.tls.connect({
          host: hostname.replace(/^\[|\]$/g, ''),
          port: port ? Number(port) : DEFAULT_MQTTS_PORT,
          certPem: credentials.certPem,
          caPem: credentials.caPem,
          timeoutMs: this.connectTimeoutMs,
        });
      } catch (err) {
        // Reported like a failed connection: the client sees the error, then the close.
        const failed = new PassThrough();
        process.nextTick(() => failed.destroy(err as Error));
        return failed;
      }
    };
    const client = new MqttClient(stream, options);
    this.client = client;
    this.clientError = null;
    client.on('error', (err) => {
      if (this.client === client) this.clientError = err;
    });
    client.on('connect', () => void this.connected(client, credentials));
    client.on('message', (topic, payload) => {
      if (this.client === client) this.dispatch(topic, payload);
    });
    client.on('close', () => this.closed(client));
  }

  private async connected(client: MqttClient, credentials: ConnectionCredentials): Promise<void> {
    if (this.client !== client) return;
    const filters = [...this.subscriptions.keys()];
    if (filters.length) {
      const ok = await this.subscribeOn(client, filters);
      if (!ok || this.client !== client) return;
    }
    this.online = true;
    this.serial = credentials.serial;
    const attempt = this.attempt;
    this.clearStable();
    // Only a connection that stays up resets the backoff: a gateway that accepts and then closes
    // at once still sees this device back off.
    this.stableTimer = setTimeout(() => {
      this.stableTimer = null;
      if (this.client === client && this.online) this.attempt = 0;
    }, this.backoff.resetAfterMs);
    this.stableTimer.unref();
    this.setState('online');
    this.log?.info(
      { url: this.url, serial: credentials.serial, queued: this.queue.size, attempt },
      `connected to the gateway as ${this.deviceId}` +
        (this.queue.size ? `; delivering ${this.queue.size} queued messages` : ''),
    );
    this.emit('online', { serial: credentials.serial, attempt });
    this.pump();
  }

  private async subscribeOn(client: MqttClient, filters: string[]): Promise<boolean> {
    const map: Record<string, { qos: 0 | 1 }> = {};
    for (const f of filters) map[f] = { qos: this.subscriptions.get(f)?.qos ?? 1 };
    try {
      const granted = await client.subscribeAsync(map);
      for (const g of granted)
        if (g.qos === 128)
          this.log?.warn(
            { filter: g.topic },
            `the gateway refused the subscription ${g.topic}: the device's policy does not allow it`,
          );
      return true;
    } catch (err) {
      if (this.client === client) this.log?.debug({ err }, 'subscribing failed; the connection is ending');
      return false;
    }
  }

  private dispatch(topic: string, payload: Buffer): void {
    this.emit('message', topic, payload);
    for (const [filter, entry] of this.subscriptions) {
      if (!topicMatches(filter, topic)) continue;
      for (const handler of entry.handlers) {
        try {
          handler(topic, payload);
        } catch (err) {
          this.log?.error({ err, topic }, 'a message handler failed');
        }
      }
    }
  }

  private pump(): void {
    const client = this.client;
    if (!client || !this.online || this.holding || this.stopping) return;
    for (const m of this.queue.peek(this.maxInFlight)) {
      if (this.inFlight.has(m.seq)) continue;
      if (this.inFlight.size >= this.maxInFlight) break;
      this.inFlight.add(m.seq);
      client.publish(m.topic, m.payload, { qos: m.qos, retain: m.retain }, (err) =>
        this.sent(client, m, err),
      );
    }
  }

  private sent(client: MqttClient, message: QueuedMessage, err: Error | undefined): void {
    // A callback of a connection that has ended: its messages were requeued at the close.
    if (this.client !== client) return;
    this.inFlight.delete(message.seq);
    if (!err) {
      if (this.head?.seq === message.seq) this.head = null;
      if (this.queue.ack(message.seq)) this.emit('delivered', message);
    }
    this.wake();
    this.pump();
  }

  private closed(client: MqttClient): void {
    if (this.client !== client) return;
    this.client = null;
    const wasOnline = this.online;
    const err = this.clientError;
    // Only a connection that ended by itself counts against the message it was sending.
    if (this.inFlight.size) this.countHeadAttempt();
    this.endSession();
    client.end(true);
    this.failed(err, wasOnline);
  }

  /** The connection ended: nothing is in flight any more (it is all still queued). */
  private endSession(): void {
    this.online = false;
    this.clearStable();
    this.inFlight.clear();
    for (const fail of [...this.direct])
      fail(new AgentError('NOT_CONNECTED', 'the connection to the gateway ended'));
    this.wake();
  }

  /** The oldest message was in flight when the connection ended: count it, and give up on it eventually. */
  private countHeadAttempt(): void {
    const oldest = this.queue.peek(1)[0];
    if (!oldest || !this.inFlight.has(oldest.seq)) return;
    const attempts = this.head?.seq === oldest.seq ? this.head.attempts + 1 : 1;
    this.head = { seq: oldest.seq, attempts };
    if (attempts < this.maxDeliveryAttempts) return;
    this.head = null;
    this.queue.ack(oldest.seq);
    this.log?.error(
      { topic: oldest.topic, bytes: oldest.payload.length, attempts },
      `dropped an undeliverable message on ${oldest.topic}: the connection ended ${attempts} times while it was being sent; ` +
        "the gateway closes the connection on a publish the device's policy refuses or that exceeds its size limit",
    );
    this.emit('dropped', { messages: [oldest], reason: 'undeliverable', total: this.queue.dropped });
  }

  private failed(err: unknown, wasOnline: boolean): void {
    const failure = describeConnectFailure(err, { url: this.url, deviceId: this.deviceId, wasOnline });
    if (this.stopping) return;
    if (this.holding) {
      this.setState('offline');
      this.log?.info(
        { reason: failure.message },
        'the gateway connection ended during the certificate renewal; reconnecting once it is done',
      );
      this.emit('offline', { failure, attempt: this.attempt, retryInMs: null });
      return;
    }
    this.attempt += 1;
    const delay = backoffDelay(this.attempt, this.backoff, this.random);
    this.setState('offline');
    const fields = { kind: failure.kind, attempt: this.attempt, retryInMs: delay };
    const retry = `retrying in ${(delay / 1000).toFixed(1)} s (attempt ${this.attempt})`;
    if (failure.refused)
      this.log?.warn(fields, `${failure.message}; ${failure.advice ? `${failure.advice}; ` : ''}${retry}`);
    else this.log?.info(fields, `${failure.message}; ${retry}`);
    this.emit('offline', { failure, attempt: this.attempt, retryInMs: delay });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delay);
  }

  /** End the current connection cleanly (DISCONNECT), without scheduling a reconnect. */
  private async disconnect(reason: string): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.client = null;
    const wasOnline = this.online;
    // DISCONNECT only makes sense on an accepted connection with nothing outstanding; otherwise cut it.
    const force = !wasOnline || this.inFlightCount > 0;
    this.endSession();
    await new Promise<void>((resolve) => {
      if (force) {
        client.end(true, {}, () => resolve());
        return;
      }
      const timer = setTimeout(() => {
        client.end(true);
        resolve();
      }, DISCONNECT_TIMEOUT_MS);
      client.end(false, {}, () => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (wasOnline) this.log?.info({ reason }, `disconnected from the gateway (${reason})`);
    if (!this.stopping) {
      this.setState('offline');
      this.emit('offline', {
        failure: { kind: 'lost', refused: false, message: reason, advice: null },
        attempt: this.attempt,
        retryInMs: null,
      });
    }
  }

  private droppedMessages(messages: QueuedMessage[], reason: DroppedEvent['reason']): void {
    this.emit('dropped', { messages, reason, total: this.queue.dropped });
    this.dropLog.pending += messages.length;
    const now = Date.now();
    if (now - this.dropLog.at < DROP_LOG_INTERVAL_MS) return;
    this.log?.warn(
      {
        dropped: this.dropLog.pending,
        total: this.queue.dropped,
        queued: this.queue.size,
        bytes: this.queue.bytes,
      },
      `the offline queue is full: dropped the ${this.dropLog.pending} oldest messages ` +
        `(${this.queue.dropped} since start); raise queue.maxMessages / queue.maxBytes or publish less while offline`,
    );
    this.dropLog = { at: now, pending: 0 };
  }

  private waitFor(done: () => boolean, timeoutMs: number): Promise<boolean> {
    if (done()) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const check = () => {
        if (!done()) return;
        finish(true);
      };
      const finish = (value: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(value);
      };
      const timer = setTimeout(() => finish(done()), timeoutMs);
      this.waiters.add(check);
    });
  }

  private wake(): void {
    for (const check of [...this.waiters]) check();
  }

  private clearRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private clearStable(): void {
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.stableTimer = null;
  }
}
