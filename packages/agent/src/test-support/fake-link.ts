import { EventEmitter } from 'node:events';
import {
  mergePatch,
  shadowDelta,
  shadowTopics,
  type ShadowDocument,
  type ShadowState,
} from '@rampart/shared/shadow';
import type { ConnectionEvents, GatewayLink, PublishOptions } from '../connection/connection.js';
import { topicMatches } from '../connection/topics.js';
import type { QueuedMessage } from '../connection/queue.js';
import { AgentError } from '../errors.js';

export interface Sent {
  topic: string;
  body: unknown;
  qos: 0 | 1;
}

/**
 * A stand-in for the gateway connection in unit tests of shadow sync and commands: it records what
 * is published, delivers what the test sends, and answers shadow requests like the gateway does
 * (merge patches, one version, 409 on a stale one), following docs/protocol.md.
 */
export class FakeLink extends EventEmitter<ConnectionEvents> implements GatewayLink {
  isOnline = false;
  /** Messages queued with publish(), in order. */
  readonly queued: Sent[] = [];
  /** Messages sent with publishNow(), in order. */
  readonly sentNow: Sent[] = [];
  readonly shadow = { version: 0, desired: {} as ShadowState, reported: {} as ShadowState };
  /** Called before the gateway handles an update: a test can change the desired state meanwhile. */
  beforeUpdate: (() => void) | null = null;
  /** Set to make the next update refused with this code and message. */
  refuseNext: { code: number; message: string } | null = null;
  private readonly subs = new Map<string, Set<(topic: string, payload: Buffer) => void>>();
  private seq = 0;

  constructor(readonly deviceId = 'dw-1') {
    super();
  }

  subscribe(filter: string, handler: (topic: string, payload: Buffer) => void): () => void {
    const set = this.subs.get(filter) ?? new Set();
    set.add(handler);
    this.subs.set(filter, set);
    return () => set.delete(handler);
  }

  publish(topic: string, payload: string | Uint8Array, options: PublishOptions = {}): QueuedMessage {
    const buf = Buffer.from(payload);
    this.queued.push({ topic, body: JSON.parse(buf.toString()), qos: options.qos ?? 1 });
    return { seq: ++this.seq, topic, payload: buf, qos: options.qos ?? 1, retain: false };
  }

  async publishNow(topic: string, payload: string | Uint8Array, qos: 0 | 1 = 1): Promise<void> {
    if (!this.isOnline) throw new AgentError('NOT_CONNECTED', 'not connected to the gateway');
    const text = Buffer.from(payload).toString();
    this.sentNow.push({ topic, body: text ? JSON.parse(text) : null, qos });
    setImmediate(() => this.serveShadow(topic, text));
  }

  /** Deliver a message to the subscribers, as the gateway would. */
  deliver(topic: string, body: unknown): void {
    const payload = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    for (const [filter, handlers] of this.subs)
      if (topicMatches(filter, topic)) for (const h of handlers) h(topic, payload);
  }

  goOnline(): void {
    this.isOnline = true;
    this.emit('online', { serial: 'aa', attempt: 0 });
  }

  goOffline(): void {
    this.isOnline = false;
    this.emit('offline', {
      failure: { kind: 'lost', refused: false, message: 'lost', advice: null },
      attempt: 1,
      retryInMs: 10,
    });
  }

  /** The operator changes the desired state (PATCH /devices/{id}/shadow). */
  setDesired(patch: ShadowState): void {
    this.shadow.desired = mergePatch(this.shadow.desired, patch);
    this.shadow.version += 1;
    const delta = shadowDelta(this.shadow.desired, this.shadow.reported);
    if (this.isOnline && Object.keys(delta).length)
      this.deliver(shadowTopics(this.deviceId).delta, { state: delta, version: this.shadow.version });
  }

  updates(): { state: { reported: ShadowState }; version?: number; clientToken?: string }[] {
    return this.sentNow
      .filter((s) => s.topic === shadowTopics(this.deviceId).update)
      .map((s) => s.body as { state: { reported: ShadowState }; version?: number; clientToken?: string });
  }

  document(): ShadowDocument {
    return {
      deviceId: this.deviceId,
      version: this.shadow.version,
      state: {
        desired: this.shadow.desired,
        reported: this.shadow.reported,
        delta: shadowDelta(this.shadow.desired, this.shadow.reported),
      },
      updatedAt: null,
      desiredUpdatedAt: null,
      reportedUpdatedAt: null,
    };
  }

  private serveShadow(topic: string, text: string): void {
    const topics = shadowTopics(this.deviceId);
    if (!this.isOnline) return;
    if (topic === topics.get) {
      this.deliver(topics.getAccepted, this.document());
      return;
    }
    if (topic !== topics.update) return;
    const request = JSON.parse(text) as {
      state: { reported: ShadowState };
      version?: number;
      clientToken?: string;
    };
    const hook = this.beforeUpdate;
    this.beforeUpdate = null;
    hook?.();
    if (!this.isOnline) return; // the connection dropped: the update never arrived
    const token = request.clientToken;
    if (this.refuseNext) {
      const r = this.refuseNext;
      this.refuseNext = null;
      this.deliver(topics.updateRejected, { ...r, clientToken: token });
      return;
    }
    if (request.version !== undefined && request.version !== this.shadow.version) {
      this.deliver(topics.updateRejected, {
        code: 409,
        message: `the shadow is at version ${this.shadow.version}, not ${request.version}; read it again and retry`,
        clientToken: token,
      });
      return;
    }
    this.shadow.reported = mergePatch(this.shadow.reported, request.state.reported);
    this.shadow.version += 1;
    this.deliver(topics.updateAccepted, {
      state: { reported: request.state.reported },
      version: this.shadow.version,
      clientToken: token,
    });
  }
}
