import { describe, expect, it } from 'vitest';
import { FrameBudget } from './frame-budget.js';

describe('FrameBudget', () => {
  it('accepts a burst at once, then refuses, and drops a client that keeps sending while refused', () => {
    const budget = new FrameBudget(10, 5, 0);
    const verdicts = Array.from({ length: 11 }, () => budget.take(0));
    expect(verdicts).toEqual([...Array(5).fill('ok'), ...Array(4).fill('refused'), 'exhausted', 'exhausted']);
  });

  it('refills at the sustained rate, so a client at that rate is never refused', () => {
    const budget = new FrameBudget(10, 2, 0);
    for (let ms = 0; ms <= 10_000; ms += 100) expect(budget.take(ms)).toBe('ok');
  });

  it('serves a client that backs off again once its debt is paid back, and says when', () => {
    const budget = new FrameBudget(10, 5, 0);
    for (let i = 0; i < 8; i++) budget.take(0); // 5 ok, 3 refused: 3 tokens owed
    expect(budget.secondsUntilAvailable()).toBe(1); // 4 tokens at 10/s
    expect(budget.take(300)).toBe('refused');
    expect(budget.take(1_000)).toBe('ok');
  });
});
