/**
 * Presence across two instances on PostgreSQL and RabbitMQ: alice is on instance one (in-process),
 * bob on instance two (a child process, so it can die by SIGKILL). Liveness timings are shortened
 * through configuration (beat 500 ms, dead after 2.5 s, debounce 1 s); the default bound (offline
 * within 60 s of a crash) is argued in docs/adr/0018 from the defaults 10 s / 30 s.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import { startTestApp, type TestApp } from '../support/test-app.js';
import {
  api,
  type ClusterShared,
  deleteQueues,
  instanceEnv,
  type InstanceProcess,
  instanceQueueOf,
  newUser,
  openSession,
  sharedCluster,
  startInstanceProcess,
  testAppOptions,
  type User,
} from './support/cluster.js';

const PRESENCE = { PRESENCE_HEARTBEAT_MS: '500', PRESENCE_DEAD_AFTER_MS: '2500', PRESENCE_DEBOUNCE_MS: '1000' };

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('presence across instances', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  let one: TestApp;
  let two: InstanceProcess;
  const processes: InstanceProcess[] = [];
  const clients: TestStompClient[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
    one = await startTestApp({ ...instanceEnv(shared, { name: 'one' }), ...PRESENCE }, {}, testAppOptions(shared));
    two = await startInstanceProcess(shared, { name: 'two', env: PRESENCE });
    processes.push(two);
  });
  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await one?.close();
    await Promise.allSettled(processes.map((p) => p.kill()));
    if (shared) await deleteQueues(shared.amqpUrl, shared, processes.map(instanceQueueOf).filter((q): q is string => q !== undefined));
    await database?.drop();
  });

  async function connect(baseUrl: string, user: User): Promise<TestStompClient> {
    const client = await connectStomp({ baseUrl, token: user.token, transport: 'ws' });
    clients.push(client);
    return client;
  }

  async function scene() {
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(one.url, alice, bob);
    const alicesView = async (on = one.url) => (await api(on, 'GET', `/api/chat/${sessionId}/presence`, alice.token)).body.peer;
    return { alice, bob, sessionId, alicesView };
  }

  it('bob online on instance two is seen online by alice on instance one, live and over REST; offline after the debounce', async () => {
    const s = await scene();
    const watcher = await connect(one.url, s.alice);
    await watcher.subscribe('/user/queue/presence');
    expect(await s.alicesView()).toEqual({ online: false, lastSeenAt: null });

    const bob = await connect(two.url, s.bob);
    await expect.poll(() => watcher.on('/user/queue/presence').map((m) => m.body), { timeout: 10_000 }).toEqual([{ email: s.bob.email, online: true, lastSeenAt: null }]);
    expect(watcher.on('/user/queue/presence')[0]!.headers).toMatchObject({ 'event-type': 'presence', 'session-id': s.sessionId });
    expect(await s.alicesView()).toMatchObject({ online: true, lastSeenAt: null });
    // Either instance answers the same.
    expect(await s.alicesView(two.url)).toMatchObject({ online: true });

    // A second connection of bob on the other instance, then the first closes: he is still online.
    const bobAgain = await connect(one.url, s.bob);
    await bob.close();
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(watcher.on('/user/queue/presence')).toHaveLength(1);
    expect(await s.alicesView()).toMatchObject({ online: true });

    const closedAt = Date.now();
    await bobAgain.close();
    await expect.poll(() => watcher.on('/user/queue/presence').length, { timeout: 10_000 }).toBe(2);
    const offline = watcher.on('/user/queue/presence')[1]!.body as { email: string; online: boolean; lastSeenAt: string };
    expect(offline).toMatchObject({ email: s.bob.email, online: false });
    expect(Math.abs(Date.parse(offline.lastSeenAt) - closedAt)).toBeLessThan(500);
    expect(await s.alicesView(two.url)).toEqual({ online: false, lastSeenAt: offline.lastSeenAt });
  });

  it('a reconnect within the debounce, to the other instance, reports nothing', async () => {
    const s = await scene();
    const watcher = await connect(one.url, s.alice);
    await watcher.subscribe('/user/queue/presence');
    const bob = await connect(two.url, s.bob);
    await expect.poll(() => watcher.on('/user/queue/presence').length, { timeout: 10_000 }).toBe(1);

    await bob.close();
    await connect(one.url, s.bob);
    // Well past the debounce (1 s) and a few beats.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(watcher.on('/user/queue/presence')).toHaveLength(1);
    expect(await s.alicesView()).toMatchObject({ online: true });
  });

  it('carol, who shares no session with bob, cannot read his presence', async () => {
    const s = await scene();
    const carol = await newUser(shared.idp, 'carol');
    await connect(two.url, s.bob);
    for (const url of [one.url, two.url]) {
      const refused = await api(url, 'GET', `/api/chat/${s.sessionId}/presence`, carol.token);
      expect(refused.status).toBe(403);
      expect(refused.contentType).toMatch(/application\/problem\+json/);
      expect(refused.body).toMatchObject({ code: 'NOT_A_PARTICIPANT' });
    }
  });

  it('an instance swept while alive (its rows gone, as after a database outage) records its users online again on its next beat', async () => {
    const s = await scene();
    await connect(two.url, s.bob);
    await expect.poll(async () => (await s.alicesView()).online, { timeout: 10_000 }).toBe(true);
    // What another instance's sweep does to an instance that could not beat for PRESENCE_DEAD_AFTER_MS.
    const db = new pg.Client({ connectionString: shared.databaseUrl });
    await db.connect();
    try {
      const { rows } = await db.query<{ instance_id: string }>('SELECT instance_id FROM chat_presence WHERE email = $1', [s.bob.email]);
      expect(rows).toHaveLength(1);
      await db.query('DELETE FROM chat_presence WHERE instance_id = $1', [rows[0]!.instance_id]);
      await db.query('DELETE FROM chat_instances WHERE id = $1', [rows[0]!.instance_id]);
    } finally {
      await db.end();
    }
    expect((await s.alicesView()).online).toBe(false);
    await expect.poll(async () => (await s.alicesView()).online, { timeout: 5_000, interval: 100 }).toBe(true);
  });

  // Last: it kills instance two.
  it('kill -9 of bob’s instance: alice hears he is offline once the instance is found dead', async () => {
    const s = await scene();
    const watcher = await connect(one.url, s.alice);
    await watcher.subscribe('/user/queue/presence');
    await connect(two.url, s.bob);
    await expect.poll(() => watcher.on('/user/queue/presence').length, { timeout: 10_000 }).toBe(1);

    const killedAt = Date.now();
    await two.kill();
    await expect.poll(() => watcher.on('/user/queue/presence').length, { timeout: 30_000, interval: 50 }).toBe(2);
    const heardAfterMs = Date.now() - killedAt;
    const offline = watcher.on('/user/queue/presence')[1]!.body as { email: string; online: boolean; lastSeenAt: string };
    expect(offline).toMatchObject({ email: s.bob.email, online: false });
    // Dead after 2.5 s without a beat, swept on one's next beat (500 ms): well inside the bound.
    expect(heardAfterMs).toBeLessThan(2_500 + 2 * 500 + 2_000);
    // Last seen: the dead instance's last beat, at most one beat before the kill.
    expect(killedAt - Date.parse(offline.lastSeenAt)).toBeGreaterThanOrEqual(-100);
    expect(killedAt - Date.parse(offline.lastSeenAt)).toBeLessThan(500 + 1_000);
    expect(await s.alicesView()).toEqual({ online: false, lastSeenAt: offline.lastSeenAt });
    // Announced by instance one's sweep, and counted there.
    const metrics = String((await api(one.url, 'GET', '/metrics')).body);
    expect(Number(/chat_presence_changes_total\{state="offline",via="sweep"\} (\d+)/.exec(metrics)?.[1] ?? 0)).toBeGreaterThanOrEqual(1);
  });
});
