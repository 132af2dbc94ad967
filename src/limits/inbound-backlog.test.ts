import { describe, expect, it } from 'vitest';
import { InboundBacklog } from './inbound-backlog.js';

const limits = { pauseFrames: 4, pauseBytes: 100, maxFrames: 8, maxBytes: 1000 };

describe('InboundBacklog', () => {
  it('gives items back in arrival order across growth and wrap-around', () => {
    const backlog = new InboundBacklog<number>(limits);
    const out: number[] = [];
    let next = 0;
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < (round % 7) + 1; i++) backlog.push(next++, 1);
      for (let i = 0; i < (round % 5) + 1; i++) {
        const item = backlog.shift();
        if (item !== undefined) out.push(item);
      }
    }
    for (let item = backlog.shift(); item !== undefined; item = backlog.shift()) out.push(item);
    expect(out).toEqual(Array.from({ length: next }, (_, i) => i));
    expect(backlog.length).toBe(0);
    expect(backlog.bytes).toBe(0);
  });

  it('asks to pause above either mark, allows resuming at half of both, and overflows above either maximum', () => {
    const backlog = new InboundBacklog<string>(limits);
    for (let i = 0; i < 4; i++) backlog.push('f', 10);
    expect(backlog.abovePauseMark).toBe(false);
    backlog.push('f', 10);
    expect(backlog.abovePauseMark).toBe(true);
    expect(backlog.belowResumeMark).toBe(false);
    for (let i = 0; i < 3; i++) backlog.shift();
    expect(backlog.belowResumeMark).toBe(true);

    const bytes = new InboundBacklog<string>(limits);
    bytes.push('big', 101);
    expect(bytes.abovePauseMark).toBe(true);
    bytes.push('huge', 900);
    expect(bytes.overflowing).toBe(true);

    const frames = new InboundBacklog<string>(limits);
    for (let i = 0; i < 8; i++) frames.push('f', 1);
    expect(frames.overflowing).toBe(false);
    frames.push('f', 1);
    expect(frames.overflowing).toBe(true);
  });
});
