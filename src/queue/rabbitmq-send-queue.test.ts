/**
 * The RabbitMQ send queue behind the send path, against the real broker and the real store: its
 * topology, when an enqueue counts as done, and what becomes of every kind of queued send: stored
 * once, repeated, refused, waited for through an outage, or dead-lettered with its error. The
 * port-level contract both drivers meet is send-queue.contract.ts; cross-instance and fault
 * scenarios with real clients are in test/cluster/.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { Connection } from 'rabbitmq-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FaultProxy } from '../../test/support/fault-proxy.js';
import { createTestDatabase, infra, type TestDatabase, uniqueName } from '../../test/support/infra.js';
import { ChatError } from '../chat/chat-errors.js';
import { ChatService } from '../chat/chat-service.js';
import { systemClock, type BusEnvelope } from '../chat/ports.js';
import { createLogger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { migrate } from '../store/postgres/migrator.js';
import { PgDatabase } from '../store/postgres/pg-database.js';
import { PostgresMessageStore } from '../store/postgres/postgres-message-store.js';
import { PostgresProfileDirectory } from '../store/postgres/postgres-profile-directory.js';
import { MemoryEventBus } from '../bus/memory-event-bus.js';
import { SendPath, type SendUseCases } from '../chat/send-path.js';
import type { SendMessageInput } from '../chat/chat-service.js';
import { RabbitMqSendQueue, type RabbitMqSendQueueOptions } from './rabbitmq-send-queue.js';

const rabbitmqUrl = infra.rabbitmqUrl ?? '';
const logger = createLogger('silent');

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('RabbitMqSendQueue behind the send path', () => {
  let database: TestDatabase;
  let admin: pg.Client;
  let raw: Connection;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    await migrate({ kind: 'postgres', url: database.url }, logger);
    admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    raw = new Connection(rabbitmqUrl);
    raw.on('error', () => undefined);
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  });
  afterAll(async () => {
    await raw?.close();
    await admin?.end();
    await database?.drop();
  });

  interface Fixture {
    queue: RabbitMqSendQueue;
    sends: SendPath;
    /** Puts a send of alice's on the queue, as the send path does when it cannot store it. */
    enqueue(request: SendMessageInput): Promise<void>;
    chat: ChatService;
    metrics: Metrics;
    /** Envelopes published on the bus for alice (repeat acks, failures of queued sends). */
    busEvents: BusEnvelope[];
    alice: { email: string; displayName: string };
    bob: { email: string };
    sessionId: string;
    dbProxy: FaultProxy;
  }

  async function fixture(options: { wrap?: (chat: SendUseCases) => SendUseCases; queue?: Partial<RabbitMqSendQueueOptions> } = {}): Promise<Fixture> {
    const { proxy: dbProxy, url } = await FaultProxy.forUrl(database.url, 5432);
    cleanups.push(() => dbProxy.close());
    const db = new PgDatabase({ url, poolSize: 4, logger, connectTimeoutMs: 1_000 });
    cleanups.push(() => db.close());
    const bus = new MemoryEventBus();
    await bus.start();
    cleanups.push(() => bus.stop());
    const chat = new ChatService({ store: new PostgresMessageStore(db), profiles: new PostgresProfileDirectory(db), bus, clock: systemClock, maxContentChars: 100 });
    const metrics = new Metrics();
    const queue = uniqueName('test.chat.send');
    const deadLetterQueue = `${queue}.dead`;
    const sendQueue = new RabbitMqSendQueue({
      url: rabbitmqUrl,
      instanceId: uniqueName('test'),
      queue,
      deadLetterQueue,
      retryMinMs: 20,
      retryMaxMs: 200,
      ...options.queue,
    });
    const sends = new SendPath({
      chat: options.wrap ? options.wrap(chat) : chat,
      queue: sendQueue,
      bus,
      onOutcome: (transport, result) => metrics.messagesSent.inc({ transport, result }),
    });
    cleanups.push(async () => {
      await raw.queueDelete({ queue });
      await raw.queueDelete({ queue: deadLetterQueue });
    });
    cleanups.push(() => sendQueue.stop());
    await sendQueue.start();

    const alice = { email: `alice.${randomUUID().slice(0, 8)}@example.com`, displayName: 'Alice' };
    const bob = { email: `bob.${randomUUID().slice(0, 8)}@example.com` };
    const { sessionId } = await chat.initSession(alice, { toEmail: bob.email, intent: 'dating' });
    const busEvents: BusEnvelope[] = [];
    bus.onEvent((envelope) => busEvents.push(envelope));
    await bus.addInterest(alice.email);
    const enqueue = (request: SendMessageInput) => sendQueue.enqueue({ caller: alice, request });
    return { queue: sendQueue, sends, enqueue, chat, metrics, busEvents, alice, bob, sessionId, dbProxy };
  }

  const send = (f: Fixture, content: string, clientMessageId = randomUUID()) => ({ sessionId: f.sessionId, content, clientMessageId });

  async function stored(sessionId: string): Promise<Array<{ client_msg_id: string; content: string; seq: number }>> {
    const { rows } = await admin.query('SELECT client_msg_id, content, seq::int AS seq FROM chat_messages WHERE session_id = $1 ORDER BY seq', [sessionId]);
    return rows;
  }

  async function queueDepth(queue: string): Promise<number> {
    return (await raw.queueDeclare({ queue, passive: true })).messageCount;
  }

  async function counter(metrics: Metrics, result: string): Promise<number> {
    const values = (await metrics.messagesSent.get()).values;
    return values.find((v) => v.labels.transport === 'stomp' && v.labels.result === result)?.value ?? 0;
  }

  it('declares a quorum send queue with a delivery limit, at-least-once dead-lettering and a single active consumer', async () => {
    const f = await fixture({ queue: { deliveryLimit: 7 } });
    const args = {
      'x-queue-type': 'quorum' as const,
      'x-delivery-limit': 7,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': f.queue.deadLetterQueue,
      'x-dead-letter-strategy': 'at-least-once',
      'x-overflow': 'reject-publish' as const,
      'x-single-active-consumer': true,
    };
    // Re-declaring with the same arguments is fine; any other argument is refused by the broker.
    await raw.queueDeclare({ queue: f.queue.queue, durable: true, arguments: args });
    await expect(raw.queueDeclare({ queue: f.queue.queue, durable: true, arguments: { ...args, 'x-delivery-limit': 8 } })).rejects.toMatchObject({ code: 'PRECONDITION_FAILED' });
    await raw.queueDeclare({ queue: f.queue.deadLetterQueue, durable: true, arguments: { 'x-queue-type': 'quorum' } });
    expect(f.queue.isHealthy()).toBe(true);
  });

  it('stores a queued send once, and a repeat is acked through the bus without a second row', async () => {
    const f = await fixture();
    const first = send(f, 'hello');
    await f.enqueue(first);
    await expect.poll(() => stored(f.sessionId)).toEqual([{ client_msg_id: first.clientMessageId, content: 'hello', seq: 1 }]);

    await f.enqueue(first);
    await expect.poll(() => f.busEvents.length).toBe(1);
    expect(f.busEvents[0]!.event).toMatchObject({ type: 'message', destinations: [{ user: f.alice.email, queue: 'ack' }], message: { clientMessageId: first.clientMessageId, seq: 1 } });
    expect(await stored(f.sessionId)).toHaveLength(1);
    await expect.poll(() => queueDepth(f.queue.queue)).toBe(0);
  });

  it('refuses a bad send at once and queues nothing, also behind queued sends of its connection', async () => {
    const f = await fixture();
    const viaStomp = { transport: 'stomp' as const, connection: 'conn-1' };
    await expect(f.sends.send(f.alice, send(f, ''), viaStomp)).rejects.toMatchObject({ code: 'CONTENT_EMPTY' });
    const carol = { email: `carol.${randomUUID().slice(0, 8)}@example.com` };
    await expect(f.sends.send(carol, send(f, 'let me in'), viaStomp)).rejects.toMatchObject({ code: 'NOT_A_PARTICIPANT' });
    // Spill mode: the store is away, so this connection's sends go to the queue, checked first.
    f.dbProxy.setMode('cut');
    await expect(f.sends.send(f.alice, send(f, 'queued'), viaStomp)).resolves.toEqual({ kind: 'queued' });
    f.dbProxy.setMode('pass');
    await expect(f.sends.send(f.alice, { ...send(f, 'x'), clientMessageId: 'not-a-uuid' }, viaStomp)).rejects.toMatchObject({ code: 'VALIDATION_FAILED' });
    await expect.poll(() => stored(f.sessionId).then((rows) => rows.map((r) => r.content)), { timeout: 10_000 }).toEqual(['queued']);
    expect(await queueDepth(f.queue.queue)).toBe(0);
    expect(await counter(f.metrics, 'queued')).toBe(1);
  });

  it('tells the sender on the bus when a queued send turns out permanently wrong, and drops it', async () => {
    const f = await fixture();
    const original = send(f, 'first');
    await f.enqueue(original);
    await expect.poll(() => stored(f.sessionId)).toHaveLength(1);
    // Passes the up-front check (which does not look at idempotency keys), fails at the store.
    await f.enqueue({ ...original, content: 'different' });
    await expect.poll(() => f.busEvents.length).toBe(1);
    expect(f.busEvents[0]!.event).toMatchObject({
      type: 'error',
      destinations: [{ user: f.alice.email, queue: 'error' }],
      error: { code: 'IDEMPOTENCY_KEY_REUSED', clientMessageId: original.clientMessageId },
    });
    await expect.poll(() => queueDepth(f.queue.queue)).toBe(0);
    expect(await queueDepth(f.queue.deadLetterQueue)).toBe(0);
  });

  it('accepts sends while the database is unreachable and stores them, in order, when it is back', async () => {
    const f = await fixture();
    const viaStomp = { transport: 'stomp' as const, connection: 'conn-1' };
    expect(await f.sends.send(f.alice, send(f, 'warm-up'), viaStomp)).toMatchObject({ kind: 'stored' }); // the session is cached now

    f.dbProxy.setMode('cut');
    const during = Array.from({ length: 5 }, (_, i) => send(f, `during ${i}`));
    for (const request of during) expect(await f.sends.send(f.alice, request, viaStomp)).toEqual({ kind: 'queued' });
    // Held unacked by the consumer, retried in-process: neither stored nor lost nor dead-lettered.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await stored(f.sessionId)).toHaveLength(1);
    expect(await queueDepth(f.queue.deadLetterQueue)).toBe(0);

    f.dbProxy.setMode('pass');
    // A send right after the outage follows the queued ones of its connection, and its seq too.
    const after = send(f, 'after');
    await f.sends.send(f.alice, after, viaStomp);
    await expect.poll(() => stored(f.sessionId).then((rows) => rows.map((r) => r.content)), { timeout: 10_000 }).toEqual(['warm-up', ...during.map((r) => r.content), 'after']);
    await expect.poll(() => queueDepth(f.queue.queue)).toBe(0);
  });

  it('rejects a send the broker cannot route instead of confirming it silently', async () => {
    const f = await fixture();
    await f.enqueue(send(f, 'warm-up')); // the publisher's channel is open now
    await expect.poll(() => stored(f.sessionId)).toHaveLength(1);
    // Deleted under a running publisher: the next publish has no queue to go to (until the
    // consumer, cancelled with its queue, declares it again some 200 ms later).
    await raw.queueDelete({ queue: f.queue.queue });
    await expect(f.enqueue(send(f, 'into the void'))).rejects.toThrow(/unroutable/);
    // The consumer was cancelled with its queue; it declares it again and the next send works.
    await expect.poll(() => raw.queueDeclare({ queue: f.queue.queue, passive: true }).then(() => true, () => false), { timeout: 10_000 }).toBe(true);
    const next = send(f, 'back');
    await expect.poll(() => f.enqueue(next).then(() => true, () => false), { timeout: 10_000 }).toBe(true);
    await expect.poll(() => stored(f.sessionId).then((rows) => rows.map((r) => r.content))).toEqual(['warm-up', 'back']);
  });

  it('dead-letters a poison send with its error while the others are stored', async () => {
    const poisonCalls: string[] = [];
    const f = await fixture({
      wrap: (chat) => ({
        checkSend: (caller, input) => chat.checkSend(caller, input),
        repeatAckEnvelope: (caller, message) => chat.repeatAckEnvelope(caller, message),
        sendFailedEnvelope: (caller, input, err) => chat.sendFailedEnvelope(caller, input, err),
        sendMessage: async (caller, input) => {
          if (input.content === 'poison') {
            poisonCalls.push(String(input.clientMessageId));
            throw new TypeError('cannot read properties of undefined (poison)');
          }
          return chat.sendMessage(caller, input);
        },
      }),
    });
    const poison = send(f, 'poison');
    const good = Array.from({ length: 5 }, (_, i) => send(f, `good ${i}`));
    await f.enqueue(poison);
    for (const request of good) await f.enqueue(request);
    // Raw garbage on the queue, as a buggy older version might have published.
    const rawPublisher = raw.createPublisher({ confirm: true });
    cleanups.push(() => rawPublisher.close());
    await rawPublisher.send({ routingKey: f.queue.queue, contentType: 'application/json' }, Buffer.from('{"not":"a send"}'));

    await expect.poll(() => stored(f.sessionId).then((rows) => rows.length)).toBe(5);
    await expect.poll(() => queueDepth(f.queue.deadLetterQueue), { timeout: 10_000 }).toBe(2);
    expect(poisonCalls).toHaveLength(3); // maxAttempts, then no more
    const dead = [await raw.basicGet({ queue: f.queue.deadLetterQueue, noAck: true }), await raw.basicGet({ queue: f.queue.deadLetterQueue, noAck: true })];
    const errors = dead.map((m) => String(m?.headers?.['x-chat-error'])).sort();
    expect(errors).toEqual([expect.stringMatching(/^Error: malformed send/), expect.stringMatching(/^TypeError: .*poison/)]);
    const poisoned = dead.find((m) => String(m?.headers?.['x-chat-error']).startsWith('TypeError'));
    expect(poisoned?.body).toMatchObject({ request: { clientMessageId: poison.clientMessageId } });
    expect(poisoned?.headers?.['x-chat-attempts']).toBe(3);
    expect(await queueDepth(f.queue.queue)).toBe(0);
  });

  it('redelivers a send whose ack was lost after its commit, and stores it once', async () => {
    const { proxy: amqpProxy, url } = await FaultProxy.forUrl(rabbitmqUrl, 5672);
    cleanups.push(() => amqpProxy.close());
    let cutAfterCommit = true;
    const f = await fixture({
      queue: { url },
      wrap: (chat) => ({
        checkSend: (caller, input) => chat.checkSend(caller, input),
        repeatAckEnvelope: (caller, message) => chat.repeatAckEnvelope(caller, message),
        sendFailedEnvelope: (caller, input, err) => chat.sendFailedEnvelope(caller, input, err),
        sendMessage: async (caller, input) => {
          const result = await chat.sendMessage(caller, input);
          if (cutAfterCommit) {
            // Committed, not yet acked: the connection dies here, as in a crash.
            cutAfterCommit = false;
            amqpProxy.setMode('cut');
            amqpProxy.setMode('pass');
          }
          return result;
        },
      }),
    });
    const request = send(f, 'exactly once');
    await f.enqueue(request);
    await expect.poll(() => f.busEvents.length, { timeout: 15_000 }).toBe(1);
    expect(f.busEvents[0]!.event).toMatchObject({ type: 'message', destinations: [{ queue: 'ack' }], message: { clientMessageId: request.clientMessageId } });
    expect(await stored(f.sessionId)).toHaveLength(1);
    await expect.poll(() => queueDepth(f.queue.queue)).toBe(0);
  });

  it('fails an enqueue fast while the broker is silent, refuses a send that can be neither stored nor queued, and stop does not hang', async () => {
    const { proxy: amqpProxy, url } = await FaultProxy.forUrl(rabbitmqUrl, 5672);
    cleanups.push(() => amqpProxy.close());
    const f = await fixture({ queue: { url, publishTimeoutMs: 300, closeTimeoutMs: 300 } });
    amqpProxy.setMode('black-hole');
    await expect(f.enqueue(send(f, 'lost in space'))).rejects.toThrow();
    f.dbProxy.setMode('cut');
    // Neither stored nor queued: the sender hears the store is unavailable, to retry the same send.
    await expect(f.sends.send(f.alice, send(f, 'nowhere'), { transport: 'stomp', connection: 'c' })).rejects.toBeInstanceOf(ChatError);
    const started = Date.now();
    await f.queue.stop();
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
