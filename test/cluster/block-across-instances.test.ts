/**
 * Block, report and read state in a cluster: two instances on one PostgreSQL and RabbitMQ, with
 * production auth. A block is the database's, so it holds on an instance that had the session
 * cached before; a report's event, addressed to nobody, is published and marked like any other.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import type { TestApp } from '../support/test-app.js';
import { api, type ClusterShared, deleteQueues, newUser, openSession, pendingOutboxRows, sharedCluster, startInstance, type User } from './support/cluster.js';

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('block, report and read state across instances', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  let one: TestApp;
  let two: TestApp;
  const clients: TestStompClient[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
    // A long safety-net poll: every delivery below is a wake-up, not a poll.
    const app = { outbox: { pollIntervalMs: 30_000 } };
    one = await startInstance(shared, { name: 'one', app });
    two = await startInstance(shared, { name: 'two', app });
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

  const sendVia = (instance: TestApp, user: User, sessionId: string, content: string) =>
    api(instance.url, 'POST', '/api/chat/message', user.token, { sessionId, content, clientMessageId: randomUUID() });

  it('refuses the peer\u2019s sends through instance two as soon as the block is made through instance one, and the unblock restores them', async () => {
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(one.url, alice, bob);
    const topic = `/topic/session.${sessionId}`;
    const aliceOnOne = await connect(one, alice);
    const bobOnTwo = await connect(two, bob);
    await aliceOnOne.subscribe(topic);
    await aliceOnOne.subscribe('/user/queue/messages');
    await bobOnTwo.subscribe('/user/queue/error');
    // Instance two has the session in its cache from here on.
    expect((await sendVia(two, bob, sessionId, 'before')).status).toBe(201);
    await expect.poll(() => aliceOnOne.on('/user/queue/messages').length, { timeout: 10_000 }).toBe(1);

    expect(await api(one.url, 'POST', `/api/chat/${sessionId}/block`, alice.token)).toMatchObject({ status: 200, body: { blocked: true } });
    expect(await sendVia(two, bob, sessionId, 'over REST')).toMatchObject({ status: 403, body: { code: 'PEER_BLOCKED' } });
    const clientMessageId = randomUUID();
    await bobOnTwo.sendWithReceipt('/app/chat.send', { sessionId, content: 'over STOMP', clientMessageId });
    await bobOnTwo.sendWithReceipt('/app/chat.typing', { sessionId, typing: true });
    await expect.poll(() => bobOnTwo.on('/user/queue/error').map((m) => m.body)).toEqual([expect.objectContaining({ code: 'PEER_BLOCKED', clientMessageId })]);
    expect((await api(two.url, 'GET', '/api/chat/sessions', bob.token)).body.sessions[0]).toMatchObject({ sessionId, blockedByMe: false });
    expect((await api(two.url, 'GET', '/api/chat/sessions', alice.token)).body.sessions[0]).toMatchObject({ sessionId, blockedByMe: true });

    expect(await api(one.url, 'DELETE', `/api/chat/${sessionId}/block`, alice.token)).toMatchObject({ status: 200, body: { blocked: false } });
    await bobOnTwo.sendWithReceipt('/app/chat.typing', { sessionId, typing: false });
    expect((await sendVia(two, bob, sessionId, 'after')).status).toBe(201);
    await expect.poll(() => aliceOnOne.on('/user/queue/messages').map((m) => m.body.content), { timeout: 10_000 }).toEqual(['before', 'after']);
    // Only the typing sent after the unblock crossed; the one sent while blocked never did.
    await expect.poll(() => aliceOnOne.on(topic).filter((m) => m.headers['event-type'] === 'typing').map((m) => m.body.typing)).toEqual([false]);
  });

  it('tells the reader\u2019s device on the other instance what it read on this one', async () => {
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(one.url, alice, bob);
    const bobOnOne = await connect(one, bob);
    const bobOnTwo = await connect(two, bob);
    await bobOnTwo.subscribe('/user/queue/receipts');
    await sendVia(one, alice, sessionId, 'read me');
    await bobOnOne.sendWithReceipt('/app/chat.seen', { sessionId, upToSeq: 1 });
    await expect.poll(() => bobOnTwo.on('/user/queue/receipts').map((m) => m.body), { timeout: 10_000 }).toEqual([
      expect.objectContaining({ sessionId, readerEmail: bob.email, upToSeq: 1, status: 'seen' }),
    ]);
    expect((await api(two.url, 'GET', '/api/chat/unread-count', bob.token)).body).toEqual({ total: 0, sessions: 0 });
  });

  it('stores a report with the message\u2019s content and publishes its event to nobody: the outbox drains', async () => {
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(one.url, alice, bob);
    const nasty = (await sendVia(one, bob, sessionId, 'nasty')).body;
    const res = await api(two.url, 'POST', `/api/chat/${sessionId}/report`, alice.token, { messageId: nasty.messageId, reason: 'abuse' });
    expect(res).toMatchObject({ status: 202, body: { reportId: expect.any(String) } });
    const client = new pg.Client({ connectionString: shared.databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query('SELECT session_id, reporter_email, message_id, reason, content FROM chat_reports WHERE id = $1', [res.body.reportId]);
      expect(rows).toEqual([{ session_id: sessionId, reporter_email: alice.email, message_id: nasty.messageId, reason: 'abuse', content: 'nasty' }]);
      await expect.poll(async () => (await client.query("SELECT processed, dead FROM chat_message_outbox WHERE payload->'event'->>'type' = 'report' AND payload->'event'->>'sessionId' = $1", [sessionId])).rows, { timeout: 10_000 }).toEqual([{ processed: true, dead: false }]);
    } finally {
      await client.end();
    }
    await expect.poll(() => pendingOutboxRows(shared.databaseUrl), { timeout: 10_000 }).toBe(0);
  });
});
