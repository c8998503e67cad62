import mqttPacket from 'mqtt-packet';

/**
 * The MQTT 3.1.1 a virtual device needs. The packets sent once per connection (CONNECT, SUBSCRIBE)
 * are built by mqtt-packet; the hot path — PUBLISH and PUBACK out, and splitting what the broker
 * sends into packets — is written out here, with no per-connection parser object or event emitter,
 * because a load generator keeps tens of thousands of connections and pushes every message through
 * it. The tests check these byte for byte against mqtt-packet.
 */

export const PACKET = {
  connect: 1,
  connack: 2,
  publish: 3,
  puback: 4,
  pubrec: 5,
  pubrel: 6,
  pubcomp: 7,
  subscribe: 8,
  suback: 9,
  unsubscribe: 10,
  unsuback: 11,
  pingreq: 12,
  pingresp: 13,
  disconnect: 14,
} as const;

export const PINGREQ = Buffer.from([0xc0, 0x00]);
export const DISCONNECT = Buffer.from([0xe0, 0x00]);

export interface ConnectOptions {
  clientId: string;
  /** Seconds; 0 turns keep-alive off. */
  keepalive: number;
  /** Clean session (Rampart accepts only clean sessions). */
  clean?: boolean;
  username?: string;
}

export function encodeConnect(o: ConnectOptions): Buffer {
  return mqttPacket.generate({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clientId: o.clientId,
    clean: o.clean ?? true,
    keepalive: o.keepalive,
    ...(o.username !== undefined ? { username: o.username } : {}),
  });
}

export function encodeSubscribe(packetId: number, filters: { topic: string; qos: 0 | 1 }[]): Buffer {
  return mqttPacket.generate({ cmd: 'subscribe', messageId: packetId, subscriptions: filters });
}

/** Bytes of the variable-length "remaining length" field for `n`. */
const lengthBytes = (n: number): number => (n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4);

function writeLength(buf: Buffer, offset: number, n: number): number {
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    buf[offset++] = byte;
  } while (n > 0);
  return offset;
}

/**
 * A PUBLISH packet. `topic` is the UTF-8 topic (encode it once per device, not per message); the
 * packet id is written for QoS 1 only.
 */
export function encodePublish(
  topic: Buffer,
  payload: Buffer,
  qos: 0 | 1,
  packetId = 0,
  retain = false,
): Buffer {
  const remaining = 2 + topic.length + (qos ? 2 : 0) + payload.length;
  if (remaining > 268_435_455) throw new Error('MQTT packet too large');
  const buf = Buffer.allocUnsafe(1 + lengthBytes(remaining) + remaining);
  buf[0] = 0x30 | (qos << 1) | (retain ? 1 : 0);
  let o = writeLength(buf, 1, remaining);
  buf.writeUInt16BE(topic.length, o);
  o += 2;
  o += topic.copy(buf, o);
  if (qos) {
    buf.writeUInt16BE(packetId, o);
    o += 2;
  }
  payload.copy(buf, o);
  return buf;
}

export function encodePuback(packetId: number): Buffer {
  return Buffer.from([0x40, 0x02, packetId >> 8, packetId & 0xff]);
}

/** One packet as the broker sent it: type (high nibble), flags (low nibble) and body. */
export interface Frame {
  type: number;
  flags: number;
  body: Buffer;
}

/**
 * Splits a byte stream into MQTT packets. Holds at most one incomplete packet; refuses a packet
 * longer than `maxBytes` (a broker sending one is broken or hostile).
 */
export class FrameReader {
  private pending: Buffer | null = null;

  constructor(private readonly maxBytes = 1024 * 1024) {}

  /** Feed bytes; calls `onFrame` for every complete packet. Throws on malformed framing. */
  push(chunk: Buffer, onFrame: (frame: Frame) => void): void {
    const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = null;
    let o = 0;
    while (o < buf.length) {
      if (buf.length - o < 2) break;
      let length = 0;
      let multiplier = 1;
      let i = o + 1;
      let complete = false;
      for (let k = 0; k < 4 && i < buf.length; k++) {
        const b = buf[i++]!;
        length += (b & 0x7f) * multiplier;
        multiplier *= 128;
        if (!(b & 0x80)) {
          complete = true;
          break;
        }
        if (k === 3) throw new Error('malformed MQTT packet: remaining length longer than 4 bytes');
      }
      if (!complete) break;
      if (i - o + length > this.maxBytes)
        throw new Error(`MQTT packet of ${i - o + length} bytes exceeds ${this.maxBytes}`);
      if (i + length > buf.length) break;
      const first = buf[o]!;
      onFrame({ type: first >> 4, flags: first & 0x0f, body: buf.subarray(i, i + length) });
      o = i + length;
    }
    if (o < buf.length) {
      // Keep only the incomplete tail (a copy, so that the chunk it came from can be freed).
      const rest = buf.subarray(o);
      this.pending = Buffer.from(rest);
    }
  }
}

/** CONNACK: the return code (0 = accepted). */
export function connackReturnCode(f: Frame): number {
  return f.body.length >= 2 ? f.body[1]! : -1;
}

/** PUBACK, SUBACK, UNSUBACK: the packet id. */
export function packetIdOf(f: Frame): number {
  return f.body.length >= 2 ? f.body.readUInt16BE(0) : -1;
}

/** SUBACK: one return code per filter (0x80 = refused). */
export function subackCodes(f: Frame): number[] {
  return [...f.body.subarray(2)];
}

export interface IncomingPublish {
  topic: string;
  qos: number;
  retain: boolean;
  packetId: number;
  payload: Buffer;
}

export function decodePublish(f: Frame): IncomingPublish {
  const qos = (f.flags >> 1) & 3;
  const topicLength = f.body.readUInt16BE(0);
  const topic = f.body.toString('utf8', 2, 2 + topicLength);
  let o = 2 + topicLength;
  let packetId = 0;
  if (qos > 0) {
    packetId = f.body.readUInt16BE(o);
    o += 2;
  }
  return { topic, qos, retain: (f.flags & 1) === 1, packetId, payload: f.body.subarray(o) };
}

/** The CONNACK return codes of MQTT 3.1.1 §3.2.2.3, for messages. */
export const CONNACK_REASONS: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
};

/** `devices/{id}/telemetry` → `devices/dw-1/telemetry`. */
export const topicFor = (template: string, deviceId: string): string => template.replaceAll('{id}', deviceId);
