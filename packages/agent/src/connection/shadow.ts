import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from '@rampart/shared/logging';
import {
  mergePatch,
  shadowDelta,
  shadowTopics,
  type ShadowDocument,
  type ShadowState,
} from '@rampart/shared/shadow';
import { AgentError } from '../errors.js';
import type { GatewayLink } from './connection.js';

/** The device's view of its shadow. */
export interface ShadowSnapshot {
  version: number;
  desired: ShadowState;
  reported: ShadowState;
  delta: ShadowState;
}

/**
 * Applies what the operator wants (`delta`: desired values not reported yet) and returns what is
 * now in effect, as a merge patch of the reported state: the delta itself when it returns nothing,
 * `{}` to report nothing. Called again after every reconnect while a delta remains, so it must be
 * idempotent. A throw is logged and nothing is reported.
 */
export type DeltaHandler = (
  delta: ShadowState,
  shadow: ShadowSnapshot,
) => ShadowState | undefined | void | Promise<ShadowState | undefined | void>;

export interface ShadowSyncOptions {
  onDelta?: DeltaHandler;
  /** Time limit for the gateway's answer to a get or an update. Default 10 s. */
  answerTimeoutMs?: number;
  /** Version conflicts (409) in a row before a report is given up. Default 5. */
  maxConflicts?: number;
  log?: Logger;
}

export interface ShadowSyncEvents {
  /** The shadow was read from the gateway (after every connect, and after a version conflict). */
  synced: [snapshot: ShadowSnapshot];
  /** The gateway stored a report. */
  reported: [patch: ShadowState, version: number];
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

interface Answer {
  topic: 'get' | 'accepted' | 'rejected';
  body: Record<string, unknown>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Keeps the device's shadow in step with the gateway (topics and payloads in docs/protocol.md):
 * reads the whole shadow after every (re)connect, hands deltas to the application's handler,
 * and reports state with the version it last saw. A version conflict (409: the desired state
 * changed meanwhile) reads the shadow again, lets the handler see the new delta, and retries.
 * Reports made while offline are merged and sent once the connection is back.
 */
export class ShadowSync extends EventEmitter<ShadowSyncEvents> {
  private readonly topics: ReturnType<typeof shadowTopics>;
  private readonly answerTimeoutMs: number;
  private readonly maxConflicts: number;
  private readonly log: Logger | undefined;
  private handler: DeltaHandler | undefined;
  private state: ShadowSnapshot | null = null;
  /** Reported changes not yet stored by the gateway, and who waits for them. */
  private pending: { patch: ShadowState; waiters: Waiter[] } | null = null;
  private chain: Promise<void> = Promise.resolve();
  private answer: { match(a: Answer): boolean; resolve(a: Answer): void; reject(err: Error): void } | null =
    null;
  private readonly unsubscribe: (() => void)[] = [];
  private stopped = false;
  private warnedNoHandler = false;

  constructor(
    private readonly connection: GatewayLink,
    options: ShadowSyncOptions = {},
  ) {
    super();
    this.topics = shadowTopics(connection.deviceId);
    this.handler = options.onDelta;
    this.answerTimeoutMs = options.answerTimeoutMs ?? 10_000;
    this.maxConflicts = options.maxConflicts ?? 5;
    this.log = options.log;
    const on = (topic: string, kind: Answer['topic'] | 'delta') =>
      this.unsubscribe.push(connection.subscribe(topic, (_t, payload) => this.received(kind, payload)));
    on(this.topics.getAccepted, 'get');
    on(this.topics.updateAccepted, 'accepted');
    on(this.topics.updateRejected, 'rejected');
    on(this.topics.delta, 'delta');
    const online = () => this.run(() => this.resync());
    const offline = () => this.answer?.reject(new AgentError('NOT_CONNECTED', 'the connection ended'));
    connection.on('online', online);
    connection.on('offline', offline);
    this.unsubscribe.push(
      () => connection.off('online', online),
      () => connection.off('offline', offline),
    );
    if (connection.isOnline) online();
  }

