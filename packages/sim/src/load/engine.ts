import { randomBytes } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import { AddressRotation } from './addresses.js';
import { LoadDevice, targetKey, type BrokerTarget, type DeviceIdentity } from './device.js';
import { topicFor } from './mqtt.js';
import { ErrorTally, LatencyHistogram, epochNow, type HistogramData, type Span } from './stats.js';

export interface EngineOptions {
  /** CA certificates (PEM) the broker's certificate must chain to. */
  ca: string | string[];
  /** MQTT keep-alive in seconds; the engine pings idle connections at half of it (0 = off). */
  keepaliveSeconds: number;
  /** Source addresses to rotate through; empty = the kernel's choice. */
  sourceAddresses?: readonly string[];
}

export interface OpenOptions {
  target: BrokerTarget;
  /** Devices [from, from + count) of this engine; those connected already are left as they are. */
  from: number;
  count: number;
  /** Connections being set up at once (a connect storm's width). */
  concurrency: number;
  /** Resume the TLS session of each device's last connection to this broker, where there is one. */
  resume?: boolean;
  /** Keep the session tickets the broker sends, for a later `resume`. Default true. */
  keepSessions?: boolean;
  /** Per connection, from TCP connect to CONNACK. Default 30 s. */
  timeoutMs?: number;
  /** Further passes over the devices that failed (not timed). Default 0. */
  retries?: number;
}

export interface OpenResult extends Span {
  /** Devices this call tried to connect. */
  attempted: number;
  /** Connected in the timed first pass (the span). */
  opened: number;
  /** Connected by the retries. */
  retried: number;
  /** Still not connected after the retries. */
  failed: number;
  /** Connections of the first pass whose TLS session was resumed. */
  resumed: number;
  /** Error messages of every failed attempt, counted. */
  errors: Record<string, number>;
  /** Start to CONNACK, first pass. */
  connack: HistogramData;
  /** TCP connect plus TLS handshake, first pass. */
  handshake: HistogramData;
}

export interface PublishOptions {
  /** Topic template; `{id}` is the device id: `devices/{id}/telemetry`. */
  topic: string;
  payloadBytes: number;
  qos: 0 | 1;
  /** Unacknowledged QoS 1 publishes per device (closed loop). */
  inflight: number;
  /** Published but not counted, before the measured window. */
  warmupMs: number;
  durationMs: number;
  /** After the window: how long to wait for outstanding acknowledgements. Default 5 s. */
  drainMs?: number;
}

export interface PublishResult extends Span {
  devices: number;
  /** Acknowledged within the window (QoS 0: written within it). */
  acked: number;
  /** Publishes that failed (connection lost before the acknowledgement). */
  failed: number;
  /** Unacknowledged when the drain time ran out. */
  unacknowledged: number;
  /** Publish to PUBACK, for acknowledgements within the window. */
  latency: HistogramData;
  errors: Record<string, number>;
}

/**
 * A fleet of virtual devices in one process: connect them (at a bounded width, with TLS resumption
 * if asked, from rotating source addresses), publish from all of them in a closed loop, keep them
 * alive, close them. Devices are addressed by their position in `identities`.
 */
export class LoadEngine {
  private readonly devices: (LoadDevice | undefined)[];
  private readonly contexts: (SecureContext | undefined)[];
  /** Per broker: each device's last TLS session with it. */
  private readonly sessions = new Map<string, (Buffer | undefined)[]>();
  private readonly connected = new Set<number>();
  private readonly addresses: AddressRotation;
  private keepalive: NodeJS.Timeout | null = null;
  /** Connections the broker (or the network) closed. */
  dropped = 0;
  /** Called when a connected device loses its connection without having asked to. */
  onDrop: ((index: number, device: LoadDevice) => void) | null = null;

  constructor(
    readonly identities: readonly DeviceIdentity[],
    private readonly options: EngineOptions,
  ) {
    this.devices = new Array<LoadDevice | undefined>(identities.length);
    this.contexts = new Array<SecureContext | undefined>(identities.length);
    this.addresses = new AddressRotation(options.sourceAddresses ?? []);
  }

  get openCount(): number {
    return this.connected.size;
  }

  device(index: number): LoadDevice | undefined {
    return this.devices[index];
  }

  /** Build the TLS contexts of devices [from, from + count) ahead of a timed phase. */
  prepare(from: number, count: number): void {
    for (let i = from; i < Math.min(this.identities.length, from + count); i++) this.contextOf(i);
  }

  private contextOf(i: number): SecureContext {
    let c = this.contexts[i];
    if (!c) {
      const id = this.identities[i]!;
      c = createSecureContext({ key: id.keyPem, cert: id.certPem, ca: this.options.ca });
      this.contexts[i] = c;
    }
    return c;
  }

  private deviceOf(i: number): LoadDevice {
    let d = this.devices[i];
    if (!d) {
      d = new LoadDevice(this.identities[i]!.id);
      d.onClose = (dev) => {
        this.connected.delete(i);
        // The ticket to resume with next time (TLS 1.3 sends it after the handshake).
        if (dev.session && dev.target) this.sessionsOf(dev.target)[i] = dev.session;
        if (dev.closeReason !== 'client') {
          this.dropped++;
          this.onDrop?.(i, dev);
        }
      };
      this.devices[i] = d;
    }
    return d;
  }

  private sessionsOf(target: BrokerTarget): (Buffer | undefined)[] {
    const key = targetKey(target);
    let sessions = this.sessions.get(key);
    if (!sessions) this.sessions.set(key, (sessions = new Array<Buffer | undefined>(this.identities.length)));
    return sessions;
  }

