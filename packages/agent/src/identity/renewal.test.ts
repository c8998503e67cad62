import { describe, expect, it } from 'vitest';
import { AgentError } from '../errors.js';
import type { CertificateInfo } from './certificate.js';
import {
  RenewalScheduler,
  renewalSafetyMargin,
  renewalTime,
  type RenewalEvent,
  type SchedulerClock,
  type SchedulerTimers,
} from './renewal.js';

const H = 3_600_000;
const DAY = 24 * H;

/** A seeded generator, so that the property test is repeatable. */
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('renewalTime', () => {
  it('is at 2/3 of the lifetime without jitter, and ±10 % of the lifetime at the extremes', () => {
    const nb = new Date(Date.UTC(2030, 0, 1));
    const na = new Date(nb.getTime() + DAY);
    expect(renewalTime(nb, na, () => 0.5, nb).getTime()).toBe(nb.getTime() + 16 * H);
    expect(renewalTime(nb, na, () => 0, nb).getTime()).toBeCloseTo(nb.getTime() + DAY * (2 / 3 - 0.1), -1);
    expect(renewalTime(nb, na, () => 0.999999, nb).getTime()).toBeCloseTo(
      nb.getTime() + DAY * (2 / 3 + 0.1),
      -3,
    );
  });

  it('stays in bounds over many random draws, lifetimes and start times', () => {
    const rnd = mulberry32(7);
    let sum = 0;
    let count = 0;
    for (let i = 0; i < 20_000; i++) {
      const nb = 1_900_000_000_000 + Math.floor(rnd() * DAY);
      const lifetime = [60_000, H, DAY, 7 * DAY, 90 * DAY][i % 5]!;
      const na = nb + lifetime;
      // "now" anywhere from before the certificate to after it
      const now = Math.floor(nb - lifetime / 2 + rnd() * lifetime * 2);
      const t = renewalTime(new Date(nb), new Date(na), rnd, now).getTime();
      expect(t).toBeGreaterThanOrEqual(now);
      if (now <= na - renewalSafetyMargin(lifetime)) {
        expect(t).toBeLessThanOrEqual(na - renewalSafetyMargin(lifetime));
        expect(t).toBeGreaterThanOrEqual(Math.max(now, nb + lifetime * (2 / 3 - 0.1)) - 1);
        expect(t).toBeLessThanOrEqual(Math.max(now, nb + lifetime * (2 / 3 + 0.1)) + 1);
      } else {
        expect(t).toBe(now); // past the renewal window: renew at once
      }
      if (now <= nb) {
        sum += (t - nb) / lifetime;
        count++;
      }
    }
    expect(sum / count).toBeCloseTo(2 / 3, 2);
  });

  it('never plans past notAfter minus the safety margin, never before now', () => {
    const nb = new Date(0);
    const na = new Date(DAY);
    expect(renewalSafetyMargin(DAY)).toBe(H);
    expect(renewalTime(nb, na, () => 1, 0).getTime()).toBeLessThanOrEqual(DAY - H);
    expect(renewalTime(nb, na, () => 0.5, 20 * H).getTime()).toBe(20 * H);
    expect(renewalTime(nb, na, () => 0.5, 30 * H).getTime()).toBe(30 * H);
    expect(renewalTime(na, nb, () => 0.5, 5).getTime()).toBe(5); // nonsense validity: now
  });
});

/** A clock and timers the test moves by hand. */
class FakeTime implements SchedulerClock, SchedulerTimers {
  private timers = new Map<number, { at: number; fn: () => void }>();
  private ids = 0;
  constructor(public t: number) {}
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.ids;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  get pending(): number {
    return this.timers.size;
  }
  /** Run every timer due up to `t`, in order, letting promises settle after each. */
  async advanceTo(t: number): Promise<void> {
    await settle();
    for (;;) {
      const next = [...this.timers.entries()].sort((a, b) => a[1].at - b[1].at)[0];
      if (!next || next[1].at > t) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
      await settle();
    }
    this.t = Math.max(this.t, t);
  }
}

const settle = () => new Promise<void>((r) => setImmediate(r));

let serials = 0;
function cert(notBefore: number, lifetime = DAY): CertificateInfo {
  return {
    serial: (++serials).toString(16).padStart(2, '0'),
    subject: 'CN=dw-0001',
    issuer: 'CN=Test Issuing CA',
    deviceId: 'dw-0001',
    notBefore: new Date(notBefore),
    notAfter: new Date(notBefore + lifetime),
    fingerprintSha256: '00',
  };
}

function harness(
  initial: CertificateInfo | null,
  renew: (now: number) => Promise<CertificateInfo>,
  start = 0,
) {
  const time = new FakeTime(start);
  const events: RenewalEvent[] = [];
  let current = initial;
  const calls: number[] = [];
  const scheduler = new RenewalScheduler({
    current: () => current,
    renew: async () => {
      calls.push(time.now());
      const next = await renew(time.now());
      current = next;
      return next;
    },
    onEvent: (e) => events.push(e),
    clock: time,
    timers: time,
    random: () => 0.5,
    retry: { initialMs: 30_000, factor: 2, maxMs: 30 * 60_000 },
  });
  return { time, events, calls, scheduler, setCurrent: (c: CertificateInfo) => (current = c) };
}

