/**
 * CPU-µs per delivered message for each process a benchmark phase involves: the service instances,
 * the PostgreSQL backends of the benchmark's database, RabbitMQ, the load generator, and the whole
 * machine as a check that the processes listed account for most of the CPU the phase used.
 */
import pg from 'pg';
import { CLOCK_TICKS_PER_SECOND, groupDelta, listProcesses, readMachineTicks, readProcStat, sampleGroup, type GroupSample } from './proc-cpu.js';

export interface PhaseCpuOptions {
  servicePids: number[];
  /** The benchmark runs on this PostgreSQL server (admin URL) in this database. */
  postgres?: { adminUrl: string; database: string };
  rabbitmq?: boolean;
}

export interface CpuSample {
  groups: Map<string, GroupSample>;
  machine: { busy: number; total: number };
  /** When, in µs of the monotonic clock that V8's CPU profiles use too. */
  atMicros: number;
}

const SERVER_SIDE = (name: string) => name.startsWith('service#') || name === 'postgres' || name === 'rabbitmq';

export class PhaseCpu {
  private constructor(
    private readonly servicePids: number[],
    private readonly admin: pg.Client | undefined,
    private readonly database: string | undefined,
    private readonly postmasterPid: number | undefined,
    private readonly rabbitPid: number | undefined,
    /** Why a process that should be there has no row: said under the table, not silently dropped. */
    readonly notes: string[],
  ) {}

  static async create(options: PhaseCpuOptions): Promise<PhaseCpu> {
    const notes: string[] = [];
    let admin: pg.Client | undefined;
    let postmasterPid: number | undefined;
    if (options.postgres) {
      // Its own backend sits in the admin database, so it never counts as the benchmark's.
      admin = new pg.Client({ connectionString: options.postgres.adminUrl });
      await admin.connect();
      const { rows } = await admin.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'");
      // PostgreSQL on another host, or in a container with its own pid namespace, answers with pids that are not ours to read.
      const local = rows.map((r) => readProcStat(r.pid)).find((s) => s && /^postgres|^postmaster/.test(s.comm));
      if (local) postmasterPid = local.ppid;
      else {
        notes.push('PostgreSQL: its processes are not on this machine, no row');
        await admin.end();
        admin = undefined;
      }
    }
    let rabbitPid: number | undefined;
    if (options.rabbitmq) {
      // The broker is the oldest beam.smp: rabbitmqctl and other CLI tools start short-lived ones.
      const beams = listProcesses().filter((p) => p.comm === 'beam.smp').sort((a, b) => a.startTime - b.startTime);
      rabbitPid = beams[0]?.pid;
      if (rabbitPid === undefined) notes.push('RabbitMQ: no beam.smp process on this machine, no row');
    }
    return new PhaseCpu(options.servicePids, admin, options.postgres?.database, postmasterPid, rabbitPid, notes);
  }

  async sample(): Promise<CpuSample> {
    const groups = new Map<string, GroupSample>();
    this.servicePids.forEach((pid, i) => groups.set(`service#${i + 1}`, sampleGroup([pid])));
    if (this.admin && this.postmasterPid !== undefined) {
      // Backends come and go with the pools; the set is taken again at every sample.
      // Parallel workers serve our queries; autovacuum workers count with the server's background.
      const { rows } = await this.admin.query<{ pid: number; ours: boolean }>(
        `SELECT pid, datname IS NOT DISTINCT FROM $1 AND backend_type NOT LIKE 'autovacuum%' AS ours FROM pg_stat_activity
          WHERE datname = $1 OR datname IS NULL OR backend_type LIKE 'autovacuum%'`,
        [this.database],
      );
      groups.set('postgres', sampleGroup(rows.filter((r) => r.ours).map((r) => r.pid)));
      // WAL writer, checkpointer, autovacuum: they work for every database on the server, ours included.
      groups.set('pg background', sampleGroup([this.postmasterPid, ...rows.filter((r) => !r.ours).map((r) => r.pid)]));
    }
    if (this.rabbitPid !== undefined) groups.set('rabbitmq', sampleGroup([this.rabbitPid]));
    groups.set('loadgen', sampleGroup([process.pid]));
    return { groups, machine: readMachineTicks(), atMicros: Number(process.hrtime.bigint() / 1000n) };
  }

  /** One line: µs per delivered message for each process, their server-side sum, and the machine's. */
  static format(start: CpuSample, end: CpuSample, delivered: number): string {
    const perMessage = (ticks: number) => (delivered > 0 ? Math.round((ticks * 1e6) / CLOCK_TICKS_PER_SECOND / delivered) : NaN);
    const show = (n: number) => (Number.isFinite(n) ? n.toLocaleString('en-US') : '-');
    const parts: string[] = [];
    const extras: string[] = [];
    let serverSide = 0;
    let listed = 0;
    let services = 0;
    let loadgen = 0;
    for (const [name, endSample] of end.groups) {
      const { ticks, vanished } = groupDelta(start.groups.get(name) ?? new Map(), endSample);
      listed += ticks;
      if (name.startsWith('service#')) services += ticks;
      if (name === 'loadgen') loadgen += ticks;
      const text = `${name} ${show(perMessage(ticks))}${vanished > 0 ? ` (+${vanished} exited, unread)` : ''}`;
      if (SERVER_SIDE(name)) serverSide += ticks;
      if (name === 'pg background') extras.push(text);
      else parts.push(text);
    }
    parts.push(`server-side total ${show(perMessage(serverSide))}`);
    // The load generator runs the same code whatever build is measured, so its cost per message
    // tracks how fast the machine was during the phase; this ratio compares builds across runs.
    if (loadgen > 0) extras.push(`services ÷ loadgen ${(services / loadgen).toFixed(2)}`);
    const machineBusy = end.machine.busy - start.machine.busy;
    const machineTotal = end.machine.total - start.machine.total;
    extras.push(
      `machine ${show(perMessage(machineBusy))} (${machineTotal > 0 ? Math.round((machineBusy / machineTotal) * 100) : '-'} % busy; the processes listed are ${machineBusy > 0 ? Math.round((listed / machineBusy) * 100) : '-'} % of it)`,
    );
    return `${parts.join('  ')}; ${extras.join('; ')}`;
  }

  async close(): Promise<void> {
    await this.admin?.end();
  }
}
