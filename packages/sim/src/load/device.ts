import { connect as tcpConnect, type Socket } from 'node:net';
import { TLSSocket, connect as tlsConnect, type DetailedPeerCertificate, type SecureContext } from 'node:tls';
import {
  CONNACK_REASONS,
  DISCONNECT,
  FrameReader,
  PACKET,
  PINGREQ,
  connackReturnCode,
  decodePublish,
  encodeConnect,
  encodePuback,
  encodePublish,
  encodeSubscribe,
  packetIdOf,
  subackCodes,
  type Frame,
  type IncomingPublish,
} from './mqtt.js';

/** A device's credentials: its id, its private key and its certificate (PEM). */
export interface DeviceIdentity {
  id: string;
  keyPem: string;
  certPem: string;
}

/** Where devices connect. `tls: false` is for a development broker's plain listener only. */
export interface BrokerTarget {
  host: string;
  port: number;
  /** TLS server name (SNI and certificate check); default: `host`. */
  servername?: string;
  tls?: boolean;
}

export const targetKey = (t: BrokerTarget): string =>
  `${t.tls === false ? 'mqtt' : 'mqtts'}://${t.host}:${t.port}`;

export interface DeviceConnectOptions {
  target: BrokerTarget;
  /** The device's key, certificate and trusted CAs (see `deviceSecureContext`); required for TLS. */
  secureContext?: SecureContext;
  /** Source address to bind (see `AddressRotation`). */
  localAddress?: string;
  /** A TLS session from an earlier connection to the same broker, to resume. */
  session?: Buffer;
  /** MQTT keep-alive in seconds (0 = off). */
  keepalive: number;
  /** Default: the device id (Rampart requires it). */
  clientId?: string;
  /** From the TCP connect to the CONNACK. Default 30 s. */
  timeoutMs?: number;
  /** Keep the TLS session tickets the broker sends (to resume later). Default true. */
  keepSession?: boolean;
}

export interface ConnectTiming {
  /** TCP connect and TLS handshake, milliseconds. */
  handshakeMs: number;
  /** From the start to the CONNACK, milliseconds. */
  connackMs: number;
  /** The TLS session was resumed (abbreviated handshake). */
  resumed: boolean;
}

/** The broker answered CONNECT with a non-zero return code. */
export class ConnackError extends Error {
  constructor(readonly returnCode: number) {
    super(`CONNACK ${returnCode} (${CONNACK_REASONS[returnCode] ?? 'unknown'})`);
  }
}

/**
 * After a full handshake Node checks the server's name against its certificate, and for that
 * translates the whole peer chain into JavaScript objects (`getPeerCertificate(true)`: every
 * field and three fingerprints per certificate, about 0.3 ms) — a fifth of a load generator's CPU
 * per connection, spent on the generator's side only. The name check reads the leaf alone, which
 * `getPeerCertificate(false)` gives for a fifteenth of that. OpenSSL verifies the chain either way.
 */
function leafPeerCertificate(this: TLSSocket): DetailedPeerCertificate {
  return TLSSocket.prototype.getPeerCertificate.call(this, false) as DetailedPeerCertificate;
}

export type PublishCallback = (err: Error | null, latencyMs: number) => void;

interface Pending {
  sentAt: number;
  done: PublishCallback | undefined;
}

export type DeviceState = 'idle' | 'connecting' | 'connected' | 'closed';

/**
 * One simulated device: a TLS connection with the device's certificate, speaking MQTT 3.1.1.
 * Kept small, since a load generator holds tens of thousands: no timers of its own while connected
 * (keep-alive is the engine's `pingIfIdle` sweep), and callbacks rather than a promise per message.
 */
export class LoadDevice {
  state: DeviceState = 'idle';
  socket: Socket | TLSSocket | null = null;
  /** The latest TLS session the broker sent (a ticket to resume with). */
  session: Buffer | null = null;
  /** The broker of the current or last connection. */
  target: BrokerTarget | null = null;
  /** performance.now() of the last packet sent. */
  lastSentAt = 0;
  /** performance.now() when the connection closed. */
  closedAt = 0;
  /** Why the connection closed: `client` when this side closed it, else the error or `broker`. */
  closeReason = '';
  /** Called once per connection when it closes after having been connected. */
  onClose: ((device: LoadDevice) => void) | null = null;
  /** Called for every PUBLISH the broker delivers (QoS 1 is acknowledged before this is called). */
  onMessage: ((device: LoadDevice, message: IncomingPublish) => void) | null = null;