describe('RenewalScheduler', () => {
  it('renews at the planned time and plans the next renewal from the new certificate', async () => {
    const h = harness(cert(0), async (now) => cert(now), H);
    h.scheduler.start();
    await h.time.advanceTo(H);
    expect(h.events[0]).toMatchObject({ type: 'scheduled', at: new Date(16 * H) });
    await h.time.advanceTo(16 * H - 1);
    expect(h.calls).toEqual([]);
    await h.time.advanceTo(16 * H);
    expect(h.calls).toEqual([16 * H]);
    const renewed = h.events.find((e) => e.type === 'renewed');
    expect(renewed).toMatchObject({ type: 'renewed', next: new Date(32 * H) });
    await h.time.advanceTo(32 * H);
    expect(h.calls).toEqual([16 * H, 32 * H]);
    await h.scheduler.stop();
    expect(await h.scheduler.done).toBe('stopped');
    expect(h.time.pending).toBe(0);
  });

  it('renews at once when started past the renewal point', async () => {
    const h = harness(cert(0), async (now) => cert(now), 20 * H);
    h.scheduler.start();
    await h.time.advanceTo(20 * H);
    expect(h.calls).toEqual([20 * H]);
    await h.scheduler.stop();
  });

  it('retries a failed renewal with exponential backoff and jitter, capped, then succeeds', async () => {
    let failures = 9;
    const h = harness(cert(0, 30 * DAY), async (now) => {
      if (failures-- > 0) throw new Error('connect ECONNREFUSED');
      return cert(now, 30 * DAY);
    });
    h.scheduler.start();
    await h.time.advanceTo(30 * DAY);
    const first = 20 * DAY; // 2/3 of 30 days with random() = 0.5
    const failed = h.events.filter((e) => e.type === 'failed');
    expect(failed).toHaveLength(9);
    // base delays 30 s, 60 s, 120 s … capped at 30 min; with random() = 0.5 each is 3/4 of its base
    const bases = [30, 60, 120, 240, 480, 960, 1800, 1800, 1800].map((s) => s * 1000);
    let t = first;
    const expected = [first];
    for (const b of bases) {
      t += b * 0.75;
      expected.push(t);
    }
    expect(h.calls).toEqual(expected);
    expect(failed[0]).toMatchObject({
      attempt: 1,
      reason: 'connect ECONNREFUSED',
      retryAt: new Date(expected[1]!),
    });
    expect(h.events.filter((e) => e.type === 'renewed')).toHaveLength(1);
    await h.scheduler.stop();
  });

  it('makes a last attempt just before expiry, then gives up saying the device must enroll again', async () => {
    const h = harness(
      cert(0, 2 * H),
      async () => {
        throw new AgentError('EST_REFUSED', 'renewal failed: the EST server answered 403', { status: 403 });
      },
      0,
    );
    h.scheduler.start();
    await h.time.advanceTo(3 * H);
    expect(h.calls.at(-1)).toBe(2 * H - 60_000);
    const last = h.events.at(-1)!;
    expect(last.type).toBe('expired');
    if (last.type === 'expired') {
      expect(last.reason).toMatch(/expired at 1970-01-01T02:00:00.000Z/);
      expect(last.reason).toMatch(/must enroll again with a new one-time token/);
      expect(last.reason).toContain('rampart enrollment token create --device dw-0001');
    }
    expect(await h.scheduler.done).toBe('expired');
    expect(h.time.pending).toBe(0);
  });

  it('gives up at once, without trying, when the certificate has already expired', async () => {
    const h = harness(cert(0, H), async (now) => cert(now), 2 * H);
    h.scheduler.start();
    expect(await h.scheduler.done).toBe('expired');
    expect(h.calls).toEqual([]);
    expect(h.events).toEqual([
      expect.objectContaining({
        type: 'expired',
        reason: expect.stringMatching(/renewal needs a valid certificate for mutual TLS/),
      }),
    ]);
  });

  it('gives up when renewal reports CERT_EXPIRED, and when there is no certificate', async () => {
    const h = harness(
      cert(0),
      async () => {
        throw new AgentError('CERT_EXPIRED', 'the device certificate expired; enroll again');
      },
      20 * H,
    );
    h.scheduler.start();
    expect(await h.scheduler.done).toBe('expired');

    const none = harness(null, async (now) => cert(now));
    none.scheduler.start();
    expect(await none.scheduler.done).toBe('not-enrolled');
    expect(none.events[0]).toMatchObject({
      type: 'not-enrolled',
      reason: expect.stringMatching(/rampart-agent enroll/),
    });
  });

  it('follows a certificate renewed by someone else, and stops cleanly while waiting', async () => {
    const h = harness(cert(0), async (now) => cert(now));
    h.scheduler.start();
    await h.time.advanceTo(H);
    h.setCurrent(cert(2 * H)); // e.g. `rampart-agent renew` run by hand
    await h.time.advanceTo(17 * H);
    expect(h.calls).toEqual([]); // the old plan (16 h) was dropped for the new one (18 h)
    expect(h.scheduler.nextAttempt).toEqual(new Date(18 * H));
    await h.scheduler.stop();
    await h.time.advanceTo(40 * H);
    expect(h.calls).toEqual([]);
    expect(h.events.at(-1)).toEqual({ type: 'stopped' });
    expect(h.time.pending).toBe(0);
  });

  it('lets a renewal under way finish when stopped', async () => {
    let release!: () => void;
    const h = harness(cert(0), (now) => new Promise((r) => (release = () => r(cert(now)))), 20 * H);
    h.scheduler.start();
    await h.time.advanceTo(20 * H);
    expect(h.calls).toHaveLength(1);
    const stopping = h.scheduler.stop();
    let stopped = false;
    void h.scheduler.done.then(() => (stopped = true));
    await settle();
    expect(stopped).toBe(false); // waits for the renewal under way
    release();
    await stopping;
    expect(await h.scheduler.done).toBe('stopped');
    expect(h.events.map((e) => e.type).slice(-2)).toEqual(['renewed', 'stopped']);
    expect(h.time.pending).toBe(0);
  });
});
