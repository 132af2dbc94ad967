/**
 * One connection's frame budget: a token bucket of `burst` frames refilled at `perSecond`, checked
 * on the hot path of every client frame, so it is synchronous and allocates nothing.
 *
 * A refused frame still costs a token. That lets the balance go negative: a client that keeps
 * sending while it is refused only digs itself deeper, and once it owes a whole burst it is
 * `exhausted` (the owner drops it). A client that backs off pays its debt back at `perSecond` and
 * is served again; it never needs a separate strike counter or timer.
 */

/** `ok`: go ahead; `refused`: refuse this frame; `exhausted`: the client keeps exceeding, drop it. */
export type FrameBudgetVerdict = 'ok' | 'refused' | 'exhausted';

export class FrameBudget {
  private tokens: number;
  private refilledAt: number;

  /** `now` in milliseconds from any monotonic clock, the same one `take` is given. */
  constructor(
    readonly perSecond: number,
    readonly burst: number,
    now: number,
  ) {
    if (!(perSecond > 0) || !(burst >= 1)) throw new RangeError('a frame budget needs perSecond > 0 and burst >= 1');
    this.tokens = burst;
    this.refilledAt = now;
  }

  take(now: number): FrameBudgetVerdict {
    const elapsed = now - this.refilledAt;
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.perSecond) / 1000);
      this.refilledAt = now;
    }
    this.tokens -= 1;
    if (this.tokens >= 0) return 'ok';
    return this.tokens <= -this.burst ? 'exhausted' : 'refused';
  }

  /** Seconds until the next frame would be accepted if the client sent nothing meanwhile. */
  secondsUntilAvailable(): number {
    return this.tokens >= 1 ? 0 : Math.ceil((1 - this.tokens) / this.perSecond);
  }
}
