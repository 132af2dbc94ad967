/**
 * `npm run bench`: throughput, send→deliver latency and memory per idle connection, measured over
 * real STOMP connections against the real service running as separate processes.
 *
 * Defaults to PostgreSQL + RabbitMQ on this machine when they answer (2 instances: senders on one,
 * receivers on the other, so every message crosses the broker); `BENCH_STORE=pglite` measures the
 * embedded default. Knobs (env): BENCH_PAIRS, BENCH_SECONDS, BENCH_WINDOW, BENCH_RATE, BENCH_IDLE,
 * BENCH_INSTANCES, BENCH_PROFILE=1 (a V8 CPU profile of every instance, summarised at the end).
 * Prints figures, CPU per delivered message among them; asserts nothing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { CLOCK_TICKS_PER_SECOND, readProcStat } from './proc-cpu.js';
import { startServiceProcess, type ServiceProcess } from '../test/support/service-process.js';
import { createTestDatabase, type TestDatabase } from '../test/support/test-database.js';
import { deleteQueues } from '../test/support/test-queues.js';
import { LoadClient } from './stomp-load-client.js';
import { PhaseCpu } from './phase-cpu.js';
import { formatProfileSummary, summariseCpuProfile, type CpuProfile } from './cpu-profile-summary.js';

const env = process.env;
const PAIRS = Number(env.BENCH_PAIRS ?? 200);
const SECONDS = Number(env.BENCH_SECONDS ?? 15);
const WINDOW = Number(env.BENCH_WINDOW ?? 8);
const REQUESTED_IDLE = Number(env.BENCH_IDLE ?? 2000);
// Each idle connection holds a file descriptor here and in the service (same limit, inherited).
const IDLE = Math.max(0, Math.min(REQUESTED_IDLE, openFileLimit() - 2 * PAIRS - 500));
const IDLE_HEARTBEAT_MS = Number(env.BENCH_IDLE_HEARTBEAT_MS ?? 10_000);
const PG_URL = env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const AMQP_URL = env.BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const reachable = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setTimeout(1000);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
    s.once('timeout', () => (s.destroy(), resolve(false)));
  });

function percentile(sorted: number[], q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** The i-th client source address: 127.1.0.1, 127.1.0.2, …, 250 per /24, so 12,750 per /16. */
function spreadAddress(i: number): string {
  const host = (i % 250) + 1;
  const net = Math.floor(i / 250);
  return `127.${1 + Math.floor(net / 256)}.${net % 256}.${host}`;
}

/** Open files this process may hold: each idle connection costs one here and one in the service. */
function openFileLimit(): number {
  const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  return Number(line?.split(/\s+/)[3] ?? Number.POSITIVE_INFINITY);
}

function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

