import {
  createServer as createTcpServer,
  type AddressInfo,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { Aedes, type Client } from 'aedes';
import type { Logger } from '@rampart/shared/logging';
import type { BrokerAdapter, BrokerListener, GatewayHooks, GatewaySession } from './broker.js';
import { connectableHost } from '../text.js';
import { SessionBudget, guardConnection, type GatewayLimits } from './limits.js';

export interface AedesAdapterOptions {
  host: string;
  port: number;
  /** Plain-TCP port for development only; null keeps it off. */
  insecurePlainPort: number | null;
  tls: { key: string; cert: string; ca: string[] };
  hooks: GatewayHooks;
  logger: Logger;
  limits: GatewayLimits;
  /** Told of every limit a device exceeded (metrics). */
  onLimitExceeded?: (kind: string) => void;
}

let nextSession = 0;

/**
 * The embedded broker. TLS is terminated by Node with a client certificate required and verified
 * against Rampart's CAs during the handshake (a foreign CA never reaches MQTT); everything after
 * that — revocation, device status, client id, every publish, subscribe and delivery — is asked
 * of the gateway through the hooks.
 */
export class AedesAdapter implements BrokerAdapter {
  readonly kind = 'aedes';
  private broker: Aedes | null = null;
  private tlsServer: TlsServer | null = null;
  private plainServer: NetServer | null = null;
  private readonly sessions = new WeakMap<Client, GatewaySession>();
  private readonly budgets = new WeakMap<Client, SessionBudget>();
  private readonly persistent = new WeakMap<Client, boolean>();
  private readonly clients = new Map<string, Client>();

  constructor(private readonly options: AedesAdapterOptions) {}

  async listen(): Promise<BrokerListener[]> {
    const { hooks, logger } = this.options;
    const broker = await Aedes.createBroker({
      // Client ids are device ids (up to 128 characters), not MQTT 3.1.0's 23.
      maxClientsIdLength: 128,
      maxTopicLevels: 32,
      connectTimeout: 10_000,
      drainTimeout: 10_000,
    });
    this.broker = broker;

    // Remember whether a client asks for a persistent session (clean session 0).
    broker.preConnect = (client, packet, done) => {
      this.persistent.set(client, packet.clean === false);
      done(null, true);
    };

    broker.authenticate = (client, _username, _password, done) => {
      // Persistent sessions would keep an unbounded queue of messages for an offline device on
      // the broker (the fuzz test filled memory that way); devices queue on their side instead.
      if (this.persistent.get(client)) {
        hooks.securityEvent('connect.refused', client.id, null, 'persistent session requested');
        done(
          Object.assign(
            new Error(
              'persistent sessions (clean session 0) are not supported; connect with clean session 1',
            ),
            { returnCode: 2 },
          ),
          null,
        );
        return;
      }
      const socket = client.conn as Partial<TLSSocket>;
      const certificate =
        typeof socket.getPeerX509Certificate === 'function'
          ? (socket.getPeerX509Certificate() ?? null)
          : null;
      const sessionId = `s${++nextSession}`;
      hooks
        .authenticate(
          {
            certificate,
            clientId: client.id,
            remoteAddress: (client.conn as { remoteAddress?: string }).remoteAddress ?? '',
          },
          sessionId,
        )
        .then((result) => {
          if (!result.ok) {
            done(Object.assign(new Error(result.reason), { returnCode: result.returnCode }), null);
            return;
          }
          this.sessions.set(client, result.session);
          this.budgets.set(client, new SessionBudget(this.options.limits));
          // Whatever happens next (a refused CONNACK write, a takeover, a reset), the session is
          // forgotten when its connection closes: the broker does not emit an event in every case.
          client.conn.once('close', () => this.forget(client, 'connection closed'));
          this.clients.set(result.session.id, client);
          done(null, true);
        })
        .catch((err: unknown) => {
          logger.error({ err }, 'MQTT authentication failed with an internal error');
          done(Object.assign(new Error('internal error'), { returnCode: 3 }), null);
        });
    };

    broker.authorizePublish = (client, packet, done) => {
      if (!client) return done(null); // a will of a client that is gone: it was authorized when set
      const session = this.sessions.get(client);
      const over = this.budgets.get(client)?.publish(packet.topic, packet.payload.length);
      if (session && over) {
        this.limitExceeded(session, 'publish', over);
        return done(new Error(over));
      }
      if (session && hooks.authorize(session, 'publish', packet.topic)) {
        if (packet.retain) {
          const full = this.retainedOver(session.deviceId, packet.topic, packet.payload.length);
          if (full) {
            this.limitExceeded(session, 'retained', full);
            return done(new Error(full));
          }
        }
        return done(null);
      }
      // MQTT 3.1.1 §3.3.5: an unauthorized PUBLISH closes the connection.
      done(new Error(`publish to ${packet.topic} not allowed`));
    };

    broker.authorizeSubscribe = (client, sub, done) => {
      const session = this.sessions.get(client);
      const budget = this.budgets.get(client);
      const over =
        budget?.topic(sub.topic) ??
        (budget && budget.subscriptions >= this.options.limits.maxSubscriptions
          ? `more than ${this.options.limits.maxSubscriptions} subscriptions`
          : null);
      if (session && over) {
        this.limitExceeded(session, 'subscribe', over);
        return done(null, null);
      }
      if (budget) budget.subscriptions++;
      // null → SUBACK return code 0x80 for this filter; the client stays connected.
      done(null, session && hooks.authorize(session, 'subscribe', sub.topic) ? sub : null);
    };

    broker.authorizeForward = (client, packet) => {
      const session = this.sessions.get(client);
      if (!session || !hooks.authorize(session, 'receive', packet.topic)) return null;
      hooks.delivered(session, packet.topic, packet.payload.length);
      return packet;
    };

    broker.published = (packet, client, done) => {
      const session = client ? this.sessions.get(client) : undefined;
      if (session && typeof packet.topic === 'string' && !packet.topic.startsWith('$SYS'))
        hooks.published(
          session,
          packet.topic,
          Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
        );
      done(null);
    };

    broker.on('client', (client) => {
      const session = this.sessions.get(client);
      if (session) hooks.connected(session);
    });
    broker.on('unsubscribe', (unsubscriptions, client) => {
      const budget = this.budgets.get(client);
      if (budget) budget.subscriptions = Math.max(0, budget.subscriptions - unsubscriptions.length);
    });
    broker.on('clientDisconnect', (client) => this.forget(client, 'disconnected'));
    broker.on('clientError', (client, err) => {
      logger.info({ event: 'mqtt.client.error', client: client.id, err: err.message }, 'MQTT client error');
      this.forget(client, err.message);
    });
    broker.on('connectionError', (client, err) => {
      logger.warn(
        { event: 'mqtt.connection.refused', client: client?.id, err: err.message },
        'MQTT connection refused',
      );
    });

    const { tls } = this.options;
    this.tlsServer = createTlsServer(
      {
        key: tls.key,
        cert: tls.cert,
        ca: tls.ca,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
      },
      (socket) => this.accept(socket, broker),
    );
    this.tlsServer.on('tlsClientError', (err, socket) => {
      hooks.securityEvent('tls.refused', null, socket.remoteAddress ?? null, err.message);
      logger.warn(
        { event: 'mqtt.tls.refused', sourceAddress: socket.remoteAddress, err: err.message },
        'TLS handshake refused',
      );
    });
    const listeners: BrokerListener[] = [];
    const tlsServer = this.tlsServer;
    await new Promise<void>((resolve, reject) => {
      tlsServer.once('error', reject);
      tlsServer.listen(this.options.port, this.options.host, () => {
        tlsServer.off('error', reject);
        resolve();
      });
    });
    const tlsPort = (tlsServer.address() as AddressInfo).port;
    listeners.push({ name: 'mqtt', url: `mqtts://${connectableHost(this.options.host)}:${tlsPort}` });

    if (this.options.insecurePlainPort !== null) {
      logger.warn(
        'INSECURE: plain MQTT over TCP is enabled (gateway.insecurePlainPort); devices connect without TLS or certificates. Never use this outside development.',
      );
      const plain = createTcpServer((socket) => this.accept(socket, broker));
      this.plainServer = plain;
      await new Promise<void>((resolve, reject) => {
        plain.once('error', reject);
        plain.listen(this.options.insecurePlainPort!, this.options.host, () => {
          plain.off('error', reject);
          resolve();
        });
      });
      const port = (plain.address() as AddressInfo).port;
      listeners.push({ name: 'mqtt-insecure', url: `mqtt://${connectableHost(this.options.host)}:${port}` });
    }
    return listeners;
  }

  /** Every connection passes the frame guard: an oversized or malformed packet closes it alone. */
  private accept(socket: Socket, broker: Aedes): void {
    guardConnection(socket, this.options.limits, (reason) => {
      this.options.logger.warn(
        { event: 'mqtt.packet.refused', sourceAddress: socket.remoteAddress, reason },
        'MQTT packet refused; connection closed',
      );
      this.options.onLimitExceeded?.('packet');
      this.options.hooks.securityEvent('packet.refused', null, socket.remoteAddress ?? null, reason);
    });
    coalesceReplies(socket);
    broker.handle(socket);
  }

  /** Retained topics per device (a retained message stays on the broker until cleared). */
  private readonly retainedTopics = new Map<string, Set<string>>();

  private retainedOver(deviceId: string, topic: string, bytes: number): string | null {
    let topics = this.retainedTopics.get(deviceId);
    if (bytes === 0) {
      topics?.delete(topic);
      return null;
    }
    if (!topics) this.retainedTopics.set(deviceId, (topics = new Set()));
    if (!topics.has(topic) && topics.size >= this.options.limits.maxRetainedPerDevice)
      return `more than ${this.options.limits.maxRetainedPerDevice} retained messages; clear one with an empty retained publish`;
    topics.add(topic);
    return null;
  }

  private limitExceeded(session: GatewaySession, kind: string, reason: string): void {
    this.options.logger.warn(
      {
        event: 'mqtt.limit.exceeded',
        device: session.deviceId,
        kind,
        reason,
        sourceAddress: session.remoteAddress,
      },
      'device exceeded a gateway limit',
    );
    this.options.onLimitExceeded?.(kind);
    this.options.hooks.securityEvent(
      'limit.exceeded',
      session.deviceId,
      session.remoteAddress,
      `${kind}: ${reason}`,
    );
  }

  private forget(client: Client, reason: string): void {
    const session = this.sessions.get(client);
    if (!session) return;
    this.sessions.delete(client);
    if (this.clients.get(session.id) === client) this.clients.delete(session.id);
    this.options.hooks.disconnected(session, reason);
  }

  kick(sessionId: string, reason: string): void {
    const client = this.clients.get(sessionId);
    if (!client) return;
    this.forget(client, reason);
    client.close();
  }

  publish(topic: string, payload: Buffer | string): Promise<void> {
    const broker = this.broker;
    if (!broker) return Promise.reject(new Error('the broker is not running'));
    return new Promise((resolve, reject) =>
      broker.publish(
        { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: false, dup: false },
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }

  sessionCount(): number {
    return this.clients.size;
  }

  updateTls(tls: { key: string; cert: string; ca: string[] }): void {
    this.tlsServer?.setSecureContext({ key: tls.key, cert: tls.cert, ca: tls.ca, minVersion: 'TLSv1.2' });
  }

  async close(): Promise<void> {
    const closeServer = (s: NetServer | null) =>
      new Promise<void>((resolve) => (s ? s.close(() => resolve()) : resolve()));
    const broker = this.broker;
    await new Promise<void>((resolve) => (broker ? broker.close(() => resolve()) : resolve()));
    await Promise.all([closeServer(this.tlsServer), closeServer(this.plainServer)]);
  }
}

/**
 * Answers to what one read brought in leave together: the socket is corked when aedes reads a
 * batch of packets and uncorked once the event loop has run the work they started, so that the
 * PUBACKs of a burst of QoS 1 publishes go out as one TLS record and one system call instead of one
 * each. (mqtt-packet corks each packet on its own; corks nest, so those flush here.)
 */
function coalesceReplies(conn: Socket): void {
  let corked = false;
  const uncork = () => {
    corked = false;
    if (!conn.destroyed) conn.uncork();
  };
  const read = conn.read.bind(conn);
  conn.read = (size?: number) => {
    const chunk = read(size) as Buffer | string | null;
    if (chunk !== null && !corked && !conn.destroyed) {
      corked = true;
      conn.cork();
      setImmediate(uncork);
    }
    return chunk;
  };
}
