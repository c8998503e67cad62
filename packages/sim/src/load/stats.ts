/**
 * Latency accounting for many connections and several processes: a log-bucketed histogram with a
 * bounded relative error, constant memory whatever the number of samples, and mergeable (each
 * load process keeps its own, the parent adds them up).
 */

/** Relative width of a bucket: a percentile is within 1 % of the true value. */
const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
/** Smallest distinguished value, in milliseconds (1 µs); anything below counts as this. */
const MIN_MS = 0.001;
/** Buckets up to about 17 minutes. */
const BUCKETS = Math.ceil(Math.log(1_000_000 / MIN_MS) / LOG_GROWTH) + 1;

export interface LatencySummary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** What crosses a process boundary: the non-empty buckets as [index, count] pairs. */
export interface HistogramData {
  buckets: [number, number][];
  count: number;
  sum: number;
  min: number;
  max: number;
}

const bucketOf = (ms: number): number =>
  ms <= MIN_MS ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / MIN_MS) / LOG_GROWTH));

/** The value a bucket stands for: its upper bound. */
const valueOf = (bucket: number): number => MIN_MS * GROWTH ** bucket;

export class LatencyHistogram {
  private counts = new Uint32Array(BUCKETS);
  count = 0;
  sum = 0;
  min = Infinity;
  max = -Infinity;

  /** Record one latency in milliseconds (negative and NaN values are ignored). */
  record(ms: number): void {
    if (!(ms >= 0)) return;
    this.counts[bucketOf(ms)]!++;
    this.count++;
    this.sum += ms;
    if (ms < this.min) this.min = ms;
    if (ms > this.max) this.max = ms;
  }

  /**
   * The p-th percentile (0–100) in milliseconds, by the same rule as a sorted array's
   * `sorted[ceil(p/100 · n) − 1]`, within 1 %; clamped to the exact min and max. NaN when empty.
   */
  percentile(p: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.min(this.count, Math.max(1, Math.ceil((p / 100) * this.count)));
    let seen = 0;
    for (let b = 0; b < BUCKETS; b++) {
      seen += this.counts[b]!;
      if (seen >= rank) return Math.min(this.max, Math.max(this.min, valueOf(b)));
    }
    return this.max;
  }

  summary(): LatencySummary {
    return {
      count: this.count,
      min: this.count ? this.min : NaN,
      mean: this.count ? this.sum / this.count : NaN,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p99: this.percentile(99),
      max: this.count ? this.max : NaN,
    };
  }

  merge(other: LatencyHistogram | HistogramData): this {
    const data = other instanceof LatencyHistogram ? other.toJSON() : other;
    for (const [b, n] of data.buckets) this.counts[b]! += n;
    this.count += data.count;
    this.sum += data.sum;
    if (data.count) {
      this.min = Math.min(this.min, data.min);
      this.max = Math.max(this.max, data.max);
    }
    return this;
  }

  reset(): void {
    this.counts = new Uint32Array(BUCKETS);
    this.count = 0;
    this.sum = 0;
    this.min = Infinity;
    this.max = -Infinity;
  }

  toJSON(): HistogramData {
    const buckets: [number, number][] = [];
    this.counts.forEach((n, b) => {
      if (n) buckets.push([b, n]);
    });
    return { buckets, count: this.count, sum: this.sum, min: this.min, max: this.max };
  }

  static from(data: HistogramData): LatencyHistogram {
    return new LatencyHistogram().merge(data);
  }
}

/** A span of wall-clock time in epoch milliseconds, comparable across processes on one machine. */
export interface Span {
  startedAt: number;
  endedAt: number;
}

/** Wall-clock now in epoch milliseconds with sub-millisecond resolution. */
export const epochNow = (): number => performance.timeOrigin + performance.now();

/** The smallest span covering all of `spans` (several processes working on one phase). */
export function coveringSpan(spans: readonly Span[]): Span {
  if (spans.length === 0) throw new Error('no spans');
  return {
    startedAt: Math.min(...spans.map((s) => s.startedAt)),
    endedAt: Math.max(...spans.map((s) => s.endedAt)),
  };
}

/** Events per second over a span; 0 for an empty span. */
export function ratePerSecond(events: number, span: Span): number {
  const ms = span.endedAt - span.startedAt;
  return ms > 0 ? (events * 1000) / ms : 0;
}

/** Count of each distinct error message, for reports that must not drown in repeats. */
export class ErrorTally {
  private readonly counts = new Map<string, number>();
  total = 0;

  add(message: string): void {
    this.total++;
    this.counts.set(message, (this.counts.get(message) ?? 0) + 1);
  }

  merge(entries: Record<string, number>): this {
    for (const [m, n] of Object.entries(entries)) {
      this.total += n;
      this.counts.set(m, (this.counts.get(m) ?? 0) + n);
    }
    return this;
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }

  /** "3× ECONNRESET; 1× timeout", most frequent first, at most `limit` kinds. */
  toString(limit = 3): string {
    return [...this.counts]
      .sort((a, b) => b[1] - a[1])
      .slice(0, limit)
      .map(([m, n]) => `${n}× ${m}`)
      .join('; ');
  }
}