  private reader: FrameReader | null = null;
  private inflight: Map<number, Pending> | null = null;
  private nextId = 0;
  private closing = false;
  private lastError = '';
  private connack: ((code: number) => void) | null = null;
  private subacks: Map<number, (codes: number[]) => void> | null = null;

  constructor(readonly id: string) {}

  /** QoS 1 publishes sent and not yet acknowledged. */
  get inflightCount(): number {
    return this.inflight?.size ?? 0;
  }

  connect(o: DeviceConnectOptions): Promise<ConnectTiming> {
    if (this.state === 'connecting' || this.state === 'connected')
      return Promise.reject(new Error(`${this.id} is already ${this.state}`));
    const useTls = o.target.tls !== false;
    if (useTls && !o.secureContext)
      return Promise.reject(new Error('a TLS connection needs the device secure context'));
    this.state = 'connecting';
    this.closing = false;
    this.lastError = '';
    this.closeReason = '';
    this.session = null;
    this.target = o.target;
    this.reader = new FrameReader();
    return new Promise<ConnectTiming>((resolve, reject) => {
      const t0 = performance.now();
      let handshakeAt = 0;
      let settled = false;
      let socket: Socket | TLSSocket;
      /** This attempt is over without a session: the device is free for the next one at once. */
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.connack = null;
        this.detach(socket, err.message);
        socket.destroy();
        reject(err);
      };
      const timer = setTimeout(
        () =>
          fail(new Error(handshakeAt ? 'timed out waiting for CONNACK' : 'timed out in the TLS handshake')),
        o.timeoutMs ?? 30_000,
      );
      const sendConnect = () => {
        handshakeAt = performance.now();
        this.write(encodeConnect({ clientId: o.clientId ?? this.id, keepalive: o.keepalive }));
      };
      if (useTls) {
        const s = tlsConnect(
          {
            host: o.target.host,
            port: o.target.port,
            servername: o.target.servername,
            secureContext: o.secureContext,
            minVersion: 'TLSv1.2',
            ...(o.session ? { session: o.session } : {}),
            ...(o.localAddress ? { localAddress: o.localAddress } : {}),
          },
          sendConnect,
        );
        s.getPeerCertificate = leafPeerCertificate;
        if (o.keepSession !== false)
          s.on('session', (session: Buffer) => {
            if (this.socket === s) this.session = session;
          });
        socket = s;
      } else {
        socket = tcpConnect(
          {
            host: o.target.host,
            port: o.target.port,
            ...(o.localAddress ? { localAddress: o.localAddress } : {}),
          },
          sendConnect,
        );
      }
      this.socket = socket;
      socket.setNoDelay(true);
      socket.on('data', (chunk: Buffer) => {
        if (this.socket === socket) this.onData(chunk);
      });
      socket.on('error', (err: NodeJS.ErrnoException) => {
        if (this.socket === socket) this.lastError = err.code ?? err.message;
        fail(err);
      });
      socket.on('close', () => {
        if (this.socket !== socket) return;
        const wasConnected = this.state === 'connected';
        this.detach(socket, this.closing ? 'client' : this.lastError || 'broker');
        fail(new Error(this.lastError || 'connection closed before CONNACK'));
        if (wasConnected) this.onClose?.(this);
      });
      this.connack = (code) => {
        if (settled) return;
        if (code !== 0) {
          this.closing = true;
          fail(new ConnackError(code));
          return;
        }
        settled = true;
        clearTimeout(timer);
        this.connack = null;
        this.state = 'connected';
        resolve({
          handshakeMs: handshakeAt - t0,
          connackMs: performance.now() - t0,
          resumed: useTls ? (socket as TLSSocket).isSessionReused() : false,
        });
      };
    });
  }

  /** The connection `socket` is over: record why, fail what waits on it, free the device. */
  private detach(socket: Socket | TLSSocket, reason: string): void {
    if (this.socket !== socket) return;
    this.closedAt = performance.now();
    this.closeReason = reason;
    this.state = 'closed';
    this.socket = null;
    this.reader = null;
    this.connack = null;
    this.failInflight(new Error(`connection closed (${reason})`));
    const subacks = this.subacks;
    this.subacks = null;
    for (const resolve of subacks?.values() ?? []) resolve([]);
  }

  /**
   * Publish `payload` to `topic` (UTF-8 bytes, encoded once by the caller). QoS 1 calls `done` at
   * the PUBACK with the round-trip time; QoS 0 calls it once written to the socket.
   */
  publish(topic: Buffer, payload: Buffer, qos: 0 | 1, done?: PublishCallback): void {
    if (this.state !== 'connected') {
      done?.(new Error(`${this.id} is not connected`), 0);
      return;
    }
    if (qos === 0) {
      this.write(encodePublish(topic, payload, 0));
      done?.(null, 0);
      return;
    }
    const id = this.allocateId();
    (this.inflight ??= new Map()).set(id, { sentAt: performance.now(), done });
    this.write(encodePublish(topic, payload, 1, id));
  }

  /** SUBSCRIBE; resolves with the SUBACK return codes (0x80 = refused). */
  subscribe(filters: { topic: string; qos: 0 | 1 }[]): Promise<number[]> {
    if (this.state !== 'connected') return Promise.reject(new Error(`${this.id} is not connected`));
    const id = this.allocateId();
    return new Promise((resolve) => {
      (this.subacks ??= new Map()).set(id, resolve);
      this.write(encodeSubscribe(id, filters));
    });
  }

  /** Send PINGREQ if nothing was sent for `idleMs` (called by the engine's keep-alive sweep). */
  pingIfIdle(now: number, idleMs: number): void {
    if (this.state === 'connected' && now - this.lastSentAt >= idleMs) this.write(PINGREQ);
  }

  /** DISCONNECT and close; resolves when the socket is closed (destroyed after `timeoutMs`). */
  disconnect(timeoutMs = 5000): Promise<void> {
    const socket = this.socket;
    if (!socket || this.state === 'closed') return Promise.resolve();
    this.closing = true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => socket.destroy(), timeoutMs);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (this.state === 'connected') socket.end(DISCONNECT);
      else socket.destroy();
    });
  }

  /** Close at once, without DISCONNECT (a device losing power). */
  destroy(): void {
    this.closing = true;
    this.socket?.destroy();
  }

  private write(buf: Buffer): void {
    this.lastSentAt = performance.now();
    this.socket!.write(buf);
  }

  private allocateId(): number {
    for (;;) {
      this.nextId = this.nextId >= 65535 ? 1 : this.nextId + 1;
      if (!this.inflight?.has(this.nextId) && !this.subacks?.has(this.nextId)) return this.nextId;
    }
  }

  private onData(chunk: Buffer): void {
    try {
      this.reader?.push(chunk, this.onFrame);
    } catch (err) {
      this.lastError = (err as Error).message;
      this.socket?.destroy();
    }
  }

  private readonly onFrame = (f: Frame): void => {
    switch (f.type) {
      case PACKET.puback: {
        const id = packetIdOf(f);
        const p = this.inflight?.get(id);
        if (!p) return;
        this.inflight!.delete(id);
        p.done?.(null, performance.now() - p.sentAt);
        return;
      }
      case PACKET.connack:
        this.connack?.(connackReturnCode(f));
        return;
      case PACKET.publish: {
        const message = decodePublish(f);
        if (message.qos === 1) this.write(encodePuback(message.packetId));
        this.onMessage?.(this, message);
        return;
      }
      case PACKET.suback: {
        const id = packetIdOf(f);
        const resolve = this.subacks?.get(id);
        this.subacks?.delete(id);
        resolve?.(subackCodes(f));
        return;
      }
      default:
        // PINGRESP, UNSUBACK: nothing to do.
        return;
    }
  };

  private failInflight(err: Error): void {
    const pending = this.inflight;
    if (!pending?.size) return;
    this.inflight = null;
    for (const p of pending.values()) p.done?.(err, performance.now() - p.sentAt);
  }
}
