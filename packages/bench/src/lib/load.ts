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
