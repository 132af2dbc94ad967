/**
 * What a probe and Prometheus see while things go wrong, scripted: readiness (on the management
 * port) goes 503 naming the database while PostgreSQL is cut and comes back after; on stop
 * (SIGTERM's path) readiness turns 503 (`accepting: down`) while the instance drains, connected
 * STOMP clients get ERROR `SERVER_SHUTDOWN` (reconnect), and a new WebSocket is refused with 503.
 */
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultProxy } from '../support/fault-proxy.js';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { connectStomp } from '../support/stomp-client.js';
import { startTestApp, type TestApp } from '../support/test-app.js';
import { type ClusterShared, deleteQueues, instanceEnv, newUser, openSession, sharedCluster, testAppOptions } from './support/cluster.js';

const probe = async (url: string): Promise<{ status: number; body: any }> => {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(3_000) });
    return { status: res.status, body: await res.json() };
  } catch {
    return { status: 0, body: undefined };
  }
};

const metric = async (base: string, name: string): Promise<string[]> => (await (await fetch(`${base}/metrics`)).text()).split('\n').filter((l) => l.startsWith(name));

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('readiness and metrics through a database cut and a drain', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  let db: { proxy: FaultProxy; url: string };
  let t: TestApp;

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
    db = await FaultProxy.forUrl(shared.databaseUrl, 5432);
    t = await startTestApp({ ...instanceEnv(shared, { name: 'drain', databaseUrl: db.url }), MANAGEMENT_PORT: '0' }, {}, testAppOptions(shared));
  });
  afterAll(async () => {
    db?.proxy.setMode('pass');
    await t?.close();
    await db?.proxy.close();
    if (shared) await deleteQueues(shared.amqpUrl, shared);
    await database?.drop();
  });

  it('reports the database cut on readiness and the metrics, then recovers', async () => {
    const management = t.app.managementUrl!;
    expect(await probe(`${management}/actuator/health/readiness`)).toMatchObject({ status: 200, body: { status: 'UP' } });
    expect(await metric(management, 'chat_db_pool_connections{state="in_use"}')).toHaveLength(1);
    expect(await metric(management, 'chat_outbox_oldest_pending_seconds')).toEqual(['chat_outbox_oldest_pending_seconds 0']);

    db.proxy.setMode('cut');
    await expect.poll(() => probe(`${management}/health/ready`), { timeout: 10_000, interval: 200 }).toMatchObject({ status: 503, body: { checks: { database: 'down', accepting: 'up' } } });
    db.proxy.setMode('pass');
    await expect.poll(() => probe(`${management}/health/ready`), { timeout: 15_000, interval: 200 }).toMatchObject({ status: 200, body: { checks: { database: 'up', outbox: 'up' } } });
  }, 40_000);

  it('drains on stop: readiness 503 first, clients told SERVER_SHUTDOWN (reconnect), new connections refused', async () => {
    const management = t.app.managementUrl!;
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(t.url, alice, bob);
    const client = await connectStomp({ baseUrl: t.url, token: alice.token, transport: 'ws' });
    await client.subscribe('/user/queue/ack');
    await client.sendWithReceipt('/app/chat.send', { sessionId, content: 'before the drain', clientMessageId: randomUUID() });
    // Every inbound frame's handling is timed, by command.
    for (const command of ['SUBSCRIBE', 'SEND']) {
      const [count] = await metric(management, `chat_stomp_frame_duration_seconds_count{command="${command}"}`);
      expect(Number(count?.split(' ')[1]), command).toBeGreaterThanOrEqual(1);
    }

    // Watch readiness and new connections while the instance stops.
    const seen: number[] = [];
    const upgrades: number[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        seen.push((await probe(`${management}/health/ready`)).status);
        upgrades.push(
          await new Promise<number>((resolve) => {
            const ws = new WebSocket(`${t.url.replace(/^http/, 'ws')}/ws`, ['v12.stomp']);
            ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
            ws.on('open', () => (ws.close(), resolve(101)));
            ws.on('error', () => resolve(0));
          }),
        );
      }
    })();
    await new Promise((r) => setTimeout(r, 200));
    const stopped = t.close();
    await stopped;
    watching = false;
    await watcher;

    console.log(`[drain] readiness: ${seen.join(" ")}; new WebSockets: ${upgrades.join(" ")}`);
    // Up before, 503 during the drain, then gone (0) once the management listener closed last.
    const firstDown = seen.indexOf(503);
    expect(seen[0]).toBe(200);
    expect(firstDown).toBeGreaterThan(0);
    expect(seen.slice(firstDown).every((s) => s === 503 || s === 0)).toBe(true);
    // A WebSocket opened during the drain is refused with 503 (or finds the port closed).
    expect(upgrades.slice(firstDown).every((s) => s === 503 || s === 0)).toBe(true);
    const shutdown = client.errors.find((f) => f.headers.code === 'SERVER_SHUTDOWN');
    expect(shutdown?.headers).toMatchObject({ code: 'SERVER_SHUTDOWN', reconnect: 'true' });
    await client.close();
  }, 40_000);
});
