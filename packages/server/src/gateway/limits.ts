import type { Duplex } from 'node:stream';

export interface GatewayLimits {
  /** Largest MQTT packet (fixed header + remaining length) accepted from a device. */
  maxPacketBytes: number;
  publishesPerSecond: number;
  bytesPerSecond: number;
  maxSubscriptions: number;
  maxTopicLength: number;
  maxTopicLevels: number;
  maxRetainedPerDevice: number;
}

export const DEFAULT_LIMITS: GatewayLimits = {
  maxPacketBytes: 128 * 1024,
  publishesPerSecond: 100,
  bytesPerSecond: 1024 * 1024,
  maxSubscriptions: 50,
  maxTopicLength: 256,
  maxTopicLevels: 16,
  maxRetainedPerDevice: 100,
};

/**
 * Refuse oversized or malformed MQTT framing before the broker buffers it. The MQTT parser would
 * accept a packet of up to 256 MB and keep it in memory until complete; this reads only the fixed
 * headers (type byte and the variable-length "remaining length") as the bytes pass, and calls
 * `violation` as soon as a packet announces more than `maxPacketBytes` or its length field is
 * malformed. Written here because neither aedes nor mqtt-packet offers a size limit.
 */
export class MqttFrameGuard {
  private state: 'type' | 'length' | 'body' = 'type';
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private remaining = 0;
  private failed = false;

  constructor(
    private readonly maxPacketBytes: number,
    private readonly violation: (reason: string) => void,
  ) {}

  feed(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && !this.failed) {
      if (this.state === 'type') {
        i++;
        this.state = 'length';
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
      } else if (this.state === 'length') {
        const b = chunk[i++]!;
        this.length += (b & 0x7f) * this.multiplier;
        this.multiplier *= 128;
        this.lengthBytes++;
        if (b & 0x80) {
          if (this.lengthBytes === 4)
            return this.fail('malformed packet: remaining length longer than 4 bytes');
          continue;
        }
        if (1 + this.lengthBytes + this.length > this.maxPacketBytes)
          return this.fail(
            `packet of ${1 + this.lengthBytes + this.length} bytes exceeds the limit of ${this.maxPacketBytes}`,
          );
        this.remaining = this.length;
        this.state = this.remaining === 0 ? 'type' : 'body';
      } else {
        const take = Math.min(this.remaining, chunk.length - i);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = 'type';
      }
    }
  }

  private fail(reason: string): void {
    this.failed = true;
    this.violation(reason);
  }
}

/**
 * Put a frame guard in front of a connection the broker reads with `read()`: every chunk the
 * broker takes passes the guard first, and a violation destroys the connection.
 */
export function guardConnection(
  conn: Duplex,
  limits: GatewayLimits,
  onViolation: (reason: string) => void,
): void {
  const guard = new MqttFrameGuard(limits.maxPacketBytes, (reason) => {
    onViolation(reason);
    conn.destroy();
  });
  const read = conn.read.bind(conn);
  conn.read = (size?: number) => {
    const chunk = read(size) as Buffer | string | null;
    if (chunk !== null) guard.feed(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    return chunk;
  };
}

/** Per-session counters over one-second windows. */
export class SessionBudget {
  private windowStart = 0;
  private publishes = 0;
  private bytes = 0;
  subscriptions = 0;

  constructor(private readonly limits: GatewayLimits) {}

  /** Why this publish exceeds a limit, or null. */
  publish(topic: string, payloadBytes: number, now = Date.now()): string | null {
    const topicProblem = this.topic(topic);
    if (topicProblem) return topicProblem;
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.publishes = 0;
      this.bytes = 0;
    }
    this.publishes++;
    this.bytes += payloadBytes;
    if (this.publishes > this.limits.publishesPerSecond)
      return `more than ${this.limits.publishesPerSecond} publishes in a second`;
    if (this.bytes > this.limits.bytesPerSecond)
      return `more than ${this.limits.bytesPerSecond} bytes in a second`;
    return null;
  }

  topic(topic: string): string | null {
    if (topic.length > this.limits.maxTopicLength)
      return `topic of ${topic.length} characters exceeds ${this.limits.maxTopicLength}`;
    const levels = topic.split('/').length;
    if (levels > this.limits.maxTopicLevels)
      return `topic of ${levels} levels exceeds ${this.limits.maxTopicLevels}`;
    return null;
  }
}
