/**
 * The admin API on two instances sharing PostgreSQL and RabbitMQ, with production auth: a token
 * carrying `scope: chat:admin` may use it, any other is refused on every route. Instance one's
 * relay publishes through a bus that the test can break (while the broker itself stays healthy,
 * so a failure counts against the row), with one retry allowed: a message sent while it is broken
 * becomes a dead outbox row, which the admin replays and bob, on instance two, then receives.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventBus } from '../../src/chat/ports.js';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { busWith } from '../support/bus-with.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import { startTestApp, type TestApp } from '../support/test-app.js';
import { api, type ClusterShared, deleteQueues, instanceEnv, newUser, openSession, sharedCluster, testAppOptions, type User } from './support/cluster.js';

const PRESENCE = { PRESENCE_HEARTBEAT_MS: '300', PRESENCE_DEAD_AFTER_MS: '3000', PRESENCE_DEBOUNCE_MS: '200' };

/** Every admin route, as [method, path]. */
const ROUTES = (ids: { outboxId: string; email: string }): Array<[string, string]> => [
  ['GET', '/admin/outbox/dead'],
  ['POST', `/admin/outbox/dead/${ids.outboxId}/replay`],
  ['GET', '/admin/sends/dead'],
  ['POST', '/admin/sends/dead/replay'],
  ['GET', '/admin/connections'],
  ['POST', `/admin/users/${encodeURIComponent(ids.email)}/disconnect`],
  ['GET', '/admin/reports'],
];

