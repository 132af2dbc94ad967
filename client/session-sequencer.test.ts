import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SessionSequencer } from './session-sequencer.js';

const m = (seq: number) => ({ seq, id: `m${seq}` });

describe('SessionSequencer', () => {
  it('hands out in-order messages at once', () => {
    const s = new SessionSequencer(0);
    expect(s.offer(m(1))).toEqual([m(1)]);
    expect(s.offer(m(2))).toEqual([m(2)]);
    expect(s.lastSeq).toBe(2);
  });

  it('buffers early arrivals until the gap fills, then hands them out in order', () => {
    const s = new SessionSequencer(0);
    expect(s.offer(m(3))).toEqual([]);
    expect(s.offer(m(2))).toEqual([]);
    expect(s.hasGap).toBe(true);
    expect(s.offer(m(1))).toEqual([m(1), m(2), m(3)]);
    expect(s.hasGap).toBe(false);
  });

  it('replaces a waiting copy with a newer state, and hands it out once', () => {
    const s = new SessionSequencer<{ seq: number; id: string }>(0);
    expect(s.offer({ seq: 2, id: 'old' })).toEqual([]);
    expect(s.offerNewer({ seq: 2, id: 'edited' })).toEqual([]);
    expect(s.offer({ seq: 2, id: 'old again' })).toEqual([]);
    expect(s.offer(m(1))).toEqual([m(1), { seq: 2, id: 'edited' }]);
    expect(s.offerNewer({ seq: 2, id: 'later' })).toEqual([]);
    expect(s.offerNewer({ seq: 3, id: 'first heard as an edit' })).toEqual([{ seq: 3, id: 'first heard as an edit' }]);
  });

  it('drops what it already handed out or buffered', () => {
    const s = new SessionSequencer(5);
    expect(s.offer(m(5))).toEqual([]);
    expect(s.offer(m(7))).toEqual([]);
    expect(s.offer(m(7))).toEqual([]);
    expect(s.offer(m(6))).toEqual([m(6), m(7)]);
    expect(s.offer(m(6))).toEqual([]);
  });

  it('skips forward when the consumer already has messages, keeping what follows', () => {
    const s = new SessionSequencer(0);
    s.offer(m(2));
    s.offer(m(4));
    expect(s.advanceTo(3)).toEqual([m(4)]);
    expect(s.advanceTo(1)).toEqual([]);
    expect(s.lastSeq).toBe(4);
  });

  it('hands out every seq exactly once, in order, whatever the arrival order and repeats', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 30 }), { maxLength: 120 }), (arrivals) => {
        const all = Array.from({ length: 30 }, (_, i) => i + 1);
        const s = new SessionSequencer<{ seq: number }>(0);
        const out = [...arrivals, ...all].flatMap((seq) => s.offer({ seq }));
        expect(out.map((x) => x.seq)).toEqual(all);
      }),
    );
  });
});
