/** How both send-queue drivers wait between attempts at a queued send, and what counts as an outage. */
import { ChatError } from '../chat/chat-errors.js';

export interface SendQueueRetryOptions {
  /** Attempts at a send that fails for a reason other than an outage before it is dead. */
  maxAttempts: number;
  /** First and longest pause between attempts. */
  retryMinMs: number;
  retryMaxMs: number;
}

/** A ChatError that says "not now" rather than "never": the send is kept and tried again. */
export const isOutage = (err: unknown): boolean => err instanceof ChatError && err.status === 503;

/** Pauses between attempts that `wakeAll` ends early, so a stopping queue does not wait them out. */
export class RetryPauses {
  private readonly sleepers = new Set<() => void>();

  sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  wakeAll(): void {
    for (const wake of [...this.sleepers]) wake();
  }
}
