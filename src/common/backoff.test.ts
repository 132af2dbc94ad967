import { describe, expect, it } from 'vitest';
import { backoffMs } from './backoff.js';

describe('backoffMs', () => {
  const backoff = { initialMs: 100, maxMs: 5_000 };

  it('starts at initialMs and doubles with each further failure', () => {
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffMs(n, backoff))).toEqual([100, 200, 400, 800, 1_600, 3_200]);
  });

  it('never exceeds maxMs', () => {
    expect(backoffMs(7, backoff)).toBe(5_000);
    expect(backoffMs(1_000, backoff)).toBe(5_000);
  });

  it('stays finite for any number of failures, and 0 for an initialMs of 0', () => {
    expect(backoffMs(Number.MAX_SAFE_INTEGER, { initialMs: 1, maxMs: Number.MAX_VALUE })).toBe(2 ** 30);
    expect(backoffMs(1_000, { initialMs: 0, maxMs: 1_000 })).toBe(0);
  });

  it('treats a count below 1 as the first failure', () => {
    expect(backoffMs(0, backoff)).toBe(100);
    expect(backoffMs(-3, backoff)).toBe(100);
  });
});
