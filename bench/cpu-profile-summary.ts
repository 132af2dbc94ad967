/**
 * Summarises a V8 `.cpuprofile` (what `node --cpu-prof` writes) as the functions with the most self
 * time, in text that can be pasted into docs/benchmarks.md without opening DevTools.
 *
 * Positions are V8's, in the code it ran: for our .ts files that is tsx's output, which puts a
 * module on very few lines, so a function is told apart by line and column, and the name is what
 * finds it in the source.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber?: number };
  children?: number[];
}

export interface CpuProfile {
  nodes: CpuProfileNode[];
  /** Microseconds, on the profiler's clock. */
  startTime: number;
  endTime: number;
  /** Node id of the stack top at each sample. */
  samples?: number[];
  /** Microseconds from the previous sample (the first: from startTime). */
  timeDeltas?: number[];
}

export interface FunctionCost {
  functionName: string;
  url: string;
  /** 1-based, as an editor shows them; 0 when V8 gave none. */
  line: number;
  column: number;
  selfMicros: number;
  /** Of the profile's whole sampled time, idle included. */
  shareOfTotal: number;
  /** Of the sampled time the thread was not idle: what the CPU was actually spent on. */
  shareOfBusy: number;
}

export interface ProfileSummary {
  totalMicros: number;
  idleMicros: number;
  samples: number;
  top: FunctionCost[];
}

export interface SummaryOptions {
  /** How many functions; default 25. */
  top?: number;
  /**
   * Count only samples taken inside these intervals, in µs of the profile's clock: V8 stamps samples
   * with the monotonic clock `process.hrtime` reads, so another process on the machine can say when
   * its phases ran. Default: the whole profile.
   */
  windows?: ReadonlyArray<readonly [number, number]>;
}

/** Self time per function (name + url + position: one function's re-optimised copies count once). */
export function summariseCpuProfile(profile: CpuProfile, options: SummaryOptions = {}): ProfileSummary {
  const { top = 25, windows } = options;
  const counted = (time: number) => !windows || windows.some(([from, to]) => time >= from && time < to);
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  // A sample stands for the time until the next one, as DevTools counts it; the last until endTime.
  const at: number[] = [];
  let t = profile.startTime;
  for (let i = 0; i < samples.length; i++) at.push((t += deltas[i] ?? 0));
  const costs = new Map<string, FunctionCost>();
  let totalMicros = 0;
  let idleMicros = 0;
  let sampleCount = 0;
  for (let i = 0; i < samples.length; i++) {
    const node = byId.get(samples[i]!);
    if (!node || !counted(at[i]!)) continue;
    sampleCount++;
    const micros = Math.max(0, (i + 1 < samples.length ? at[i + 1]! : Math.max(profile.endTime, at[i]!)) - at[i]!);
    totalMicros += micros;
    const { functionName, url, lineNumber, columnNumber = -1 } = node.callFrame;
    if (functionName === '(idle)') idleMicros += micros;
    const key = `${functionName}\u0000${url}\u0000${lineNumber}\u0000${columnNumber}`;
    const cost = costs.get(key) ?? { functionName, url, line: lineNumber + 1, column: columnNumber + 1, selfMicros: 0, shareOfTotal: 0, shareOfBusy: 0 };
    cost.selfMicros += micros;
    costs.set(key, cost);
  }
  const busyMicros = totalMicros - idleMicros;
  const ranked = [...costs.values()].sort((a, b) => b.selfMicros - a.selfMicros).slice(0, top);
  for (const c of ranked) {
    c.shareOfTotal = totalMicros > 0 ? c.selfMicros / totalMicros : 0;
    c.shareOfBusy = busyMicros > 0 && c.functionName !== '(idle)' ? c.selfMicros / busyMicros : 0;
  }
  return { totalMicros, idleMicros, samples: sampleCount, top: ranked };
}

/** A script's place, relative to `root` when it is under it: src/…, node_modules/…, node:…. */
export function shortUrl(url: string, root: string): string {
  if (!url.startsWith('file://')) return url;
  const file = fileURLToPath(url);
  const relative = path.relative(root, file);
  return relative.startsWith('..') ? file : relative;
}

export function formatProfileSummary(title: string, summary: ProfileSummary, root: string): string {
  const ms = (micros: number) => (micros / 1000).toFixed(1);
  const pct = (share: number) => `${(share * 100).toFixed(1)}%`;
  const lines = [
    `${title}: ${ms(summary.totalMicros)} ms sampled in ${summary.samples} samples, ${pct(summary.totalMicros > 0 ? summary.idleMicros / summary.totalMicros : 0)} idle`,
    '| self ms | % of total | % of busy | function | where |',
    '|---:|---:|---:|---|---|',
  ];
  for (const c of summary.top) {
    const where = c.url ? `${shortUrl(c.url, root)}${c.line > 0 ? `:${c.line}:${c.column}` : ''}` : '';
    lines.push(`| ${ms(c.selfMicros)} | ${pct(c.shareOfTotal)} | ${c.functionName === '(idle)' ? '' : pct(c.shareOfBusy)} | ${c.functionName || '(anonymous)'} | ${where} |`);
  }
  return lines.join('\n');
}
