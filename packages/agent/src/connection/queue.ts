import { AgentError } from '../errors.js';

/** A message the device wants delivered to the gateway. */
export interface OutboundMessage {
  topic: string;
  payload: Buffer;
  /** 0: at most once (removed once written to the socket); 1: at least once (removed after PUBACK). */
  qos: 0 | 1;
  retain: boolean;
}

/** A message in the queue, with its position: positions only grow, so they give the delivery order. */
export interface QueuedMessage extends OutboundMessage {
  readonly seq: number;
}

export interface QueueBounds {
  /** At most this many messages are kept; the oldest are dropped first. */
  maxMessages: number;
  /** At most this many bytes (topics and payloads) are kept; the oldest messages are dropped first. */
  maxBytes: number;
}

export const DEFAULT_QUEUE_BOUNDS: QueueBounds = { maxMessages: 10_000, maxBytes: 16 * 1024 * 1024 };

/**
 * The outbound queue of the gateway connection: every message waits here, in order, until it is
 * delivered (written for QoS 0, acknowledged for QoS 1). Bounded by count and bytes; when a new
 * message would exceed a bound, the oldest messages are dropped and returned so that the caller can
 * count and log them.
 */
export interface MessageQueue {
  /** Append a message. Throws MESSAGE_INVALID if it alone exceeds `maxBytes`. */
  push(message: OutboundMessage): { message: QueuedMessage; dropped: QueuedMessage[] };
  /** The oldest `limit` messages still queued, oldest first. */
  peek(limit: number): QueuedMessage[];
  /** Remove a delivered message; false when it is no longer queued (dropped, or acknowledged already). */
  ack(seq: number): boolean;
  /** Messages queued. */
  readonly size: number;
  /** Bytes (topics and payloads) queued. */
  readonly bytes: number;
  /** Messages dropped to stay within the bounds since the queue was opened. */
  readonly dropped: number;
  /** Make everything pushed and acknowledged so far durable (a no-op in memory). */
  flush(): Promise<void>;
  /** Flush and release the queue; it cannot be used afterwards. */
  close(): Promise<void>;
}

/** What a message costs against `maxBytes`. */
export function messageBytes(message: Pick<OutboundMessage, 'topic' | 'payload'>): number {
  return Buffer.byteLength(message.topic, 'utf8') + message.payload.length;
}

/**
 * The queue's bookkeeping, shared by the in-memory and the file-backed queue: live messages in
 * order, acknowledged ones removed, bounds enforced by dropping the oldest.
 */
export class QueueState {
  private items: (QueuedMessage | null)[] = [];
  private head = 0;
  private live = 0;
  private liveBytes = 0;
  private nextSeq = 1;
  droppedTotal = 0;

  constructor(readonly bounds: QueueBounds) {
    if (!(bounds.maxMessages >= 1) || !(bounds.maxBytes >= 1))
      throw new AgentError('CONFIG_INVALID', 'queue bounds must allow at least one message and one byte');
  }

  get size(): number {
    return this.live;
  }

  get bytes(): number {
    return this.liveBytes;
  }

  /** The position the next message gets. */
  get next(): number {
    return this.nextSeq;
  }

  /** Append a message with a position (at recovery) or the next one. */
  add(message: OutboundMessage, seq = this.nextSeq): QueuedMessage {
    const size = messageBytes(message);
    if (size > this.bounds.maxBytes)
      throw new AgentError(
        'MESSAGE_INVALID',
        `a message of ${size} bytes on ${message.topic} does not fit the offline queue (queue.maxBytes ${this.bounds.maxBytes})`,
      );
    const queued: QueuedMessage = {
      seq,
      topic: message.topic,
      payload: message.payload,
      qos: message.qos,
      retain: message.retain,
    };
    this.items.push(queued);
    this.live += 1;
    this.liveBytes += size;
    this.nextSeq = Math.max(this.nextSeq, seq + 1);
    return queued;
  }

  /** The oldest messages that must go for the bounds to hold again. */
  overflow(): QueuedMessage[] {
    const out: QueuedMessage[] = [];
    while (this.live > this.bounds.maxMessages || this.liveBytes > this.bounds.maxBytes) {
      const oldest = this.oldest();
      if (!oldest) break;
      this.remove(oldest.seq);
      out.push(oldest);
    }
    this.droppedTotal += out.length;
    return out;
  }

  peek(limit: number): QueuedMessage[] {
    const out: QueuedMessage[] = [];
    for (let i = this.head; i < this.items.length && out.length < limit; i++) {
      const m = this.items[i];
      if (m) out.push(m);
    }
    return out;
  }

  /** Every live message, oldest first. */
  all(): QueuedMessage[] {
    return this.peek(Number.POSITIVE_INFINITY);
  }

  /** Remove a message; returns it, or null when it is not queued. */
  remove(seq: number): QueuedMessage | null {
    const i = this.indexOf(seq);
    if (i < 0) return null;
    const m = this.items[i]!;
    this.items[i] = null;
    this.live -= 1;
    this.liveBytes -= messageBytes(m);
    while (this.head < this.items.length && this.items[this.head] === null) this.head += 1;
    // Reclaim the consumed prefix now and then rather than on every removal.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return m;
  }

  private oldest(): QueuedMessage | null {
    return this.items[this.head] ?? null;
  }

  /** Positions only grow along the array, so a binary search finds a message. */
  private indexOf(seq: number): number {
    let lo = this.head;
    let hi = this.items.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      // A removed slot has no position; look right of it for the nearest live one.
      let probe = mid;
      while (probe <= hi && this.items[probe] === null) probe += 1;
      if (probe > hi) {
        hi = mid - 1;
        continue;
      }
      const s = this.items[probe]!.seq;
      if (s === seq) return probe;
      if (s < seq) lo = probe + 1;
      else hi = mid - 1;
    }
    return -1;
  }
}

/** The queue in memory only: for tests, simulators and devices without writable storage. */
export class MemoryQueue implements MessageQueue {
  private readonly state: QueueState;
  private closed = false;

  constructor(bounds: Partial<QueueBounds> = {}) {
    this.state = new QueueState({ ...DEFAULT_QUEUE_BOUNDS, ...bounds });
  }

  push(message: OutboundMessage): { message: QueuedMessage; dropped: QueuedMessage[] } {
    if (this.closed) throw new AgentError('STOPPED', 'the offline queue is closed');
    const queued = this.state.add(message);
    return { message: queued, dropped: this.state.overflow() };
  }

  peek(limit: number): QueuedMessage[] {
    return this.state.peek(limit);
  }

  ack(seq: number): boolean {
    return this.state.remove(seq) !== null;
  }

  get size(): number {
    return this.state.size;
  }

  get bytes(): number {
    return this.state.bytes;
  }

  get dropped(): number {
    return this.state.droppedTotal;
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    this.closed = true;
  }
}
