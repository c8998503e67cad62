import { AgentError } from '../errors.js';
import type { CertificateInfo } from './certificate.js';

/** Renew at this fraction of the certificate's lifetime… */
export const RENEWAL_FRACTION = 2 / 3;
/** …give or take up to this fraction of the lifetime, so that a fleet enrolled together does not renew together. */
export const RENEWAL_JITTER = 0.1;

/**
 * Renewal is never planned later than this before notAfter: a tenth of the lifetime, at most an
 * hour. With the defaults it only matters for unusual lifetimes; it leaves time for retries.
 */
export function renewalSafetyMargin(lifetimeMs: number): number {
  return Math.min(lifetimeMs / 10, 60 * 60_000);
}

/**
 * When to renew a certificate valid from `notBefore` to `notAfter`: at about 2/3 of its lifetime,
 * ± up to 10 % of the lifetime drawn from `random` (uniform in [0, 1)), never later than notAfter
 * minus the safety margin, and never before `now` (a certificate past its renewal point is renewed
 * at once). Pure: the same inputs give the same time.
 */
export function renewalTime(
  notBefore: Date,
  notAfter: Date,
  random: () => number = Math.random,
  now: number | Date = Date.now(),
): Date {
  const start = notBefore.getTime();
  const end = notAfter.getTime();
  const current = typeof now === 'number' ? now : now.getTime();
  const lifetime = end - start;
  if (!(lifetime > 0)) return new Date(current);
  const r = Math.min(Math.max(random(), 0), 1);
  const target = start + lifetime * (RENEWAL_FRACTION + RENEWAL_JITTER * (2 * r - 1));
  const latest = end - renewalSafetyMargin(lifetime);
  return new Date(Math.max(Math.min(target, latest), current));
}

export interface SchedulerClock {
  now(): number;
}

export interface SchedulerTimers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface RetryPolicy {
  /** First retry after about this long. Default 30 s. */
  initialMs: number;
  /** Each failure multiplies the delay by this. Default 2. */
  factor: number;
  /** Delays never exceed this. Default 30 min. */
  maxMs: number;
}

export type RenewalEvent =
  | { type: 'scheduled'; certificate: CertificateInfo; at: Date }
  | { type: 'renewing'; certificate: CertificateInfo; attempt: number }
  | { type: 'renewed'; previous: CertificateInfo; certificate: CertificateInfo; next: Date }
  | {
      type: 'failed';
      certificate: CertificateInfo | null;
      attempt: number;
      reason: string;
      error: unknown;
      retryAt: Date;
    }
  /** Gave up: the certificate expired, renewal over mutual TLS is impossible; the device must enroll again. */
  | { type: 'expired'; certificate: CertificateInfo; reason: string }
  /** Gave up: there is no certificate to renew. */
  | { type: 'not-enrolled'; reason: string }
  | { type: 'stopped' };

export type SchedulerOutcome = 'stopped' | 'expired' | 'not-enrolled';

export interface RenewalSchedulerOptions {
  /** The current certificate, read again before every decision (another process may have renewed it). */
  current(): CertificateInfo | null | Promise<CertificateInfo | null>;
  /** Re-enroll (EST simplereenroll over mutual TLS) and save; returns the new certificate. */
  renew(): Promise<CertificateInfo>;
  /** Every decision, for logs. Must not throw. */
  onEvent?(event: RenewalEvent): void;
  clock?: SchedulerClock;
  timers?: SchedulerTimers;
  random?: () => number;
  retry?: Partial<RetryPolicy>;
  /** Look at the clock at least this often (devices sleep and clocks jump). Default 10 min. */
  maxSleepMs?: number;
  /** The message when the certificate has expired; by default names `rampart-agent enroll`. */
  expiredMessage?(certificate: CertificateInfo): string;
}

/** setTimeout cannot wait longer than this (about 24.8 days); longer waits would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** One last attempt this long before notAfter when the backoff would otherwise miss the end. */
const LAST_CHANCE_MS = 60_000;

export function expiredCertificateMessage(certificate: CertificateInfo): string {
  const id = certificate.deviceId ?? 'ID';
  return (
    `the device certificate (serial ${certificate.serial}) expired at ${certificate.notAfter.toISOString()}; ` +
    'renewal needs a valid certificate for mutual TLS, so the device must enroll again with a new ' +
    `one-time token: ask the operator for one (rampart enrollment token create --device ${id}), ` +
    'then run: rampart-agent enroll --token-file FILE'
  );
}

/**
 * Keeps the device certificate renewed: re-enrolls at renewalTime(), retries failures with
 * exponential backoff and jitter (capped), and gives up, saying so, only when the certificate has
 * expired (re-enrollment needs a valid one). Clock and timers are injectable for tests.
 */
export class RenewalScheduler {
  /** Settles when the scheduler stops: stop() was called, or it gave up. */
  readonly done: Promise<SchedulerOutcome>;
  private resolveDone!: (outcome: SchedulerOutcome) => void;
  private readonly clock: SchedulerClock;
  private readonly timers: SchedulerTimers;
  private readonly random: () => number;
  private readonly retry: RetryPolicy;
  private readonly maxSleepMs: number;
  private started = false;
  private finished = false;
  /** No more planning: stop() was called (an attempt may still be finishing) or the scheduler finished. */
  private halted = false;
  private timer: unknown = null;
  private inFlight: Promise<void> | null = null;
  /** The planned renewal, kept per certificate so that waking up early does not draw a new time. */
  private plan: { serial: string; at: number } | null = null;
  private retryAt: number | null = null;
  private failures = 0;