  /** The application's delta handler (replaces the one given before). */
  onDelta(handler: DeltaHandler): void {
    this.handler = handler;
  }

  /** The shadow as last read and updated; null until the first read. */
  get snapshot(): ShadowSnapshot | null {
    return this.state ? structuredClone(this.state) : null;
  }

  /**
   * Report state: a JSON merge patch of `reported` (`null` removes a key). Reports are merged until
   * they can be sent; values the gateway already has are not sent again. Resolves once the gateway
   * stored it; rejects with SHADOW_REJECTED if the gateway refuses it (400, 403, or conflicts that
   * do not settle), or STOPPED.
   */
  report(patch: ShadowState): Promise<void> {
    if (this.stopped) return Promise.reject(new AgentError('STOPPED', 'the shadow sync is stopped'));
    return new Promise<void>((resolve, reject) => {
      this.pending = {
        patch: mergePatch(this.pending?.patch ?? {}, patch),
        waiters: [...(this.pending?.waiters ?? []), { resolve, reject }],
      };
      if (this.connection.isOnline) this.run(() => this.flush());
    });
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const u of this.unsubscribe) u();
    this.answer?.reject(new AgentError('STOPPED', 'the shadow sync is stopped'));
    const waiters = this.pending?.waiters ?? [];
    this.pending = null;
    for (const w of waiters) w.reject(new AgentError('STOPPED', 'the shadow sync is stopped'));
  }

  /** One shadow operation at a time, in order. */
  private run(task: () => Promise<void>): void {
    this.chain = this.chain.then(async () => {
      if (this.stopped || !this.connection.isOnline) return;
      try {
        await task();
      } catch (err) {
        if (err instanceof AgentError && (err.code === 'NOT_CONNECTED' || err.code === 'STOPPED')) return;
        this.log?.warn({ err }, `shadow sync: ${err instanceof Error ? err.message : String(err)}`);
      }
    });
  }

  private received(kind: Answer['topic'] | 'delta', payload: Buffer): void {
    let body: unknown;
    try {
      body = JSON.parse(payload.toString('utf8'));
    } catch {
      this.log?.warn({ kind }, 'shadow: ignored a message that is not JSON');
      return;
    }
    if (!isObject(body)) return;
    if (kind === 'delta') {
      const state = body.state;
      const version = body.version;
      if (!isObject(state) || typeof version !== 'number') return;
      this.run(() => this.applyDelta(state as ShadowState, version));
      return;
    }
    const answer = { topic: kind, body };
    if (this.answer?.match(answer)) this.answer.resolve(answer);
  }

