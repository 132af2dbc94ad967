/**
 * Per-user request budgets: a user who floods the API or sends gets RATE_LIMITED (429
 * problem+json, or an error on /user/queue/error) instead of the database's time. One instance is
 * one budget: the send budget is a single instance shared by the REST send routes and STOMP
 * /app/chat.send, so a user cannot double their sends by using both transports. Counted in
 * memory per instance: behind N instances a user gets up to N budgets, which bounds a flood
 * without a shared counter on the hot path of every request.
 */
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { ChatError } from '../chat/chat-errors.js';

export class UserRateLimiter {
  private readonly limiter: RateLimiterMemory | undefined;

  /** `perMinute` 0 turns the limit off. */
  constructor(
    readonly perMinute: number,
    private readonly what: string,
  ) {
    this.limiter = perMinute > 0 ? new RateLimiterMemory({ points: perMinute, duration: 60, keyPrefix: what }) : undefined;
  }

  /** Takes one unit of `user`'s budget, or throws RATE_LIMITED saying when to retry. */
  async take(user: string): Promise<void> {
    if (!this.limiter) return;
    try {
      await this.limiter.consume(user);
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err;
      const retryAfterSeconds = Math.max(1, Math.ceil(err.msBeforeNext / 1000));
      throw new ChatError('RATE_LIMITED', `at most ${this.perMinute} ${this.what} per minute; retry in ${retryAfterSeconds} s`, { retryAfterSeconds });
    }
  }
}
