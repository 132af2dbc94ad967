/**
 * `npm run bench:floor`: what the least a message can cost on this machine, with none of our code.
 *
 * The service's CPU per message at a low rate (`BENCH_CLOSED=0 BENCH_RATE=500 npm run bench`) is
 * mostly paid per message rather than per batch: a frame read, two frames written, one commit. This
 * measures those pieces bare, at the same rate, so the service's figure can be read against them:
 *
 * 1. relay: a `ws` server (its own process) that, for each text frame from a sender, writes one
 *    frame to the sender's partner and one back to the sender; 200 pairs, FLOOR_RATE frames/s.
 * 2. commit: one node-postgres client inserting one row per statement in autocommit into an indexed
 *    table of a database of its own, FLOOR_RATE statements/s; the backend's and the client's CPU.
 *
 * Figures are CPU-µs per message (user + system, from /proc), like the benchmark's.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import WebSocket, { WebSocketServer } from 'ws';
import { createTestDatabase } from '../test/support/test-database.js';
import { CLOCK_TICKS_PER_SECOND, readProcStat } from './proc-cpu.js';

const RATE = Number(process.env.FLOOR_RATE ?? 500);
const SECONDS = Number(process.env.FLOOR_SECONDS ?? 10);
const PAIRS = 200;
const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const FRAME = `MESSAGE\ndestination:/user/queue/messages\ncontent-type:application/json\nsubscription:sub-0\nmessage-id:${randomUUID()}\n\n${JSON.stringify({ content: 'x'.repeat(120), sessionId: randomUUID() })}\0`;

const cpuMicros = (pid: number): number => ((readProcStat(pid)?.cpuTicks ?? 0) * 1_000_000) / CLOCK_TICKS_PER_SECOND;
const perMessage = (micros: number, messages: number): string => `${Math.round(micros / messages)} µs`;

/** Calls `tick(n)` RATE times a second for SECONDS, from a 10 ms timer (as the benchmark's open loop). */
async function atRate(tick: (n: number) => void): Promise<number> {
  const t0 = performance.now();
  let sent = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const due = Math.floor(((performance.now() - t0) / 1000) * RATE) - sent;
      for (let k = 0; k < due; k++) tick(sent + k);
      sent += Math.max(0, due);
      if (performance.now() - t0 >= SECONDS * 1000) {
        clearInterval(timer);
        resolve();
      }
    }, 10);
  });
  return sent;
}

function relayServer(): void {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  const sockets = new Map<number, WebSocket>();
  wss.on('connection', (ws, req) => {
    const id = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('id'));
    sockets.set(id, ws);
    ws.on('message', (data) => {
      sockets.get(id + 1)?.send(data.toString());
      ws.send('RECEIPT\nreceipt-id:1\n\n\0');
    });
  });
  wss.on('listening', () => process.send?.({ port: (wss.address() as { port: number }).port }));
}

async function measureRelay(): Promise<void> {
  const child = fork(fileURLToPath(import.meta.url), ['relay-server'], { execArgv: ['--import', 'tsx'] });
  const port = await new Promise<number>((resolve) => child.once('message', (m: { port: number }) => resolve(m.port)));
  const open = (id: number) =>
    new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/?id=${id}`);
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
  const senders: WebSocket[] = [];
  let delivered = 0;
  for (let i = 0; i < PAIRS; i++) {
    const [a, b] = await Promise.all([open(2 * i), open(2 * i + 1)]);
    b.on('message', () => delivered++);
    senders.push(a);
  }
  const before = cpuMicros(child.pid!);
  const sent = await atRate((n) => senders[n % PAIRS]!.send(FRAME));
  await new Promise((r) => setTimeout(r, 200));
  const used = cpuMicros(child.pid!) - before;
  console.log(`| relay: ws server, 1 frame in, 2 out, at ${RATE}/s | server ${perMessage(used, delivered)} per message (${delivered} of ${sent} delivered) |`);
  senders.forEach((s) => s.terminate());
  child.kill();
}

async function measureCommit(): Promise<void> {
  const database = await createTestDatabase(PG_URL);
  // A pool of one: one backend to measure, with statements queued for it in the pool.
  const client = new pg.Pool({ connectionString: database.url, max: 1 });
  try {
    await client.query('CREATE TABLE floor_rows (id uuid PRIMARY KEY, session_id uuid NOT NULL, body text NOT NULL, at timestamptz NOT NULL DEFAULT now())');
    await client.query('CREATE INDEX floor_rows_session_idx ON floor_rows (session_id, at)');
    const [{ pid }] = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows as [{ pid: number }];
    const insert = { name: 'floor-insert', text: 'INSERT INTO floor_rows (id, session_id, body) VALUES ($1, $2, $3)' };
    const backendBefore = cpuMicros(pid);
    const clientBefore = process.cpuUsage();
    let done = 0;
    const sent = await atRate(() => {
      void client.query({ ...insert, values: [randomUUID(), randomUUID(), 'x'.repeat(120)] }).then(() => done++);
    });
    while (done < sent) await new Promise((r) => setTimeout(r, 20));
    const clientUsed = process.cpuUsage(clientBefore);
    console.log(`| commit: one-row INSERT in autocommit at ${RATE}/s | backend ${perMessage(cpuMicros(pid) - backendBefore, done)}, client (node-postgres, with this script's timer) ${perMessage(clientUsed.user + clientUsed.system, done)} per statement |`);
  } finally {
    await client.end();
    await database.drop();
  }
}

if (process.argv[2] === 'relay-server') relayServer();
else {
  console.log(`\nfloor at ${RATE} msg/s for ${SECONDS} s, nothing of the service involved\n\n| piece | cpu µs per message |\n|---|---|`);
  await measureRelay();
  await measureCommit();
}