  private await(publish: () => Promise<void>, match: (a: Answer) => boolean): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          done(() =>
            reject(new AgentError('TIMEOUT', `the gateway did not answer within ${this.answerTimeoutMs} ms`)),
          ),
        this.answerTimeoutMs,
      );
      const done = (settle: () => void) => {
        clearTimeout(timer);
        if (this.answer === entry) this.answer = null;
        settle();
      };
      const entry = {
        match,
        resolve: (a: Answer) => done(() => resolve(a)),
        reject: (err: Error) => done(() => reject(err)),
      };
      this.answer = entry;
      publish().catch((err: unknown) => entry.reject(err as Error));
    });
  }

  /** Read the whole shadow. */
  private async get(): Promise<ShadowSnapshot> {
    const answer = await this.await(
      () => this.connection.publishNow(this.topics.get, ''),
      (a) => a.topic === 'get',
    );
    const doc = answer.body as unknown as ShadowDocument;
    if (typeof doc.version !== 'number' || !isObject(doc.state))
      throw new AgentError('SHADOW_REJECTED', 'the gateway sent a shadow document without version or state');
    this.state = {
      version: doc.version,
      desired: (doc.state.desired ?? {}) as ShadowState,
      reported: (doc.state.reported ?? {}) as ShadowState,
      delta: (doc.state.delta ?? {}) as ShadowState,
    };
    this.emit('synced', structuredClone(this.state));
    return this.state;
  }

  private async resync(): Promise<void> {
    const snapshot = await this.get();
    this.log?.debug({ version: snapshot.version }, 'shadow read');
    if (Object.keys(snapshot.delta).length) await this.handle(snapshot.delta);
    await this.flush();
  }

  private async applyDelta(delta: ShadowState, version: number): Promise<void> {
    if (!this.state) {
      await this.resync();
      return;
    }
    if (version <= this.state.version) return; // already seen in a later read
    this.state.version = version;
    this.state.desired = mergePatch(this.state.desired, delta);
    this.state.delta = delta;
    await this.handle(delta);
    await this.flush();
  }

  /** Give the delta to the application; what it returns is reported. */
  private async handle(delta: ShadowState): Promise<void> {
    if (!this.handler) {
      if (!this.warnedNoHandler)
        this.log?.info(
          { keys: Object.keys(delta) },
          'the shadow has desired state this agent has no handler for; it is left to the application',
        );
      this.warnedNoHandler = true;
      return;
    }
    let result: ShadowState | undefined | void;
    try {
      result = await this.handler(structuredClone(delta), structuredClone(this.state!));
    } catch (err) {
      this.log?.error({ err }, 'the shadow delta handler failed; the desired state stays pending');
      return;
    }
    const patch = result ?? delta;
    if (Object.keys(patch).length)
      this.pending = {
        patch: mergePatch(this.pending?.patch ?? {}, patch),
        waiters: this.pending?.waiters ?? [],
      };
  }

  /** Send what is pending until the gateway has stored it all. */
  private async flush(): Promise<void> {
    let conflicts = 0;
    while (this.pending) {
      if (!this.state) await this.get();
      const state = this.state!;
      const batch = this.pending;
      const patch = shadowDelta(batch.patch, state.reported);
      if (!Object.keys(patch).length) {
        this.pending = null;
        for (const w of batch.waiters) w.resolve();
        continue;
      }
      this.pending = null;
      const clientToken = randomUUID();
      let answer: Answer;
      try {
        answer = await this.await(
          () =>
            this.connection.publishNow(
              this.topics.update,
              JSON.stringify({ state: { reported: patch }, version: state.version, clientToken }),
            ),
          (a) =>
            (a.topic === 'accepted' || a.topic === 'rejected') &&
            (a.body.clientToken === clientToken || a.body.clientToken === undefined),
        );
      } catch (err) {
        this.requeue(batch);
        throw err;
      }
      if (answer.topic === 'accepted') {
        const version = answer.body.version;
        state.reported = mergePatch(state.reported, patch);
        state.delta = shadowDelta(state.desired, state.reported);
        if (typeof version === 'number') state.version = version;
        this.log?.debug({ version: state.version }, 'shadow reported');
        this.emit('reported', patch, state.version);
        for (const w of batch.waiters) w.resolve();
        conflicts = 0;
        continue;
      }
      const code = typeof answer.body.code === 'number' ? answer.body.code : 400;
      const message = typeof answer.body.message === 'string' ? answer.body.message : 'refused';
      if (code === 409 && ++conflicts <= this.maxConflicts) {
        // The desired state (or another report) moved on: read it again, let the handler see the
        // new delta, and report once more on top of the current version.
        this.requeue(batch);
        this.log?.debug({ conflicts }, `shadow version conflict: ${message}; reading it again`);
        const snapshot = await this.get();
        if (Object.keys(snapshot.delta).length) await this.handle(snapshot.delta);
        continue;
      }
      const err = new AgentError(
        'SHADOW_REJECTED',
        `the gateway refused the shadow report (${code}): ${message}`,
        {
          status: code,
          serverMessage: message,
        },
      );
      this.log?.warn({ code }, err.message);
      for (const w of batch.waiters) w.reject(err);
    }
  }

  /** Put a batch back in front of what was reported since. */
  private requeue(batch: { patch: ShadowState; waiters: Waiter[] }): void {
    this.pending = {
      patch: mergePatch(batch.patch, this.pending?.patch ?? {}),
      waiters: [...batch.waiters, ...(this.pending?.waiters ?? [])],
    };
  }
}
