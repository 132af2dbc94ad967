import { describe, expect, it } from 'vitest';
import { formatProfileSummary, summariseCpuProfile, type CpuProfile } from './cpu-profile-summary.js';
import { groupDelta, parseProcStat } from './proc-cpu.js';

const frame = (functionName: string, url = '', lineNumber = -1, columnNumber = -1) => ({ functionName, url, lineNumber, columnNumber });

// root → idle, root → handle (two copies of the same function, as after a deopt) → parse; and an
// anonymous function on handle's line, which is not handle
const profile: CpuProfile = {
  nodes: [
    { id: 1, callFrame: frame('(root)'), children: [2, 3, 5, 6] },
    { id: 2, callFrame: frame('(idle)') },
    { id: 3, callFrame: frame('handle', 'file:///repo/src/a.ts', 9, 4), children: [4] },
    { id: 4, callFrame: frame('parse', 'file:///repo/node_modules/x/index.js', 0, 10) },
    { id: 5, callFrame: frame('handle', 'file:///repo/src/a.ts', 9, 4) },
    { id: 6, callFrame: frame('', 'file:///repo/src/a.ts', 9, 80) },
  ],
  startTime: 1000,
  // samples at 1100, 1200, 1300, 1600, 1700, 1710; the last lasts until endTime
  samples: [3, 4, 2, 5, 4, 6],
  timeDeltas: [100, 100, 100, 300, 100, 10],
  endTime: 1900,
};

describe('summariseCpuProfile', () => {
  it('charges each sample the time until the next, and merges copies of one function', () => {
    const summary = summariseCpuProfile(profile);
    expect(summary.totalMicros).toBe(800);
    expect(summary.idleMicros).toBe(300);
    expect(summary.top.map((c) => [c.functionName, c.selfMicros, c.line, c.column])).toEqual([
      ['(idle)', 300, 0, 0],
      ['handle', 200, 10, 5],
      ['', 190, 10, 81],
      ['parse', 110, 1, 11],
    ]);
    const handle = summary.top.find((c) => c.functionName === 'handle')!;
    expect(handle.shareOfTotal).toBeCloseTo(200 / 800);
    expect(handle.shareOfBusy).toBeCloseTo(200 / 500);
  });

  it('keeps only the top N and formats paths relative to the project', () => {
    const summary = summariseCpuProfile(profile, { top: 1 });
    expect(summary.top).toHaveLength(1);
    const text = formatProfileSummary('service#1', summary, '/repo');
    expect(text).toContain('| 0.3 | 37.5% |  | (idle) |  |');
    expect(formatProfileSummary('service#1', summariseCpuProfile(profile), '/repo')).toContain('| 0.2 | 25.0% | 40.0% | handle | src/a.ts:10:5 |');
  });

  it('counts only the samples taken inside the windows it is given', () => {
    const summary = summariseCpuProfile(profile, { windows: [[1000, 1150], [1600, 1705]] });
    expect(summary.samples).toBe(3);
    expect(summary.top.map((c) => [c.functionName, c.selfMicros])).toEqual([['handle', 200], ['parse', 10]]);
  });

  it('copes with a profile without samples', () => {
    expect(summariseCpuProfile({ nodes: [], startTime: 0, endTime: 0 })).toEqual({ totalMicros: 0, idleMicros: 0, samples: 0, top: [] });
  });
});

describe('/proc CPU accounting', () => {
  it('parses a stat line whose command name holds spaces and parentheses', () => {
    const line = '4242 (node (x) y) S 17 4242 4242 0 -1 4194304 100 0 0 0 250 75 3 4 20 0 11 0 987654 1000 10';
    expect(parseProcStat(line)).toEqual({ pid: 4242, comm: 'node (x) y', ppid: 17, cpuTicks: 325, startTime: 987654 });
  });

  it('counts a process that appeared whole, and says how many vanished', () => {
    const start = new Map([['1@10', 100], ['2@20', 50]]);
    const end = new Map([['1@10', 130], ['3@30', 7]]);
    expect(groupDelta(start, end)).toEqual({ ticks: 37, vanished: 1 });
  });
});
