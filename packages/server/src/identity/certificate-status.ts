/**
 * A process-wide count of certificate status changes (revocations, superseded renewals, revoked
 * station CAs). Whoever caches "this certificate is good" — the director authenticates a device once
 * per connection — keeps the generation it read before checking and trusts the cached answer only
 * while the generation is unchanged: any revocation anywhere makes every cached answer stale.
 *
 * It is bumped inside the revoking transaction (so that an answer cached before is dropped at once)
 * and again once the revocation has committed (so that an answer read from the database while the
 * transaction was still open is dropped as well). It counts changes made by this process only: a
 * revocation by another platform instance on the same PostgreSQL database does not bump it, which is
 * why such caches also expire after a few seconds.
 */
let generation = 0;

/** The current generation: read it before checking a certificate's status in the database. */
export function certificateStatusGeneration(): number {
  return generation;
}

/** A certificate's status changed (or is changing in an open transaction): cached answers are stale. */
export function certificateStatusChanged(): void {
  generation++;
}