async function main(): Promise<void> {
  const usePostgres = env.BENCH_STORE !== 'pglite' && (await reachable(5432));
  const useRabbit = usePostgres && env.BENCH_BUS !== 'memory' && (await reachable(5672));
  const instances = Number(env.BENCH_INSTANCES ?? (useRabbit ? 2 : 1));
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const sign = (email: string) =>
    new SignJWT({ email }).setProtectedHeader({ alg: 'ES256' }).setIssuer('https://idp.bench.local').setAudience('chat-service').setIssuedAt().setExpirationTime('2h').sign(privateKey);

  // The service names the dead-letter queue after the send queue: `.queue` becomes `.dead` (README, SEND_QUEUE).
  const queuePrefix = `bench.${randomUUID().slice(0, 8)}.send`;
  const sendQueue = `${queuePrefix}.queue`;
  const deadLetterQueue = `${queuePrefix}.dead`;
  let database: TestDatabase | undefined;
  let dataDir: string | undefined;
  const servers: ServiceProcess[] = [];
  let cpu: PhaseCpu | undefined;
  const phaseWindows: Array<[number, number]> = [];
  // Kept after the run: the profiles are for DevTools too, not only for the summary printed here.
  const profileDir = env.BENCH_PROFILE ? fs.mkdtempSync(path.join(os.tmpdir(), 'chat-bench-cpuprofile-')) : undefined;
  // The service process helper passes SERVICE_NODE_ARGS to node; a profile is written when node exits normally.
  if (profileDir) env.SERVICE_NODE_ARGS = [env.SERVICE_NODE_ARGS, '--cpu-prof', `--cpu-prof-dir=${profileDir}`].filter(Boolean).join(' ');
  try {
    const baseEnv: Record<string, string> = {
      JWT_PUBLIC_KEY: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      JWT_ISSUER: 'https://idp.bench.local',
      JWT_AUDIENCE: 'chat-service',
      LOG_LEVEL: 'info',
      ALLOWED_ORIGINS: '*',
      // The benchmark is the flood the per-user limit exists to stop.
      RATE_LIMIT_PER_MINUTE: '0',
      // Every connection comes from one address, and the idle ones from one user.
      MAX_CONNECTIONS_PER_USER: String(Math.max(20, IDLE)),
      MAX_PENDING_CONNECTIONS: '1000000',
      MAX_PENDING_CONNECTIONS_PER_ADDRESS: '1000000',
    };
    if (usePostgres) {
      database = await createTestDatabase(PG_URL);
      baseEnv.DATABASE_URL = database.url;
      baseEnv.DATABASE_POOL_SIZE = '16';
    } else {
      dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-bench-'));
      baseEnv.DATA_DIR = dataDir;
    }
    if (useRabbit) {
      baseEnv.AMQP_URL = AMQP_URL;
      // Its own send queue: never the chat.send.queue of a cluster sharing this broker.
      baseEnv.SEND_QUEUE = sendQueue;
    }
    for (let i = 0; i < instances; i++) servers.push(await startServiceProcess({ ...baseEnv, INSTANCE_ID: `bench-${i}-${randomUUID().slice(0, 6)}` }));
    const senderServer = servers[0]!;
    const receiverServer = servers[servers.length - 1]!;
    const wsUrl = (s: ServiceProcess) => `${s.url.replace(/^http/, 'ws')}/ws`;
    cpu = await PhaseCpu.create({
      servicePids: servers.map((s) => s.child.pid!),
      postgres: database ? { adminUrl: PG_URL, database: new URL(database.url).pathname.slice(1) } : undefined,
      rabbitmq: useRabbit,
    });

    console.log(`\nchat-service benchmark — ${os.cpus().length} cores (${os.cpus()[0]?.model.trim()}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
    console.log(`store: ${usePostgres ? 'PostgreSQL' : 'PGlite'}, bus: ${useRabbit ? 'RabbitMQ' : 'in-process'}, instances: ${instances}, pairs: ${PAIRS}, window: ${WINDOW}/sender, ${SECONDS}s per phase\n`);

    if (IDLE < REQUESTED_IDLE) console.log(`BENCH_IDLE=${REQUESTED_IDLE} is more than this machine's open-file limit (${openFileLimit()}) allows: measuring ${IDLE} idle connections\n`);
    // Memory per idle connection, first, while the heap is still small and quiet.
    // Client source addresses spread over 127.0.0.0/8 (one address has ~28,000 ephemeral ports), and
    // heart-beats agreed both ways at IDLE_HEARTBEAT_MS, so the figure includes their timers.
    const rssBefore = rssOf(receiverServer.child.pid!);
    const idleToken = await sign('idle@bench.example');
    const idle: LoadClient[] = [];
    const idleStarted = performance.now();
    for (let i = 0; i < IDLE; i += 200) {
      idle.push(...(await Promise.all(Array.from({ length: Math.min(200, IDLE - i) }, async (_, j) => {
        const c = await LoadClient.connect(wsUrl(receiverServer), idleToken, { localAddress: spreadAddress(i + j), heartbeatMs: IDLE_HEARTBEAT_MS });
        await c.subscribe('/user/queue/messages', () => undefined);
        return c;
      }))));
    }
    const idleConnectSeconds = (performance.now() - idleStarted) / 1000;
    // A heart-beat period and a little more, so every connection's timers have run at least once.
    await new Promise((r) => setTimeout(r, IDLE > 0 ? IDLE_HEARTBEAT_MS + 2000 : 0));
    const idleCpuStart = readProcStat(receiverServer.child.pid!);
    const idleSampleMs = IDLE > 0 ? 5000 : 0;
    await new Promise((r) => setTimeout(r, idleSampleMs));
    const idleCpuEnd = readProcStat(receiverServer.child.pid!);
    const rssAfter = rssOf(receiverServer.child.pid!);
    idle.forEach((c) => c.close());

    // Sessions and connections.
    const pairs = await Promise.all(
      Array.from({ length: PAIRS }, async (_, i) => {
        const alice = `alice${i}@bench.example`;
        const bob = `bob${i}@bench.example`;
        const [aliceToken, bobToken] = await Promise.all([sign(alice), sign(bob)]);
        const res = await fetch(`${senderServer.url}/api/chat/init`, {
          method: 'POST',
          headers: { authorization: `Bearer ${aliceToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ toEmail: bob, intent: 'bench' }),
        });
        const { sessionId } = (await res.json()) as { sessionId: string };
        return { aliceToken, bobToken, sessionId };
      }),
    );

    const sentAt = new Map<string, number>();
    const deliverLatency: number[] = [];
    // Distinct ids: delivery is at least once, so a duplicate must not hide a lost message.
    const deliveredIds = new Set<string>();
    // Sent and not delivered yet, whatever the phase: a phase starts once the last one's are in, so
    // its stragglers neither count as its deliveries nor add their age to its latencies.
    const awaitingDelivery = new Set<string>();
    let deliveredTwice = 0;
    const splitIn: number[] = [];
    const splitOut: number[] = [];
    const ackLatency: number[] = [];
    let acked = 0;
    let delivered = 0;
    let measuring = false;
    let rateLimited = false;
    const senders = await Promise.all(
      pairs.map(async (p) => {
        const [alice, bob] = await Promise.all([LoadClient.connect(wsUrl(senderServer), p.aliceToken), LoadClient.connect(wsUrl(receiverServer), p.bobToken)]);
        await bob.subscribe('/user/queue/messages', (frame) => {
          const id = frame.headers['client-message-id'] ?? '';
          const t0 = sentAt.get(id);
          const first = awaitingDelivery.delete(id);
          if (!first && t0 !== undefined) deliveredTwice++;
          if (t0 !== undefined && measuring && first) {
            deliverLatency.push(performance.now() - t0);
            delivered++;
            deliveredIds.add(id);
            if (env.BENCH_SPLIT) {
              // The message's sentAt is the service's clock when it took the send: same machine, same clock.
              const accepted = Date.parse((JSON.parse(frame.body) as { sentAt: string }).sentAt);
              const wall = Date.now();
              splitIn.push(accepted - (wall - (performance.now() - t0)));
              splitOut.push(wall - accepted);
            }
          }
        });
        let inFlight = 0;
        let active = false;
        const sendOne = (): void => {
          const clientMessageId = randomUUID();
          sentAt.set(clientMessageId, performance.now());
          awaitingDelivery.add(clientMessageId);
          inFlight++;
          alice.send('/app/chat.send', { sessionId: p.sessionId, content: `bench message ${clientMessageId.slice(0, 8)}`, clientMessageId });
        };
        await alice.subscribe('/user/queue/ack', (frame) => {
          const id = frame.headers['client-message-id'] ?? '';
          const t0 = sentAt.get(id);
          inFlight--;
          if (t0 !== undefined && measuring) {
            ackLatency.push(performance.now() - t0);
            acked++;
          }
          if (active && !rateLimited) while (inFlight < WINDOW) sendOne();
        });
        return {
          alice,
          bob,
          start() {
            active = true;
            while (inFlight < WINDOW) sendOne();
          },
          stop() {
            active = false;
          },
          sendOne,
          get inFlight() {
            return inFlight;
          },
        };
      }),
    );
    const settle = async () => {
      const deadline = Date.now() + 30_000;
      while ((senders.some((s) => s.inFlight > 0) || awaitingDelivery.size > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    };

    // Phase 1: closed-loop throughput (each sender keeps WINDOW sends in flight). BENCH_CLOSED=0
    // skips it (BENCH_RATE then sets the open-loop rate), to measure a steady rate on a fresh service.
    const closedLoop = env.BENCH_CLOSED !== '0';
    if (closedLoop) senders.forEach((s) => s.start());
    await new Promise((r) => setTimeout(r, 2000)); // warm-up: JIT, pools, caches
    const cpuStart1 = await cpu.sample();
    measuring = true;
    const t1 = performance.now();
    if (closedLoop) await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const elapsed1 = (performance.now() - t1) / 1000;
    measuring = false;
    const cpuEnd1 = await cpu.sample();
    const cpu1 = PhaseCpu.format(cpuStart1, cpuEnd1, delivered);
    phaseWindows.push([cpuStart1.atMicros, cpuEnd1.atMicros]);
    senders.forEach((s) => s.stop());
    const throughput = { acked: acked / elapsed1, delivered: delivered / elapsed1, deliver: [...deliverLatency].sort((a, b) => a - b), ack: [...ackLatency].sort((a, b) => a - b) };
    await settle();
    const undeliveredAfterClosed = awaitingDelivery.size;

    // Phase 2: open loop at a fixed rate (default: 60% of the measured ceiling), latency at that load.
    const rate = Number(env.BENCH_RATE ?? (closedLoop ? Math.max(100, Math.round(throughput.acked * 0.6 / 100) * 100) : 500));
    deliverLatency.length = 0;
    ackLatency.length = 0;
    splitIn.length = 0;
    splitOut.length = 0;
    deliveredIds.clear();
    acked = 0;
    delivered = 0;
    rateLimited = true;
    const cpuStart2 = await cpu.sample();
    measuring = true;
    const t2 = performance.now();
    let sent2 = 0;
    await new Promise<void>((resolve) => {
      const tickMs = 10;
      const timer = setInterval(() => {
        const due = Math.floor(((performance.now() - t2) / 1000) * rate) - sent2;
        for (let k = 0; k < due; k++) senders[(sent2 + k) % senders.length]!.sendOne();
        sent2 += Math.max(0, due);
        if (performance.now() - t2 >= SECONDS * 1000) {
          clearInterval(timer);
          resolve();
        }
      }, tickMs);
    });
    await settle();
    const elapsed2 = (performance.now() - t2) / 1000;
    measuring = false;
    const cpuEnd2 = await cpu.sample();
    const cpu2 = PhaseCpu.format(cpuStart2, cpuEnd2, delivered);
    phaseWindows.push([cpuStart2.atMicros, cpuEnd2.atMicros]);
    const fixed = { sent: sent2 / elapsed2, deliver: [...deliverLatency].sort((a, b) => a - b), lost: sent2 - deliveredIds.size };

    if (env.BENCH_SPLIT) {
      const q = (xs: number[], p: number) => fmt(percentile([...xs].sort((a, b) => a - b), p));
      console.log(`open loop split: client→service accepted p50 ${q(splitIn, 0.5)} ms p99 ${q(splitIn, 0.99)} ms; accepted→delivered p50 ${q(splitOut, 0.5)} ms p99 ${q(splitOut, 0.99)} ms`);
    }
    if (env.BENCH_DEBUG) {
      const metrics = await (await fetch(`${senderServer.url}/metrics`)).text();
      console.log(metrics.split('\n').filter((l) => /^chat_(outbox_publish_lag|outbox_published|messages_sent)/.test(l)).join('\n'));
      // Warnings and errors of every instance, a few of each kind.
      for (const [i, server] of servers.entries()) {
        const seen = new Map<string, number>();
        for (const line of server.output().split('\n')) {
          const m = /"level":(\d+).*"msg":"([^"]*)"/.exec(line);
          if (!m || Number(m[1]) < 40) continue;
          const n = (seen.get(m[2]!) ?? 0) + 1;
          seen.set(m[2]!, n);
          if (n <= 3) console.log(`service#${i + 1}: ${line.slice(0, 400)}`);
        }
        for (const [msg, n] of seen) if (n > 3) console.log(`service#${i + 1}: "${msg}" ×${n}`);
      }
    }

    senders.forEach((s) => (s.alice.close(), s.bob.close()));

    console.log('| phase | figure |');
    console.log('|---|---|');
    if (closedLoop) {
      console.log(`| closed loop, ${PAIRS} senders × ${WINDOW} in flight | **${fmt(throughput.acked, 0)} msg/s acked**, ${fmt(throughput.delivered, 0)} msg/s delivered; undelivered at end: ${undeliveredAfterClosed} |`);
      console.log(`| closed loop: send→deliver latency | p50 ${fmt(percentile(throughput.deliver, 0.5))} ms, p95 ${fmt(percentile(throughput.deliver, 0.95))} ms, p99 ${fmt(percentile(throughput.deliver, 0.99))} ms |`);
      console.log(`| closed loop: send→ack latency | p50 ${fmt(percentile(throughput.ack, 0.5))} ms, p99 ${fmt(percentile(throughput.ack, 0.99))} ms |`);
      console.log(`| closed loop: cpu µs/msg delivered | ${cpu1} |`);
    } else {
      console.log('| closed loop | skipped (BENCH_CLOSED=0) |');
    }
    console.log(`| open loop at ${rate} msg/s (sent ${fmt(fixed.sent, 0)}/s) | send→deliver p50 ${fmt(percentile(fixed.deliver, 0.5))} ms, p95 ${fmt(percentile(fixed.deliver, 0.95))} ms, p99 ${fmt(percentile(fixed.deliver, 0.99))} ms; undelivered at end: ${fixed.lost}; delivered twice in the run: ${deliveredTwice} |`);
    console.log(`| open loop at ${rate} msg/s: cpu µs/msg delivered | ${cpu2} |`);
    const idleCpu = idleCpuStart && idleCpuEnd && IDLE > 0 ? ((idleCpuEnd.cpuTicks - idleCpuStart.cpuTicks) / CLOCK_TICKS_PER_SECOND / (idleSampleMs / 1000)) * 100 : undefined;
    console.log(
      `| ${IDLE} idle STOMP connections (heart-beats ${IDLE_HEARTBEAT_MS / 1000} s both ways, source addresses spread over 127.0.0.0/8) | ${fmt((rssAfter - rssBefore) / IDLE / 1024, 1)} KiB RSS per connection (${fmt(rssBefore / 2 ** 20, 0)} → ${fmt(rssAfter / 2 ** 20, 0)} MiB); connected in ${fmt(idleConnectSeconds, 1)} s; the instance idles at ${idleCpu === undefined ? '-' : fmt(idleCpu, 1)} % of a core |`,
    );
    for (const note of cpu.notes) console.log(`(cpu: ${note})`);
  } finally {
    await cpu?.close().catch(() => undefined);
    for (const s of servers) {
      s.child.kill('SIGTERM');
      await s.exited;
    }
    await database?.drop().catch(() => undefined);
    if (useRabbit) await deleteQueues(AMQP_URL, [sendQueue, deadLetterQueue]).catch(() => undefined);
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  }
  if (profileDir) printProfiles(profileDir, servers, phaseWindows);
}

/**
 * Top functions by self time in each instance's profile, counting only the measured phases: a
 * profile covers the process's whole life, and start-up (tsx compiling every module) would bury the
 * steady state in a short run.
 */
function printProfiles(dir: string, servers: ServiceProcess[], windows: Array<[number, number]>): void {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort();
  const seconds = windows.reduce((sum, [from, to]) => sum + (to - from), 0) / 1e6;
  console.log(`\nCPU profiles (BENCH_PROFILE=1), the ${windows.length} measured phases only (${fmt(seconds)} s); whole profiles for DevTools in ${dir}`);
  if (files.length === 0) console.log('no .cpuprofile written: did the instances exit normally?');
  for (const file of files) {
    // Node names them CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile; thread 0 is the main thread.
    const [pid, thread] = file.split('.').slice(3, 5).map(Number);
    const index = servers.findIndex((s) => s.child.pid === pid);
    const who = `${index >= 0 ? `service#${index + 1}` : 'unknown process'} (pid ${pid}, ${thread === 0 ? 'main thread' : `thread ${thread}`})`;
    const profile = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as CpuProfile;
    const summary = summariseCpuProfile(profile, { top: 25, windows });
    const busyMs = (summary.totalMicros - summary.idleMicros) / 1000;
    // Other threads are tsx's module loader unless the service starts workers: mostly idle once started.
    if (thread !== 0 && busyMs < 0.01 * seconds * 1000) console.log(`\n${who}: ${fmt(busyMs)} ms busy, not tabulated`);
    else console.log(`\n${formatProfileSummary(who, summary, ROOT)}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
