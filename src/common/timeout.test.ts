import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { withTimeout } from './timeout.js';

describe('withTimeout', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const late = (): Error => new Error('too late');

  it('settles like the promise when it settles in time, and clears its timer', async () => {
    await expect(withTimeout(Promise.resolve(42), 1_000, late)).resolves.toBe(42);
    await expect(withTimeout(Promise.reject(new Error('no')), 1_000, late)).rejects.toThrow('no');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects with the given error once the time is up', async () => {
    const bounded = withTimeout(new Promise<never>(() => undefined), 1_000, late);
    const outcome = expect(bounded).rejects.toThrow('too late');
    await vi.advanceTimersByTimeAsync(999);
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    await outcome;
  });

  it('leaves no unhandled rejection when the promise fails after the timeout', async () => {
    vi.useRealTimers();
    const unhandled = vi.fn();
    process.on('unhandledRejection', unhandled);
    try {
      let fail: (err: Error) => void = () => undefined;
      const slow = new Promise<never>((_, reject) => (fail = reject));
      const bounded = withTimeout(slow, 10, late);
      await expect(bounded).rejects.toThrow('too late');
      fail(new Error('failed after all'));
      // Node reports an unhandled rejection once the microtasks have run: give it a macrotask.
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).not.toHaveBeenCalled();
    } finally {
      process.off('unhandledRejection', unhandled);
    }
  });
});
