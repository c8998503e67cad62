/** Closed-loop load: `concurrency` workers issue requests back to back for `durationMs`. */
export async function closedLoop(options: {
  concurrency: number;
  durationMs: number;
  request: (n: number) => Promise<boolean>;
}): Promise<{ completed: number; failed: number; seconds: number; latenciesMs: number[] }> {
  const latenciesMs: number[] = [];
  let completed = 0;
  let failed = 0;
  let n = 0;
  const start = performance.now();
  const end = start + options.durationMs;
  const worker = async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      const ok = await options.request(n++);
      latenciesMs.push(performance.now() - t0);
      if (ok) completed++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return { completed, failed, seconds: (performance.now() - start) / 1000, latenciesMs };
}

/** Closed-loop load over a fixed list of jobs: `concurrency` workers take the next job until none is left. */
export async function fixedCount(options: {
  concurrency: number;
  count: number;
  request: (n: number) => Promise<boolean>;
}): Promise<{ completed: number; failed: number; seconds: number; latenciesMs: number[] }> {
  const latenciesMs: number[] = [];
  let completed = 0;
  let failed = 0;
  let next = 0;
  const start = performance.now();
  const worker = async () => {
    while (next < options.count) {
      const n = next++;
      const t0 = performance.now();
      const ok = await options.request(n);
      latenciesMs.push(performance.now() - t0);
      if (ok) completed++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return { completed, failed, seconds: (performance.now() - start) / 1000, latenciesMs };
}
