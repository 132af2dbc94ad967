import { describe, expect, it } from 'vitest';
import { defaultBackoff, RetryPolicy } from './retry-policy.js';

describe('RetryPolicy', () => {
  it('counts a failure while the bus is up and waits the backoff of the failures so far', () => {
    const policy = new RetryPolicy(10, (n) => n * 100);
    expect(policy.afterFailure(0, true)).toEqual({ counted: true, failures: 1, delayMs: 100 });
    expect(policy.afterFailure(4, true)).toEqual({ counted: true, failures: 5, delayMs: 500 });
  });

  it('does not count a failure seen while the bus is down, and makes the row due at once', () => {
    const policy = new RetryPolicy(10, () => 5_000);
    expect(policy.afterFailure(3, false)).toEqual({ counted: false, failures: 3, delayMs: 0 });
  });

  it('falls back to the default backoff when a custom one throws or returns nonsense', () => {
    const errors: unknown[] = [];
    const throwing = new RetryPolicy(10, () => {
      throw new Error('bad backoff');
    }, (err) => errors.push(err));
    expect(throwing.afterFailure(1, true).delayMs).toBe(defaultBackoff(2));
    expect(errors).toHaveLength(1);
    for (const nonsense of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(new RetryPolicy(10, () => nonsense).afterFailure(0, true).delayMs).toBe(defaultBackoff(1));
    }
  });

  it('keeps the retry limit the store applies', () => {
    expect(new RetryPolicy(4, defaultBackoff).maxRetries).toBe(4);
  });
});
