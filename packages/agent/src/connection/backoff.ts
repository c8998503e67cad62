/** How reconnection attempts are spaced. */
export interface BackoffPolicy {
  /** The first retry waits up to this long. */
  initialMs: number;
  /** No retry waits longer than this. */
  maxMs: number;
  /** Each further failure multiplies the ceiling by this. */
  factor: number;
  /** A connection that stays up this long resets the attempt count: the next loss retries quickly again. */
  resetAfterMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = {
  initialMs: 1000,
  maxMs: 120_000,
  factor: 2,
  resetAfterMs: 60_000,
};

/** The ceiling of the delay before retry number `attempt` (1 = the first retry). */
export function backoffCeiling(attempt: number, policy: Omit<BackoffPolicy, 'resetAfterMs'>): number {
  const n = Math.max(1, Math.floor(attempt));
  // Cap the exponent so that a device offline for weeks never computes Infinity.
  const grown = policy.initialMs * policy.factor ** Math.min(n - 1, 64);
  return Math.max(0, Math.min(policy.maxMs, grown));
}

/**
 * Exponential backoff with full jitter: the delay before retry number `attempt` is drawn uniformly
 * from [0, ceiling), where the ceiling starts at `initialMs`, grows by `factor` per attempt and
 * stops at `maxMs`. Spreading retries over the whole interval keeps a fleet that lost the gateway
 * at the same moment from coming back at the same moment. Pure: `random` (uniform in [0, 1)) is the
 * only source of chance.
 */
export function backoffDelay(
  attempt: number,
  policy: Omit<BackoffPolicy, 'resetAfterMs'>,
  random: () => number = Math.random,
): number {
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.floor(backoffCeiling(attempt, policy) * r);
}
