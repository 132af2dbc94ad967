/**
 * What a failed publish does to its outbox row (docs/architecture.md, "The path of a message").
 *
 * - A failure seen while the bus reports itself down is the outage, not the row's fault: it is not
 *   counted, and the row is due again at once (the relay claims nothing until the bus is back). A
 *   broker outage must not kill every row.
 * - Otherwise it counts, and the row waits `backoff(failures)` before the next attempt.
 * - A row is dead once its counted failures reach `maxRetries`: kept, counted, never published.
 *   The store applies that rule in the same statement that records the failure
 *   (`OutboxStore.markFailed`), against the row's stored count.
 */

import { backoffMs } from '../common/backoff.js';

/** Delay before attempt n+1 after the n-th failure (n ≥ 1), in ms. */
export type Backoff = (failures: number) => number;

/** min(60 s, 2^n s) after the n-th failure. */
export function defaultBackoff(failures: number): number {
  return backoffMs(failures, { initialMs: 2_000, maxMs: 60_000 });
}

export interface RetryDecision {
  /** Whether this failure counts against the row's retries. */
  readonly counted: boolean;
  /** The row's counted failures, this one included. */
  readonly failures: number;
  /** How long until the row is due again. */
  readonly delayMs: number;
}

export class RetryPolicy {
  constructor(
    readonly maxRetries: number,
    private readonly backoff: Backoff,
    /** Told when a custom backoff throws (the default is used then, as for a negative or non-finite delay). */
    private readonly onBackoffError: (err: unknown) => void = () => undefined,
  ) {}

  /** The decision for a row that has failed `retryCount` times before this failure. */
  afterFailure(retryCount: number, busHealthy: boolean): RetryDecision {
    if (!busHealthy) return { counted: false, failures: retryCount, delayMs: 0 };
    const failures = retryCount + 1;
    return { counted: true, failures, delayMs: this.backoffFor(failures) };
  }

  /** A misbehaving custom backoff must not lose a batch's outcome: fall back to the default. */
  private backoffFor(failures: number): number {
    try {
      const ms = this.backoff(failures);
      if (Number.isFinite(ms) && ms >= 0) return ms;
    } catch (err) {
      this.onBackoffError(err);
    }
    return defaultBackoff(failures);
  }
}