/** A bus whose publishes fail while `broken`, though it reports itself healthy: the row is at fault. */
function breakable(state: { broken: boolean }): (bus: EventBus) => EventBus {
  return (bus) =>
    busWith(bus, {
      publish: async (envelope) => {
        if (state.broken) throw new Error('broken on purpose');
        await bus.publish(envelope);
      },
      publishBatch: async (envelopes, options) => {
        if (state.broken) throw new Error('broken on purpose');
        await bus.publishBatch(envelopes, options);
      },
    });
}

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('admin API across instances', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  let one: TestApp;
  let two: TestApp;
  let admin: User;
  const relayBus = { broken: false };
  const clients: TestStompClient[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
    one = await startTestApp(
      { ...instanceEnv(shared, { name: 'one' }), ...PRESENCE },
      {},
      testAppOptions(shared, { outbox: { maxRetries: 1 }, faults: { relayBus: breakable(relayBus) } }),
    );
    two = await startTestApp({ ...instanceEnv(shared, { name: 'two' }), ...PRESENCE }, {}, testAppOptions(shared));
    const email = `ops.${randomUUID().slice(0, 8)}@example.com`;
    admin = { email, displayName: 'Ops', token: await shared.idp.token(email, 'Ops', { scope: 'openid chat:admin' }) };
  });
  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await Promise.allSettled([one?.close(), two?.close()]);
    if (shared) await deleteQueues(shared.amqpUrl, shared);
    await database?.drop();
  });

  async function connect(instance: TestApp, user: User): Promise<TestStompClient> {
    const client = await connectStomp({ baseUrl: instance.url, token: user.token, transport: 'ws' });
    clients.push(client);
    return client;
  }

  it('refuses every admin route with 401 without a token and 403 FORBIDDEN_SCOPE without the chat:admin scope', async () => {
    const user = await newUser(shared.idp, 'mallory');
    const otherScopes = { ...user, token: await shared.idp.token(user.email, 'Mallory', { scope: 'chat:read admin chat:administrator' }) };
    for (const instance of [one, two]) {
      for (const [method, path] of ROUTES({ outboxId: '1', email: 'bob@example.com' })) {
        const anonymous = await api(instance.url, method, path);
        expect(anonymous.status, `${method} ${path}`).toBe(401);
        expect(anonymous.contentType).toMatch(/application\/problem\+json/);
        for (const who of [user, otherScopes]) {
          const refused = await api(instance.url, method, path, who.token);
          expect(refused.status, `${method} ${path}`).toBe(403);
          expect(refused.contentType).toMatch(/application\/problem\+json/);
          expect(refused.body).toMatchObject({ status: 403, code: 'FORBIDDEN_SCOPE' });
        }
      }
    }
  });

  it('a dead outbox row, replayed by an admin, is delivered', async () => {
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(one.url, alice, bob);
    const bobs = await connect(two, bob);
    await bobs.subscribe('/user/queue/messages');

    relayBus.broken = true;
    const clientMessageId = randomUUID();
    const sent = await api(one.url, 'POST', '/api/chat/message', alice.token, { sessionId, content: 'stuck in the outbox', clientMessageId });
    expect(sent.status).toBe(201);
    // One counted failure makes it dead (maxRetries 1).
    let dead: any;
    await expect
      .poll(
        async () => {
          dead = (await api(two.url, 'GET', '/admin/outbox/dead', admin.token)).body.rows.find((r: any) => r.sessionId === sessionId);
          return dead !== undefined;
        },
        { timeout: 15_000, interval: 100 },
      )
      .toBe(true);
    expect(dead).toMatchObject({ eventType: 'message', sessionId, retryCount: 1, lastError: expect.stringMatching(/broken on purpose/) });
    expect(Date.parse(dead.createdAt)).not.toBeNaN();
    expect(bobs.on('/user/queue/messages')).toHaveLength(0);

    relayBus.broken = false;
    expect((await api(two.url, 'POST', '/admin/outbox/dead/999999999/replay', admin.token)).status).toBe(404);
    const replayed = await api(two.url, 'POST', `/admin/outbox/dead/${dead.id}/replay`, admin.token);
    expect(replayed.status).toBe(202);
    await expect.poll(() => bobs.on('/user/queue/messages').map((m) => m.body.clientMessageId), { timeout: 15_000 }).toEqual([clientMessageId]);
    expect((await api(one.url, 'GET', '/admin/outbox/dead', admin.token)).body.rows.some((r: any) => r.id === dead.id)).toBe(false);
    // Replayed once: a second replay finds no dead row.
    const again = await api(one.url, 'POST', `/admin/outbox/dead/${dead.id}/replay`, admin.token);
    expect(again.status).toBe(404);
    expect(again.body).toMatchObject({ code: 'DEAD_LETTER_NOT_FOUND' });
  });

  it('disconnect closes the user’s sockets on both instances with DISCONNECTED_BY_ADMIN, and nobody else’s', async () => {
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    await openSession(one.url, alice, bob);
    const bobOnOne = await connect(one, bob);
    const bobOnTwo = await connect(two, bob);
    const aliceOnTwo = await connect(two, alice);

    const res = await api(one.url, 'POST', `/admin/users/${encodeURIComponent(bob.email.toUpperCase())}/disconnect`, admin.token);
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ email: bob.email });
    for (const client of [bobOnOne, bobOnTwo]) {
      await expect.poll(() => client.closed, { timeout: 10_000 }).toBe(true);
      expect(client.errors.map((f) => [f.headers.code, f.headers.reconnect])).toEqual([['DISCONNECTED_BY_ADMIN', 'false']]);
    }
    expect(aliceOnTwo.closed).toBe(false);
    expect(aliceOnTwo.errors).toEqual([]);
  });

  it('lists connections per instance and the users online across the cluster', async () => {
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    await openSession(one.url, alice, bob);
    // From nobody connected: the earlier tests' clients close, and their users go offline after the debounce.
    await Promise.all(clients.splice(0).map((c) => c.close()));
    const figures = async (on: TestApp) => (await api(on.url, 'GET', '/admin/connections', admin.token)).body;
    await expect.poll(() => figures(one), { timeout: 10_000, interval: 100 }).toMatchObject({ connections: 0, usersOnline: 0 });
    await connect(one, alice);
    await connect(two, bob);
    await connect(two, bob);
    // Each instance's own figure is live; the other's is as of its last beat (300 ms here).
    await expect.poll(() => figures(one), { timeout: 10_000, interval: 100 }).toMatchObject({ connections: 3, usersOnline: 2 });
    // Two sees one's figure as of one's next beat, which may not have come yet.
    await expect.poll(() => figures(two), { timeout: 10_000, interval: 100 }).toMatchObject({ connections: 3, usersOnline: 2 });
    const view = (await api(two.url, 'GET', '/admin/connections', admin.token)).body;
    expect(view.instances).toHaveLength(2);
    expect(view.instances.filter((i: any) => i.self)).toHaveLength(1);
    expect(view).toMatchObject({ connections: 3, usersOnline: 2 });
    const self = view.instances.find((i: any) => i.self);
    const other = view.instances.find((i: any) => !i.self);
    expect(self).toMatchObject({ alive: true, connections: 2, users: 1 });
    expect(other).toMatchObject({ alive: true, connections: 1, users: 1 });
    expect(Date.parse(other.aliveAt)).toBeGreaterThan(Date.now() - 3_000);
  });

  it('lists and replays the send queue’s dead letters (none here)', async () => {
    expect(await api(one.url, 'GET', '/admin/sends/dead', admin.token)).toMatchObject({ status: 200, body: { sends: [] } });
    expect(await api(one.url, 'POST', '/admin/sends/dead/replay', admin.token)).toMatchObject({ status: 202, body: { replayed: 0 } });
  });
});
