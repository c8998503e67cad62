import type { DeviceIdentity } from './device.js';
import type { EngineOptions, OpenOptions, OpenResult, PublishOptions, PublishResult } from './engine.js';

/** What the load generator asks a worker process (over the Node IPC channel). */
export type WorkerRequest =
  | { op: 'init'; identities: DeviceIdentity[]; options: EngineOptions }
  | { op: 'open'; options: OpenOptions }
  | { op: 'publish'; options: PublishOptions }
  | { op: 'close' }
  | { op: 'status' };

export interface WorkerStatus {
  pid: number;
  /** Devices connected now. */
  open: number;
  /** Connections closed by the broker so far. */
  dropped: number;
  rssBytes: number;
  /** CPU time the process used so far (user + system), microseconds. */
  cpuMicros: number;
}

export interface WorkerResults {
  init: { devices: number };
  open: OpenResult;
  publish: PublishResult;
  close: { closed: number };
  status: WorkerStatus;
}

export interface RequestEnvelope {
  seq: number;
  request: WorkerRequest;
}

export type ReplyEnvelope =
  { seq: number; ok: true; result: unknown } | { seq: number; ok: false; error: string };

/**
 * Which of devices [from, from + count) a worker holds, as positions in its own list, when device
 * `g` of the fleet went to worker `g mod workers` at position `floor(g / workers)`.
 */
export function shareOf(
  from: number,
  count: number,
  worker: number,
  workers: number,
): { from: number; count: number } {
  const to = from + count;
  const first = from + ((((worker - from) % workers) + workers) % workers);
  if (count <= 0 || first >= to) return { from: Math.ceil((from - worker) / workers), count: 0 };
  return { from: (first - worker) / workers, count: Math.floor((to - 1 - first) / workers) + 1 };
}

/** Split `n` (connections being set up at once) over `workers`, each at least 1. */
export const widthPerWorker = (n: number, workers: number): number => Math.max(1, Math.ceil(n / workers));
