import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { AddressRotation } from './addresses.js';
import type { DeviceIdentity } from './device.js';
import type { EngineOptions, OpenOptions, OpenResult, PublishOptions, PublishResult } from './engine.js';
import {
  shareOf,
  widthPerWorker,
  type ReplyEnvelope,
  type WorkerRequest,
  type WorkerResults,
  type WorkerStatus,
} from './protocol.js';
import {
  ErrorTally,
  LatencyHistogram,
  coveringSpan,
  ratePerSecond,
  type LatencySummary,
  type Span,
} from './stats.js';

/** The compiled worker module LoadGenerator starts. */
export const WORKER_MODULE = fileURLToPath(new URL('./worker.js', import.meta.url));

/**
 * argv that runs `command` with the open-file limit raised to `limit`, or to the hard limit where
 * `limit` is above it (raising the hard limit needs privileges): a process holding N connections
 * needs N descriptors, and the usual soft limit is 1,024.
 */
export function withOpenFileLimit(limit: number, command: readonly string[]): [string, string[]] {
  return [
    'bash',
    ['-c', `ulimit -n ${limit} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"`, ...command],
  ];
}

export interface LoadGeneratorOptions {
  /** Worker processes; the fleet is dealt out among them (device g to worker g mod workers). */
  workers: number;
  identities: readonly DeviceIdentity[];
  /** Engine options; the source addresses are split among the workers. */
  engine: EngineOptions;
  /** Open-file limit asked for each worker. Default 200,000. */
  maxOpenFiles?: number;
  /** Node options for the workers (e.g. `--cpu-prof`). */
  nodeArgs?: string[];
}

export interface OpenReport extends Span {
  attempted: number;
  opened: number;
  retried: number;
  failed: number;
  resumed: number;
  /** First-pass connections per second across all workers (opened ÷ covering span). */
  rate: number;
  /** "3× ECONNRESET; …" */
  errors: string;
  connack: LatencySummary;
  handshake: LatencySummary;
}

export interface PublishReport extends Span {
  devices: number;
  acked: number;
  failed: number;
  unacknowledged: number;
  /** Acknowledged messages per second across all workers. */
  rate: number;
  errors: string;
  latency: LatencySummary;
}

interface Worker {
  child: ChildProcess;
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>;
  exited: boolean;
}

/**
 * The load generator: a fleet of virtual devices spread over worker processes (so that the
 * generator is not one event loop), driven from the parent, with the workers' figures added up.
 */
export class LoadGenerator {
  private seq = 0;

  private constructor(
    private readonly workers: Worker[],
    readonly devices: number,
  ) {}

  /** Process ids of the workers (for CPU and memory accounting). */
  get pids(): number[] {
    return this.workers.map((w) => w.child.pid!);
  }

  static async start(o: LoadGeneratorOptions): Promise<LoadGenerator> {
    const n = Math.max(1, o.workers);
    const addresses = AddressRotation.split(o.engine.sourceAddresses ?? [], n);
    const workers: Worker[] = [];
    for (let w = 0; w < n; w++) {
      const [cmd, args] = withOpenFileLimit(o.maxOpenFiles ?? 200_000, [
        process.execPath,
        ...(o.nodeArgs ?? []),
        WORKER_MODULE,
      ]);
      const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const worker: Worker = { child, pending: new Map(), exited: false };
      child.on('message', (m: ReplyEnvelope) => {
        const p = worker.pending.get(m.seq);
        if (!p) return;
        worker.pending.delete(m.seq);
        if (m.ok) p.resolve(m.result);
        else p.reject(new Error(`load worker ${w}: ${m.error}`));
      });
      child.on('exit', (code, signal) => {
        worker.exited = true;
        for (const p of worker.pending.values())
          p.reject(new Error(`load worker ${w} exited (${signal ?? code})`));
        worker.pending.clear();
      });
      workers.push(worker);
    }
    const generator = new LoadGenerator(workers, o.identities.length);
    try {
      await Promise.all(
        workers.map((_, w) =>
          generator.ask(w, {
            op: 'init',
            identities: o.identities.filter((_, g) => g % n === w),
            options: { ...o.engine, sourceAddresses: addresses[w]! },
          }),
        ),
      );
    } catch (err) {
      await generator.stop();
      throw err;
    }
    return generator;
  }