  constructor(private readonly options: RenewalSchedulerOptions) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.clock = options.clock ?? { now: () => Date.now() };
    this.timers = options.timers ?? {
      setTimeout: (cb, ms) => setTimeout(cb, ms),
      clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
    };
    this.random = options.random ?? Math.random;
    this.retry = { initialMs: 30_000, factor: 2, maxMs: 30 * 60_000, ...options.retry };
    this.maxSleepMs = Math.min(options.maxSleepMs ?? 10 * 60_000, MAX_TIMER_MS);
  }

  /** When the next renewal (or retry) is due, once planned. */
  get nextAttempt(): Date | null {
    const at = this.retryAt ?? this.plan?.at;
    return at === undefined || at === null ? null : new Date(at);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.step();
  }

  /** Stop planning; an attempt under way is allowed to finish (its result is saved), then done settles. */
  async stop(): Promise<void> {
    if (this.halted) {
      await this.done;
      return;
    }
    this.halted = true;
    this.clearTimer();
    if (this.inFlight) await this.inFlight;
    this.finish('stopped');
  }

  private emit(event: RenewalEvent): void {
    try {
      this.options.onEvent?.(event);
    } catch {
      // a broken logger must not stop renewal
    }
  }

  private finish(outcome: SchedulerOutcome): void {
    if (this.finished) return;
    this.finished = true;
    this.halted = true;
    this.clearTimer();
    if (outcome === 'stopped') this.emit({ type: 'stopped' });
    this.resolveDone(outcome);
  }

  private clearTimer(): void {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  private wake(ms: number): void {
    this.clearTimer();
    if (this.halted) return;
    this.timer = this.timers.setTimeout(
      () => {
        this.timer = null;
        this.step();
      },
      Math.max(0, Math.min(ms, this.maxSleepMs)),
    );
  }

  private step(): void {
    if (this.halted) return;
    const run: Promise<void> = this.decide()
      .catch((err: unknown) => this.failed(null, err))
      .finally(() => {
        if (this.inFlight === run) this.inFlight = null;
      });
    this.inFlight = run;
  }

  private async decide(): Promise<void> {
    let cert: CertificateInfo | null;
    try {
      cert = await this.options.current();
    } catch (err) {
      this.failed(null, err);
      return;
    }
    if (this.halted) return;
    if (!cert) {
      const reason =
        'the device has no certificate to renew; enroll it first: rampart-agent enroll --token-file FILE';
      this.emit({ type: 'not-enrolled', reason });
      this.finish('not-enrolled');
      return;
    }
    const now = this.clock.now();
    const notAfter = cert.notAfter.getTime();
    if (now >= notAfter) {
      const reason = (this.options.expiredMessage ?? expiredCertificateMessage)(cert);
      this.emit({ type: 'expired', certificate: cert, reason });
      this.finish('expired');
      return;
    }
    if (this.plan?.serial !== cert.serial) {
      // A new certificate (first start, renewed here or by someone else): plan afresh.
      this.plan = {
        serial: cert.serial,
        at: renewalTime(cert.notBefore, cert.notAfter, this.random, now).getTime(),
      };
      this.retryAt = null;
      this.failures = 0;
      this.emit({ type: 'scheduled', certificate: cert, at: new Date(this.plan.at) });
    }
    const due = this.retryAt ?? this.plan.at;
    if (now < due) {
      this.wake(Math.min(due, notAfter) - now);
      return;
    }
    await this.attempt(cert);
  }

  private async attempt(cert: CertificateInfo): Promise<void> {
    const attempt = this.failures + 1;
    this.emit({ type: 'renewing', certificate: cert, attempt });
    let renewed: CertificateInfo;
    try {
      renewed = await this.options.renew();
    } catch (err) {
      if (err instanceof AgentError && err.code === 'CERT_EXPIRED') {
        this.emit({ type: 'expired', certificate: cert, reason: err.message });
        this.finish('expired');
        return;
      }
      this.failed(cert, err);
      return;
    }
    const now = this.clock.now();
    this.failures = 0;
    this.retryAt = null;
    this.plan = {
      serial: renewed.serial,
      at: renewalTime(renewed.notBefore, renewed.notAfter, this.random, now).getTime(),
    };
    this.emit({ type: 'renewed', previous: cert, certificate: renewed, next: new Date(this.plan.at) });
    if (this.halted) return;
    this.wake(this.plan.at - now);
  }

  private failed(cert: CertificateInfo | null, err: unknown): void {
    this.failures += 1;
    const now = this.clock.now();
    const base = Math.min(this.retry.maxMs, this.retry.initialMs * this.retry.factor ** (this.failures - 1));
    // "Equal jitter": between half the delay and the whole of it.
    let at = now + base / 2 + (base / 2) * Math.min(Math.max(this.random(), 0), 1);
    if (cert) {
      const lastChance = cert.notAfter.getTime() - LAST_CHANCE_MS;
      if (at > lastChance && lastChance > now) at = lastChance;
    }
    this.retryAt = Math.round(at);
    this.emit({
      type: 'failed',
      certificate: cert,
      attempt: this.failures,
      reason: err instanceof Error ? err.message : String(err),
      error: err,
      retryAt: new Date(this.retryAt),
    });
    if (this.halted) return;
    const wakeAt = cert ? Math.min(this.retryAt, cert.notAfter.getTime()) : this.retryAt;
    this.wake(wakeAt - now);
  }
}
