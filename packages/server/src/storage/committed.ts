/**
 * Kysely has no commit hook. Hooks that run inside a caller's transaction (a device status
 * change) use this to act once their change is visible outside it: `visible` reads through the
 * shared connection (SQLite: that read waits for the transaction to end; PostgreSQL: it is polled
 * every 25 ms). After 30 s without the change it was rolled back, and nothing is done.
 */
export function whenCommitted(
  visible: () => Promise<boolean>,
  fn: () => void,
  onError: (err: unknown) => void,
): void {
  const started = Date.now();
  const poll = async (): Promise<void> => {
    if (await visible()) return fn();
    if (Date.now() - started < 30_000) setTimeout(() => void poll().catch(onError), 25);
  };
  setTimeout(() => void poll().catch(onError), 0);
}
