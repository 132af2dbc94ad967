/**
 * Nothing acknowledged is lost when the network to RabbitMQ or PostgreSQL fails under load.
 *
 * Two in-process instances, each reaching the broker and the database through its own TCP fault
 * proxy. Each test runs a load through the SDK (4 ChatClient senders × 150 messages, two
 * instances, senders on one instance and their recipients on the other), breaks something
 * mid-load, heals it, and checks the ledger: every accepted or acknowledged message is stored
 * exactly once with gapless seqs, every send is eventually acknowledged, every stored message was
 * delivered live to its recipient, who stayed connected throughout (duplicates allowed on the
 * wire), and the recipient's SDK handed each one to the application once, in seq order.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { Connection } from 'rabbitmq-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SendUseCases } from '../../src/chat/send-path.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { connectStomp } from '../support/stomp-client.js';
import type { TestApp } from '../support/test-app.js';
import { api, type ClusterShared, deleteQueues, newUser, openSession, sharedCluster, startInstance, storedMessages } from './support/cluster.js';
import { expectHandedOutOnceInOrder, type LedgerFigures, LedgerLoad, type LoadOptions, type Pair } from './support/load.js';

const LOAD: LoadOptions = { messagesPerSender: 150, window: 8, ratePerSender: 50, ackTimeoutMs: 3_000, deadlineMs: 40_000 };

/** A send that throws a non-ChatError every time it is stored, as a bug would. */
const poisonous = (chat: SendUseCases): SendUseCases => ({
  checkSend: (caller, input) => chat.checkSend(caller, input),
  repeatAckEnvelope: (caller, message) => chat.repeatAckEnvelope(caller, message),
  sendFailedEnvelope: (caller, input, err) => chat.sendFailedEnvelope(caller, input, err),
  sendMessage: async (caller, input) => {
    if (typeof input.content === 'string' && input.content.startsWith('POISON')) throw new TypeError('poisoned send: cannot be stored');
    return chat.sendMessage(caller, input);
  },
});

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('faults under load (two instances behind TCP fault proxies)', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  const nodes: Array<{ app: TestApp; amqp: FaultProxy; db: FaultProxy }> = [];

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
    for (const name of ['one', 'two']) {
      const amqp = await FaultProxy.forUrl(shared.amqpUrl, 5672);
      const db = await FaultProxy.forUrl(shared.databaseUrl, 5432);
      const app = await startInstance(shared, {
        name,
        amqpUrl: amqp.url,
        databaseUrl: db.url,
        app: { faults: { sendChat: poisonous }, outbox: { maxRetries: 4, backoff: (n) => 200 * n } },
      });
      nodes.push({ app, amqp: amqp.proxy, db: db.proxy });
    }
  });
  afterAll(async () => {
    for (const node of nodes) {
      node.amqp.setMode('pass');
      node.db.setMode('pass');
    }
    await Promise.allSettled(nodes.map((n) => n.app.close()));
    await Promise.allSettled(nodes.flatMap((n) => [n.amqp.close(), n.db.close()]));
    if (shared) await deleteQueues(shared.amqpUrl, shared);
    await database?.drop();
  });

  const urls = (): [string, string] => [nodes[0]!.app.url, nodes[1]!.app.url];

  /** Four pairs; senders alternate between the instances, each recipient is on the other one. */
  async function pairs(): Promise<Pair[]> {
    const [one, two] = urls();
    return Promise.all(
      Array.from({ length: 4 }, async (_, i) => {
        const [sender, recipient] = await Promise.all([newUser(shared.idp, `sender${i}`), newUser(shared.idp, `recipient${i}`)]);
        const [mine, theirs] = i % 2 === 0 ? [one, two] : [two, one];
        const sessionId = await openSession(mine, sender, recipient);
        return { sessionId, sender, recipient, senderUrls: [mine, theirs], recipientUrls: [theirs, mine] };
      }),
    );
  }

  const readiness = async (url: string): Promise<number> => (await api(url, 'GET', '/health/ready').catch(() => ({ status: 0 }))).status;

  async function allReady(): Promise<void> {
    for (const url of urls()) await expect.poll(() => readiness(url), { timeout: 20_000, interval: 100 }).toBe(200);
  }

  function expectNothingLost(f: LedgerFigures, load: LedgerLoad): void {
    expect(f.lost, 'accepted or acknowledged but not stored').toBe(0);
    expect(f.storedMoreThanOnce).toBe(0);
    expect(f.seqGaps).toBe(0);
    expect(f.permanentErrors).toBe(0);
    expect(f.unacked, 'every send acknowledged in the end').toBe(0);
    expect(f.acked).toBe(load.total);
    expect(f.stored).toBe(load.total);
    // Recipients stayed connected: each message must have reached them live, however late (the
    // instance queues outlive broker connections), not only through a history catch-up.
    expect(f.deliveredLive, 'every stored message delivered live to its connected recipient').toBe(f.stored);
    expectHandedOutOnceInOrder(f);
  }

  async function startLoad(): Promise<LedgerLoad> {
    await allReady();
    const load = new LedgerLoad(await pairs(), LOAD);
    await load.start();
    await expect.poll(() => load.acked, { timeout: 20_000, interval: 20 }).toBeGreaterThanOrEqual(load.total / 4);
    return load;
  }

  it('poison: a send that always fails and a poison outbox row end dead with their errors; the load goes through', async () => {
    const load = await startLoad();
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(urls()[0], alice, bob);
    // Raw STOMP, not the SDK: the SDK re-SENDs a send refused with a 5xx until it is acknowledged,
    // and every repeat would be dead-lettered again; this test counts the one dead letter of one SEND.
    const client = await connectStomp({ baseUrl: urls()[0], token: alice.token });
    const poisonId = randomUUID();
    await client.sendWithReceipt('/app/chat.send', { sessionId, content: 'POISON pill', clientMessageId: poisonId });
    const admin = new pg.Client({ connectionString: shared.databaseUrl });
    await admin.connect();
    try {
      // An event the bus cannot publish (recipients must be a list): it must not hold up the rows behind it.
      const { rows } = await admin.query<{ id: string }>(
        `INSERT INTO chat_message_outbox (destination, payload) VALUES ('/topic/session.poison', '{"recipients":"nobody","event":{"type":"typing"}}') RETURNING id`,
      );
      const figures = await load.finish(shared.databaseUrl, 'poison send + poison outbox row');
      expectNothingLost(figures, load);

      await expect
        .poll(async () => (await admin.query('SELECT dead, retry_count, last_error FROM chat_message_outbox WHERE id = $1', [rows[0]!.id])).rows[0], { timeout: 15_000 })
        .toMatchObject({ dead: true, retry_count: 4, last_error: expect.stringMatching(/TypeError/) });
      const raw = new Connection(shared.amqpUrl);
      raw.on('error', () => undefined);
      try {
        await expect.poll(async () => (await raw.queueDeclare({ queue: shared.deadLetterQueue, passive: true })).messageCount, { timeout: 15_000 }).toBe(1);
        const dead = await raw.basicGet({ queue: shared.deadLetterQueue, noAck: true });
        expect(dead?.body).toMatchObject({ request: { clientMessageId: poisonId } });
        expect(dead?.headers).toMatchObject({ 'x-chat-error': 'TypeError: poisoned send: cannot be stored', 'x-chat-attempts': 3 });
        console.log(`poison: send dead-lettered in ${shared.deadLetterQueue} with x-chat-error "${String(dead?.headers?.['x-chat-error'])}"; outbox row ${rows[0]!.id} dead after 4 tries`);
      } finally {
        await raw.close();
      }
      expect(await storedMessages(shared.databaseUrl, [sessionId])).toEqual([]);
    } finally {
      await client.close();
      await admin.end();
    }
  });

  it('RabbitMQ connections cut mid-load: reconnect, re-declare, re-bind; not ready meanwhile', async () => {
    const load = await startLoad();
    for (const node of nodes) node.amqp.setMode('cut');
    await expect.poll(() => readiness(urls()[0]), { timeout: 10_000, interval: 50 }).toBe(503);
    await new Promise((resolve) => setTimeout(resolve, 1_000)); // reconnects are refused meanwhile
    for (const node of nodes) node.amqp.setMode('pass');
    await allReady();
    expect(nodes.every((n) => n.amqp.accepted > 4)).toBe(true);
    // Operators see it: each instance counted its bus reconnect.
    for (const url of urls()) {
      const text = await (await fetch(`${url}/metrics`)).text();
      expect(Number(/^chat_bus_reconnects_total (\d+)/m.exec(text)?.[1] ?? 0)).toBeGreaterThanOrEqual(1);
    }
    const figures = await load.finish(shared.databaseUrl, 'RabbitMQ cut');
    expectNothingLost(figures, load);
  });

  it('RabbitMQ black-holed past the heart-beat on one instance: detected, republished, drained after healing', async () => {
    const load = await startLoad();
    const [silent, other] = nodes;
    silent!.amqp.setMode('black-hole');
    const blackholedAt = Date.now();
    // Heart-beat 1 s: missing beats are noticed after ~2 s, and the instance says it is not ready.
    await expect.poll(() => readiness(silent!.app.url), { timeout: 10_000, interval: 50 }).toBe(503);
    const detectedAfter = Date.now() - blackholedAt;
    expect(await readiness(other!.app.url)).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    silent!.amqp.setMode('pass');
    await allReady();
    console.log(`black-hole detected after ${detectedAfter} ms; healed after ${Date.now() - blackholedAt} ms`);
    const figures = await load.finish(shared.databaseUrl, 'RabbitMQ black-holed');
    expectNothingLost(figures, load);
  });

  it('PostgreSQL unreachable for 3 s: STOMP sends are accepted and stored when it is back; REST gets 503; not ready meanwhile', async () => {
    const load = await startLoad();
    const [one] = urls();
    const [rester, peer] = await Promise.all([newUser(shared.idp, 'rester'), newUser(shared.idp, 'peer')]);
    const restSession = await openSession(one, rester, peer);
    const storedBefore = new Set((await storedMessages(shared.databaseUrl, load.pairs.map((p) => p.sessionId))).map((m) => m.clientMessageId));

    for (const node of nodes) node.db.setMode('cut');
    const cutAt = Date.now();
    await expect.poll(() => readiness(one), { timeout: 10_000, interval: 50 }).toBe(503);
    const restId = randomUUID();
    const rest = await api(one, 'POST', '/api/chat/message', rester.token, { sessionId: restSession, content: 'during the outage', clientMessageId: restId });
    expect([rest.status, rest.contentType, rest.body.code]).toEqual([503, expect.stringMatching(/^application\/problem\+json/), 'STORE_UNAVAILABLE']);
    // Sends keep being accepted into the queue while the database is away.
    const acceptedAtCut = load.accepted;
    await expect.poll(() => load.accepted, { timeout: 5_000, interval: 20 }).toBeGreaterThan(acceptedAtCut);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 3_000 - (Date.now() - cutAt))));
    const acceptedDuringOutage = load.acceptedIds().filter((id) => !storedBefore.has(id));
    for (const node of nodes) node.db.setMode('pass');
    await allReady();

    const figures = await load.finish(shared.databaseUrl, 'PostgreSQL cut 3 s');
    expectNothingLost(figures, load);
    const storedAfter = new Set((await storedMessages(shared.databaseUrl, load.pairs.map((p) => p.sessionId))).map((m) => m.clientMessageId));
    console.log(`PostgreSQL cut: ${acceptedDuringOutage.length} sends accepted while it was away or not yet stored, all stored after`);
    expect(acceptedDuringOutage.filter((id) => !storedAfter.has(id))).toEqual([]);
    // Nothing half-written: the refused REST send is not there, and a retry now stores it once.
    expect(await storedMessages(shared.databaseUrl, [restSession])).toEqual([]);
    const retry = await api(one, 'POST', '/api/chat/message', rester.token, { sessionId: restSession, content: 'during the outage', clientMessageId: restId });
    expect(retry.status).toBe(201);
  });
});