  async open(o: OpenOptions): Promise<OpenResult> {
    const end = Math.min(this.identities.length, o.from + o.count);
    const todo: number[] = [];
    for (let i = o.from; i < end; i++) if (!this.connected.has(i)) todo.push(i);
    const useTls = o.target.tls !== false;
    if (useTls) for (const i of todo) this.contextOf(i);
    const sessions = this.sessionsOf(o.target);
    const errors = new ErrorTally();
    const connack = new LatencyHistogram();
    const handshake = new LatencyHistogram();
    let resumed = 0;

    const pass = async (list: number[], timed: boolean): Promise<number[]> => {
      const failures: number[] = [];
      let next = 0;
      const lane = async () => {
        while (next < list.length) {
          const i = list[next++]!;
          const d = this.deviceOf(i);
          const localAddress = this.addresses.take();
          const session = o.resume ? sessions[i] : undefined;
          try {
            const t = await d.connect({
              target: o.target,
              ...(useTls ? { secureContext: this.contexts[i]! } : {}),
              ...(localAddress ? { localAddress } : {}),
              ...(session ? { session } : {}),
              keepalive: this.options.keepaliveSeconds,
              timeoutMs: o.timeoutMs ?? 30_000,
              keepSession: o.keepSessions !== false,
            });
            this.connected.add(i);
            if (timed) {
              connack.record(t.connackMs);
              handshake.record(t.handshakeMs);
              if (t.resumed) resumed++;
            }
          } catch (err) {
            errors.add((err as Error).message);
            failures.push(i);
          }
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, Math.min(o.concurrency, list.length)) }, lane));
      return failures;
    };

    const startedAt = epochNow();
    let failures = await pass(todo, true);
    const endedAt = epochNow();
    const opened = todo.length - failures.length;
    for (let r = 0; r < (o.retries ?? 0) && failures.length; r++) failures = await pass(failures, false);
    this.startKeepalive();
    return {
      startedAt,
      endedAt,
      attempted: todo.length,
      opened,
      retried: todo.length - failures.length - opened,
      failed: failures.length,
      resumed,
      errors: errors.toJSON(),
      connack: connack.toJSON(),
      handshake: handshake.toJSON(),
    };
  }

  /**
   * Every connected device publishes to its topic in a closed loop, keeping `inflight` QoS 1
   * messages unacknowledged, for warm-up plus the measured window.
   */
  async publish(o: PublishOptions): Promise<PublishResult> {
    const payload = randomBytes(o.payloadBytes);
    const latency = new LatencyHistogram();
    const errors = new ErrorTally();
    const t0 = performance.now();
    const windowStart = t0 + o.warmupMs;
    const windowEnd = windowStart + o.durationMs;
    let acked = 0;
    let failed = 0;
    let outstanding = 0;
    const participants = [...this.connected];
    let drained: (() => void) | null = null;

    for (const i of participants) {
      const d = this.devices[i]!;
      const topic = Buffer.from(topicFor(o.topic, d.id));
      const onDone = (err: Error | null, ms: number) => {
        outstanding--;
        const now = performance.now();
        if (err) {
          failed++;
          errors.add(err.message);
        } else if (now >= windowStart && now <= windowEnd) {
          acked++;
          if (o.qos === 1) latency.record(ms);
        }
        if (o.qos === 1 && now < windowEnd) send();
        else if (now >= windowEnd && outstanding === 0) drained?.();
      };
      const send = () => {
        if (d.state !== 'connected') return;
        outstanding++;
        d.publish(topic, payload, o.qos, onDone);
      };
      if (o.qos === 1) for (let k = 0; k < o.inflight; k++) send();
      else {
        // QoS 0 has no acknowledgement to pace it: a timer per device, `inflight` messages a tick.
        const tick = () => {
          if (performance.now() >= windowEnd || d.state !== 'connected') return;
          // Without acknowledgements, the socket's own buffer is the only back pressure.
          if ((d.socket?.writableLength ?? 0) < 65_536) for (let k = 0; k < o.inflight; k++) send();
          setImmediate(tick);
        };
        tick();
      }
    }
    const startedAt = epochNow() - (performance.now() - windowStart);
    await new Promise<void>((r) => setTimeout(r, Math.max(0, windowEnd - performance.now())));
    if (outstanding > 0)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, o.drainMs ?? 5000);
        drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    return {
      startedAt,
      endedAt: startedAt + o.durationMs,
      devices: participants.length,
      acked,
      failed,
      unacknowledged: outstanding,
      latency: latency.toJSON(),
      errors: errors.toJSON(),
    };
  }

  /** DISCONNECT every connected device and wait for the sockets to close. Keeps the TLS sessions. */
  async closeAll(timeoutMs = 10_000): Promise<number> {
    const list = [...this.connected];
    await Promise.all(list.map((i) => this.devices[i]!.disconnect(timeoutMs)));
    this.stopKeepalive();
    return list.length;
  }

  private startKeepalive(): void {
    if (this.keepalive || this.options.keepaliveSeconds <= 0) return;
    const idleMs = (this.options.keepaliveSeconds * 1000) / 2;
    this.keepalive = setInterval(() => {
      const now = performance.now();
      for (const i of this.connected) this.devices[i]!.pingIfIdle(now, idleMs);
    }, 1000);
    this.keepalive.unref();
  }

  private stopKeepalive(): void {
    if (this.keepalive && this.connected.size === 0) {
      clearInterval(this.keepalive);
      this.keepalive = null;
    }
  }
}