  private ask<K extends WorkerRequest['op']>(
    w: number,
    request: Extract<WorkerRequest, { op: K }>,
  ): Promise<WorkerResults[K]> {
    const worker = this.workers[w]!;
    if (worker.exited) return Promise.reject(new Error(`load worker ${w} is not running`));
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      worker.pending.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      worker.child.send({ seq, request });
    });
  }

  private all<K extends WorkerRequest['op']>(
    request: (w: number) => Extract<WorkerRequest, { op: K }>,
  ): Promise<WorkerResults[K][]> {
    return Promise.all(this.workers.map((_, w) => this.ask<K>(w, request(w))));
  }

  /**
   * Connect devices [from, from + count) of the fleet; `concurrency` is the total width, split
   * over the workers. The rate is over the first pass of every worker together.
   */
  async open(o: OpenOptions): Promise<OpenReport> {
    const n = this.workers.length;
    const results = await this.all<'open'>((w) => ({
      op: 'open',
      options: { ...o, ...shareOf(o.from, o.count, w, n), concurrency: widthPerWorker(o.concurrency, n) },
    }));
    return openReport(results);
  }

  /** Every connected device publishes in a closed loop (see LoadEngine.publish). */
  async publish(o: PublishOptions): Promise<PublishReport> {
    const results = await this.all<'publish'>(() => ({ op: 'publish', options: o }));
    return publishReport(results);
  }

  /** Disconnect every device; returns how many were connected. */
  async closeAll(): Promise<number> {
    const r = await this.all<'close'>(() => ({ op: 'close' }));
    return r.reduce((a, b) => a + b.closed, 0);
  }

  status(): Promise<WorkerStatus[]> {
    return this.all<'status'>(() => ({ op: 'status' }));
  }

  /** End the workers (their connections close with them). */
  async stop(): Promise<void> {
    await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.exited) return resolve();
            w.child.once('exit', () => resolve());
            w.child.kill('SIGTERM');
          }),
      ),
    );
  }
}

export function openReport(results: readonly OpenResult[]): OpenReport {
  const span = coveringSpan(results);
  const sum = (f: (r: OpenResult) => number) => results.reduce((a, r) => a + f(r), 0);
  const connack = new LatencyHistogram();
  const handshake = new LatencyHistogram();
  const errors = new ErrorTally();
  for (const r of results) {
    connack.merge(r.connack);
    handshake.merge(r.handshake);
    errors.merge(r.errors);
  }
  const opened = sum((r) => r.opened);
  return {
    ...span,
    attempted: sum((r) => r.attempted),
    opened,
    retried: sum((r) => r.retried),
    failed: sum((r) => r.failed),
    resumed: sum((r) => r.resumed),
    rate: ratePerSecond(opened, span),
    errors: errors.toString(),
    connack: connack.summary(),
    handshake: handshake.summary(),
  };
}

export function publishReport(results: readonly PublishResult[]): PublishReport {
  const span = coveringSpan(results);
  const sum = (f: (r: PublishResult) => number) => results.reduce((a, r) => a + f(r), 0);
  const latency = new LatencyHistogram();
  const errors = new ErrorTally();
  for (const r of results) {
    latency.merge(r.latency);
    errors.merge(r.errors);
  }
  const acked = sum((r) => r.acked);
  // Each worker measured the same window length; their windows start within a few ms.
  const windowMs = Math.max(...results.map((r) => r.endedAt - r.startedAt));
  return {
    ...span,
    devices: sum((r) => r.devices),
    acked,
    failed: sum((r) => r.failed),
    unacknowledged: sum((r) => r.unacknowledged),
    rate: windowMs > 0 ? (acked * 1000) / windowMs : 0,
    errors: errors.toString(),
    latency: latency.summary(),
  };
}
