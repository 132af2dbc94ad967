/**
 * CPU time of the processes a benchmark phase involves, read from /proc (Linux only), so a phase
 * can report CPU-µs per delivered message for each of them and for the whole machine.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** Clock ticks per second of /proc's utime/stime; 100 on every Linux we run on, asked once anyway. */
export const CLOCK_TICKS_PER_SECOND = (() => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isFinite(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

export interface ProcStat {
  pid: number;
  comm: string;
  ppid: number;
  /** utime + stime, in clock ticks: the process's own threads, not its children's. */
  cpuTicks: number;
  /** Clock ticks after boot: with the pid, tells a process from a later one that reused its pid. */
  startTime: number;
}

/** Parses one /proc/<pid>/stat line; the command name may hold spaces and parentheses. */
export function parseProcStat(line: string): ProcStat {
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  // Fields after the name, numbered as in proc(5) minus 3: state is 3, ppid 4, utime 14, stime 15, starttime 22.
  const rest = line.slice(close + 2).trim().split(' ');
  const field = (n: number) => Number(rest[n - 3]);
  return { pid: Number(line.slice(0, open).trim()), comm: line.slice(open + 1, close), ppid: field(4), cpuTicks: field(14) + field(15), startTime: field(22) };
}

export function readProcStat(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined; // gone, or not ours to read
  }
}

/** Every process on the machine (that we may read). */
export function listProcesses(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProcStat(Number(entry));
    if (stat) out.push(stat);
  }
  return out;
}

/** Busy and total ticks of all cores from /proc/stat; busy leaves out idle and iowait. */
export function readMachineTicks(): { busy: number; total: number } {
  const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // guest and guest_nice are already counted in user and nice.
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = cpu;
  const total = user + nice + system + idle + iowait + irq + softirq + steal;
  return { busy: total - idle - iowait, total };
}

/** CPU ticks of a set of processes at one moment, keyed by pid and start time. */
export type GroupSample = Map<string, number>;

export function sampleGroup(pids: Iterable<number>): GroupSample {
  const sample: GroupSample = new Map();
  for (const pid of pids) {
    const stat = readProcStat(pid);
    if (stat) sample.set(`${stat.pid}@${stat.startTime}`, stat.cpuTicks);
  }
  return sample;
}

/**
 * Ticks a group spent between two samples. A process that appeared in between spent all its ticks
 * inside the interval; one that vanished took its last ticks with it, so those are missed, and
 * counted in `vanished` to say so.
 */
export function groupDelta(start: GroupSample, end: GroupSample): { ticks: number; vanished: number } {
  let ticks = 0;
  for (const [key, value] of end) ticks += value - (start.get(key) ?? 0);
  let vanished = 0;
  for (const key of start.keys()) if (!end.has(key)) vanished++;
  return { ticks, vanished };
}
