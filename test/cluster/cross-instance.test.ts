/**
 * Two instances behave as one service: alice is connected to instance one, bob to instance two,
 * and everything real time works both ways through RabbitMQ, with production auth (only the
 * identity provider's public key is shared), the send queue and the shared database.
 *
 * The relays' safety-net poll is set to 30 s here, so every delivery below proves a wake-up: the
 * local one after a commit, or LISTEN/NOTIFY from another instance.
 *
 * The checks of frames (destinations, headers, refusals, repeated sends) use raw STOMP clients;
 * the ordered load at the end goes through the SDK (support/load.ts).
 */
import { randomUUID } from 'node:crypto';
import { generateKeyPairSync } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatService } from '../../src/chat/chat-service.js';
import { systemClock } from '../../src/chat/ports.js';
import { MemoryEventBus } from '../../src/bus/memory-event-bus.js';
import { createLogger } from '../../src/observability/logger.js';
import { PgDatabase } from '../../src/store/postgres/pg-database.js';
import { PostgresMessageStore } from '../../src/store/postgres/postgres-message-store.js';
import { PostgresProfileDirectory } from '../../src/store/postgres/postgres-profile-directory.js';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { connectStomp, type StompTransportKind, type TestStompClient } from '../support/stomp-client.js';
import type { TestApp } from '../support/test-app.js';
import { api, type ClusterShared, deleteQueues, newUser, openSession, sharedCluster, startInstance, type User } from './support/cluster.js';
import { expectHandedOutOnceInOrder, LedgerLoad } from './support/load.js';

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('two instances, one service', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  let one: TestApp;
  let two: TestApp;
  const clients: TestStompClient[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
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

  async function connect(instance: TestApp, user: User, transport: StompTransportKind = 'ws'): Promise<TestStompClient> {
    const client = await connectStomp({ baseUrl: instance.url, token: user.token, transport });
    clients.push(client);
    return client;
  }

  async function scene() {
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(one.url, alice, bob);
    return { alice, bob, sessionId, topic: `/topic/session.${sessionId}` };
  }

  it('delivers an edit and a delete to both participants\u2019 connections on both instances, through the outbox', async () => {
    const s = await scene();
    // Each participant on both instances; the change is made on instance one only.
    const connections = [await connect(one, s.alice), await connect(two, s.alice), await connect(one, s.bob), await connect(two, s.bob, 'sockjs-xhr-streaming')];
    for (const c of connections) for (const d of [s.topic, `/topic/chat/${s.sessionId}`, '/user/queue/messages', '/user/queue/notifications']) await c.subscribe(d);

    const sent = await api(one.url, 'POST', '/api/chat/send', s.alice.token, { sessionId: s.sessionId, content: 'typo', clientMessageId: randomUUID() });
    expect(sent.status).toBe(201);
    const edited = await api(one.url, 'PATCH', `/api/chat/${s.sessionId}/messages/${sent.body.messageId}`, s.alice.token, { content: 'fixed' });
    expect(edited.body).toMatchObject({ messageId: sent.body.messageId, content: 'fixed', deleted: false });
    const deleted = await api(two.url, 'DELETE', `/api/chat/${s.sessionId}/messages/${sent.body.messageId}`, s.alice.token);
    expect(deleted.body).toMatchObject({ messageId: sent.body.messageId, content: '', deleted: true });

    for (const c of connections) {
      for (const d of [s.topic, `/topic/chat/${s.sessionId}`, '/user/queue/messages', '/user/queue/notifications']) {
        const changes = () => c.on(d).filter((m) => m.headers['event-type'] !== 'message');
        await expect.poll(() => changes().map((m) => [m.headers['event-type'], m.body.content]), { timeout: 10_000 }).toEqual([['edit', 'fixed'], ['delete', '']]);
      }
    }
  });

  // Browsers use SockJS, mobile apps a plain WebSocket; a pair may mix them across instances.
  it.each(['ws', 'sockjs-xhr-streaming'] as const)('delivers both ways across instances: session topic, /user/queue/messages and acks (bob over %s)', async (transport) => {
    const s = await scene();
    const alice = await connect(one, s.alice);
    const bob = await connect(two, s.bob, transport);
    for (const c of [alice, bob]) for (const d of [s.topic, '/user/queue/messages', '/user/queue/ack']) await c.subscribe(d);

    const hello = randomUUID();
    await alice.sendWithReceipt('/app/chat.send', { sessionId: s.sessionId, content: 'hello from one', clientMessageId: hello });
    await expect.poll(() => bob.on('/user/queue/messages').map((m) => m.body.clientMessageId), { timeout: 10_000 }).toEqual([hello]);
    await expect.poll(() => alice.on('/user/queue/ack').map((m) => m.body.clientMessageId)).toEqual([hello]);
    await expect.poll(() => bob.on(s.topic).length).toBe(1);
    expect(bob.on('/user/queue/messages')[0]!.body).toMatchObject({ seq: 1, senderEmail: s.alice.email, senderDisplayName: 'Alice', content: 'hello from one' });

    const reply = randomUUID();
    await bob.sendWithReceipt('/app/chat.send', { sessionId: s.sessionId, content: 'hi from two', clientMessageId: reply });
    await expect.poll(() => alice.on('/user/queue/messages').map((m) => m.body.clientMessageId), { timeout: 10_000 }).toEqual([reply]);
    await expect.poll(() => bob.on('/user/queue/ack').map((m) => m.body.clientMessageId)).toEqual([reply]);
    await expect.poll(() => alice.on(s.topic).map((m) => m.body.seq)).toEqual([1, 2]);
    expect(alice.on('/user/queue/messages')[0]!.headers).toMatchObject({ 'event-type': 'message', seq: '2', 'client-message-id': reply });
  });

  it('stores a repeated send once and acks the repeat on whichever instance the sender is', async () => {
    const s = await scene();
    const aliceOnOne = await connect(one, s.alice);
    const aliceOnTwo = await connect(two, s.alice);
    await aliceOnOne.subscribe('/user/queue/ack');
    await aliceOnTwo.subscribe('/user/queue/ack');
    const clientMessageId = randomUUID();
    const send = { sessionId: s.sessionId, content: 'only once', clientMessageId };
    await aliceOnOne.sendWithReceipt('/app/chat.send', send);
    // Acks go to every connection of the sender, on both instances.
    await expect.poll(() => aliceOnTwo.on('/user/queue/ack').length, { timeout: 10_000 }).toBe(1);
    await aliceOnTwo.sendWithReceipt('/app/chat.send', send);
    await aliceOnTwo.sendWithReceipt('/app/chat.send', send);
    await expect.poll(() => aliceOnTwo.on('/user/queue/ack').length, { timeout: 10_000 }).toBe(3);
    expect(new Set(aliceOnTwo.on('/user/queue/ack').map((m) => m.body.messageId)).size).toBe(1);
    const history = await api(two.url, 'GET', `/api/chat/${s.sessionId}/history`, s.alice.token);
    expect(history.body.messages.map((m: any) => m.clientMessageId)).toEqual([clientMessageId]);
  });

  it('reports bad sends on /user/queue/error: at once when the check fails, later when the consuming instance refuses', async () => {
    const s = await scene();
    const alice = await connect(two, s.alice);
    await alice.subscribe('/user/queue/error');
    await alice.subscribe('/user/queue/ack');
    const empty = randomUUID();
    await alice.sendWithReceipt('/app/chat.send', { sessionId: s.sessionId, content: '', clientMessageId: empty });
    expect(alice.on('/user/queue/error').map((m) => [m.body.code, m.headers['client-message-id']])).toEqual([['CONTENT_EMPTY', empty]]);

    // Passes the check (idempotency keys are the store's business), refused by whichever instance consumes it.
    const reused = randomUUID();
    await alice.sendWithReceipt('/app/chat.send', { sessionId: s.sessionId, content: 'first', clientMessageId: reused });
    await expect.poll(() => alice.on('/user/queue/ack').length, { timeout: 10_000 }).toBe(1);
    await alice.sendWithReceipt('/app/chat.send', { sessionId: s.sessionId, content: 'something else', clientMessageId: reused });
    await expect.poll(() => alice.on('/user/queue/error').length, { timeout: 10_000 }).toBe(2);
    const late = alice.on('/user/queue/error')[1]!;
    expect(late.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', status: 409, clientMessageId: reused });
    expect(late.headers).toMatchObject({ 'event-type': 'error', 'client-message-id': reused });
  });

  it('refuses carol on either instance, and carol receives nothing of alice and bob', async () => {
    const s = await scene();
    const carolUser = await newUser(shared.idp, 'carol');
    const alice = await connect(one, s.alice);
    const carol = await connect(two, carolUser);
    await carol.subscribe('/user/queue/error');
    await carol.subscribe('/user/queue/messages');
    await carol.subscribe(s.topic).catch(() => undefined);
    await carol.sendWithReceipt('/app/chat.send', { sessionId: s.sessionId, content: 'let me in', clientMessageId: randomUUID() });
    await expect.poll(() => carol.on('/user/queue/error').map((m) => m.body.code)).toEqual(['NOT_A_PARTICIPANT', 'NOT_A_PARTICIPANT']);

    await alice.subscribe('/user/queue/ack');
    await alice.sendWithReceipt('/app/chat.send', { sessionId: s.sessionId, content: 'private', clientMessageId: randomUUID() });
    await expect.poll(() => alice.on('/user/queue/ack').length, { timeout: 10_000 }).toBe(1);
    const history = await api(two.url, 'GET', `/api/chat/${s.sessionId}/history`, carolUser.token);
    expect([history.status, history.body.code]).toEqual([403, 'NOT_A_PARTICIPANT']);
    // The send above crossed the broker; anything for carol would have too.
    expect(carol.messages.filter((m) => m.destination !== '/user/queue/error')).toEqual([]);
  });

  it('carries typing signals and delivered/seen receipts across instances', async () => {
    const s = await scene();
    const alice = await connect(one, s.alice);
    const bob = await connect(two, s.bob);
    await alice.subscribe(s.topic);
    await alice.subscribe('/user/queue/receipts');
    await bob.subscribe('/user/queue/messages', { ack: 'client-individual' });

    await bob.sendWithReceipt('/app/chat.typing', { sessionId: s.sessionId, typing: true });
    await expect.poll(() => alice.on(s.topic).filter((m) => m.headers['event-type'] === 'typing').map((m) => m.body), { timeout: 10_000 }).toEqual([
      { sessionId: s.sessionId, email: s.bob.email, typing: true },
    ]);

    await alice.sendWithReceipt('/app/chat.send', { sessionId: s.sessionId, content: 'did you get it?', clientMessageId: randomUUID() });
    await expect.poll(() => bob.on('/user/queue/messages').length, { timeout: 10_000 }).toBe(1);
    bob.on('/user/queue/messages')[0]!.raw.ack();
    await expect.poll(() => alice.on('/user/queue/receipts').map((m) => m.body.status), { timeout: 10_000 }).toEqual(['delivered']);
    await bob.sendWithReceipt('/app/chat.seen', { sessionId: s.sessionId, upToSeq: 1 });
    await expect.poll(() => alice.on('/user/queue/receipts').map((m) => [m.body.status, m.body.upToSeq, m.body.readerEmail]), { timeout: 10_000 }).toEqual([
      ['delivered', 1, s.bob.email],
      ['seen', 1, s.bob.email],
    ]);
  });

  it('accepts the identity provider’s tokens on every instance, refuses others, and has no dev issuer', async () => {
    const s = await scene();
    for (const instance of [one, two]) {
      const sessions = await api(instance.url, 'GET', '/api/chat/sessions', s.alice.token);
      expect(sessions.status).toBe(200);
      expect(sessions.body.sessions.map((x: any) => x.sessionId)).toContain(s.sessionId);
      expect((await api(instance.url, 'POST', '/dev/token', undefined, { email: 'mallory@example.com' })).status).toBe(404);
    }
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const forged = await new SignJWT({ email: s.alice.email }).setProtectedHeader({ alg: 'ES256' }).setExpirationTime('1h').sign(privateKey);
    for (const instance of [one, two]) {
      expect((await api(instance.url, 'GET', '/api/chat/sessions', forged)).status).toBe(401);
      await expect(connectStomp({ baseUrl: instance.url, token: forged })).rejects.toThrow();
    }
  });

  it('wakes the relays of the other instances by LISTEN/NOTIFY: cross-instance latency is not the 30 s poll', async () => {
    const s = await scene();
    const bob = await connect(two, s.bob);
    await bob.subscribe('/user/queue/messages');
    // A third writer with no relay at all: only NOTIFY can tell instances one and two about its commits.
    const logger = createLogger('silent');
    const db = new PgDatabase({ url: shared.databaseUrl, poolSize: 2, logger });
    const bus = new MemoryEventBus();
    const writer = new ChatService({ store: new PostgresMessageStore(db), profiles: new PostgresProfileDirectory(db), bus, clock: systemClock, maxContentChars: 4000 });
    try {
      const latencies: number[] = [];
      for (let i = 0; i < 10; i++) {
        const clientMessageId = randomUUID();
        await writer.sendMessage(s.alice, { sessionId: s.sessionId, content: `notify ${i}`, clientMessageId });
        const committedAt = performance.now();
        await expect.poll(() => bob.on('/user/queue/messages').some((m) => m.body.clientMessageId === clientMessageId), { timeout: 10_000, interval: 2 }).toBe(true);
        latencies.push(bob.on('/user/queue/messages').find((m) => m.body.clientMessageId === clientMessageId)!.receivedAt - committedAt);
      }
      latencies.sort((a, b) => a - b);
      console.log(`commit on a relay-less writer → delivery on instance two: p50 ${latencies[5]!.toFixed(1)} ms, max ${latencies.at(-1)!.toFixed(1)} ms (poll interval 30000 ms)`);
      expect(latencies.at(-1)!).toBeLessThan(3_000);
    } finally {
      await db.close();
    }
  });

  it('stores each sender’s messages in the order sent, whichever instance takes them in', async () => {
    const pairs = await Promise.all(
      [
        [one, two],
        [two, one],
      ].map(async ([from, to]) => {
        const [sender, recipient] = await Promise.all([newUser(shared.idp, 'sender'), newUser(shared.idp, 'recipient')]);
        return { sessionId: await openSession(from!.url, sender, recipient), sender, recipient, senderUrls: [from!.url], recipientUrls: [to!.url] };
      }),
    );
    const load = new LedgerLoad(pairs, { messagesPerSender: 150, window: 16, ratePerSender: 300, ackTimeoutMs: 5_000, deadlineMs: 20_000 });
    await load.start();
    const figures = await load.finish(shared.databaseUrl, 'order, no faults');
    expect([figures.lost, figures.unacked, figures.seqGaps, figures.reordered]).toEqual([0, 0, 0, 0]);
    expect(figures.deliveredLive).toBe(figures.stored);
    expectHandedOutOnceInOrder(figures);
  });

  it('reports both instances ready, send queue included', async () => {
    for (const instance of [one, two]) {
      const ready = await api(instance.url, 'GET', '/health/ready');
      expect(ready).toMatchObject({ status: 200, body: { status: 'up', checks: { database: 'up', bus: 'up', sendQueue: 'up' } } });
    }
  });
});
