/** How long to wait before trying again after failures in a row. Pure: no timers, no randomness. */

export interface Backoff {
  /** The pause after the first failure. */
  initialMs: number;
  /** The longest pause. */
  maxMs: number;
}

/**
 * The pause after the `failures`-th failure in a row (1, 2, …): `initialMs`, doubling with each
 * further failure, at most `maxMs`. The exponent is capped so that a long outage never computes
 * Infinity (or NaN, with an `initialMs` of 0).
 */
export function backoffMs(failures: number, backoff: Backoff): number {
  const doublings = Math.min(Math.max(failures - 1, 0), 30);
  return Math.min(backoff.maxMs, backoff.initialMs * 2 ** doublings);
}
