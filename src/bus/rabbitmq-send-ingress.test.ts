/**
 * The send queue against the real broker and the real store: what is queued, when a send counts as
 * accepted, and what becomes of every kind of send on the consuming side: stored once, repeated,
 * refused, waited for through an outage, or dead-lettered with its error. Cross-instance and fault
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
import { LocalProfileDirectory } from '../profiles/local-profile-directory.js';
import { migrate } from '../store/postgres/migrator.js';
import { PgDatabase } from '../store/postgres/pg-database.js';
import { PostgresMessageStore } from '../store/postgres/postgres-message-store.js';
import { MemoryEventBus } from './memory-event-bus.js';
import { type IngressChat, RabbitMqSendIngress, type RabbitMqSendIngressOptions } from './rabbitmq-send-ingress.js';

const rabbitmqUrl = infra.rabbitmqUrl ?? '';
const logger = createLogger('silent');

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('RabbitMqSendIngress', () => {
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
    ingress: RabbitMqSendIngress;
    chat: ChatService;
    metrics: Metrics;
    /** Envelopes the ingress published on the bus for alice (repeat acks, failures). */
    busEvents: BusEnvelope[];
    alice: { email: string; displayName: string };
    bob: { email: string };
    sessionId: string;
    dbProxy: FaultProxy;
  }

  async function fixture(options: { wrap?: (chat: IngressChat) => IngressChat; ingress?: Partial<RabbitMqSendIngressOptions> } = {}): Promise<Fixture> {
    const { proxy: dbProxy, url } = await FaultProxy.forUrl(database.url, 5432);
    cleanups.push(() => dbProxy.close());
    const db = new PgDatabase({ url, poolSize: 4, logger, connectTimeoutMs: 1_000 });
    cleanups.push(() => db.close());
    const bus = new MemoryEventBus();
    await bus.start();
    cleanups.push(() => bus.stop());
    const chat = new ChatService({ store: new PostgresMessageStore(db), profiles: new LocalProfileDirectory(db), bus, clock: systemClock, maxContentChars: 100 });
    const metrics = new Metrics();
    const queue = uniqueName('test.chat.send');
    const deadLetterQueue = `${queue}.dead`;
    const ingress = new RabbitMqSendIngress({
      url: rabbitmqUrl,
      instanceId: uniqueName('test'),
      queue,
      deadLetterQueue,
      retryMinMs: 20,
      retryMaxMs: 200,
      chat: options.wrap ? options.wrap(chat) : chat,
      bus,
      metrics,
      ...options.ingress,
    });
    cleanups.push(async () => {
      await raw.queueDelete({ queue });
      await raw.queueDelete({ queue: deadLetterQueue });
    });
    cleanups.push(() => ingress.stop());
    await ingress.start();

    const alice = { email: `alice.${randomUUID().slice(0, 8)}@example.com`, displayName: 'Alice' };
    const bob = { email: `bob.${randomUUID().slice(0, 8)}@example.com` };
    const { sessionId } = await chat.initSession(alice, { toEmail: bob.email, intent: 'dating' });
    const busEvents: BusEnvelope[] = [];
    bus.onEvent((envelope) => busEvents.push(envelope));
    await bus.addInterest(alice.email);
    return { ingress, chat, metrics, busEvents, alice, bob, sessionId, dbProxy };
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
    const f = await fixture({ ingress: { deliveryLimit: 7 } });
    const args = {
      'x-queue-type': 'quorum' as const,
      'x-delivery-limit': 7,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': f.ingress.deadLetterQueue,
      'x-dead-letter-strategy': 'at-least-once',
      'x-overflow': 'reject-publish' as const,
      'x-single-active-consumer': true,
    };
    // Re-declaring with the same arguments is fine; any other argument is refused by the broker.
    await raw.queueDeclare({ queue: f.ingress.queue, durable: true, arguments: args });
    await expect(raw.queueDeclare({ queue: f.ingress.queue, durable: true, arguments: { ...args, 'x-delivery-limit': 8 } })).rejects.toMatchObject({ code: 'PRECONDITION_FAILED' });
    await raw.queueDeclare({ queue: f.ingress.deadLetterQueue, durable: true, arguments: { 'x-queue-type': 'quorum' } });
    expect(f.ingress.isHealthy()).toBe(true);
  });

  it('stores a queued send once, and a repeat is acked through the bus without a second row', async () => {
    const f = await fixture();
    const first = send(f, 'hello');
    await f.ingress.submit(f.alice, first);
    await expect.poll(() => stored(f.sessionId)).toEqual([{ client_msg_id: first.clientMessageId, content: 'hello', seq: 1 }]);

    await f.ingress.submit(f.alice, first);
    await expect.poll(() => f.busEvents.length).toBe(1);
    expect(f.busEvents[0]!.event).toMatchObject({ type: 'message', destinations: [{ user: f.alice.email, queue: 'ack' }], message: { clientMessageId: first.clientMessageId, seq: 1 } });
    expect(await stored(f.sessionId)).toHaveLength(1);
    expect([await counter(f.metrics, 'created'), await counter(f.metrics, 'repeat')]).toEqual([1, 1]);
    await expect.poll(() => queueDepth(f.ingress.queue)).toBe(0);
  });

  it('refuses a bad send at once and queues nothing', async () => {
    const f = await fixture();
    await expect(f.ingress.submit(f.alice, send(f, ''))).rejects.toMatchObject({ code: 'CONTENT_EMPTY' });
    const carol = { email: `carol.${randomUUID().slice(0, 8)}@example.com` };
    await expect(f.ingress.submit(carol, send(f, 'let me in'))).rejects.toMatchObject({ code: 'NOT_A_PARTICIPANT' });
    await expect(f.ingress.submit(f.alice, { ...send(f, 'x'), clientMessageId: 'not-a-uuid' })).rejects.toMatchObject({ code: 'VALIDATION_FAILED' });
    expect(await queueDepth(f.ingress.queue)).toBe(0);
    expect(await stored(f.sessionId)).toEqual([]);
  });

  it('tells the sender on the bus when a queued send turns out permanently wrong, and drops it', async () => {
    const f = await fixture();
    const original = send(f, 'first');
    await f.ingress.submit(f.alice, original);
    await expect.poll(() => stored(f.sessionId)).toHaveLength(1);
    // Passes the up-front check (which does not look at idempotency keys), fails at the store.
    await f.ingress.submit(f.alice, { ...original, content: 'different' });
    await expect.poll(() => f.busEvents.length).toBe(1);
    expect(f.busEvents[0]!.event).toMatchObject({
      type: 'error',
      destinations: [{ user: f.alice.email, queue: 'error' }],
      error: { code: 'IDEMPOTENCY_KEY_REUSED', clientMessageId: original.clientMessageId },
    });
    await expect.poll(() => queueDepth(f.ingress.queue)).toBe(0);
    expect(await queueDepth(f.ingress.deadLetterQueue)).toBe(0);
  });

  it('accepts sends while the database is unreachable and stores them when it is back', async () => {
    const f = await fixture();
    await f.ingress.submit(f.alice, send(f, 'warm-up')); // the session is now cached by the check
    await expect.poll(() => stored(f.sessionId)).toHaveLength(1);

    f.dbProxy.setMode('cut');
    const during = Array.from({ length: 5 }, (_, i) => send(f, `during ${i}`));
    for (const request of during) await f.ingress.submit(f.alice, request);
    // Held unacked by the consumer, retried in-process: neither stored nor lost nor dead-lettered.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await stored(f.sessionId)).toHaveLength(1);
    expect(await queueDepth(f.ingress.deadLetterQueue)).toBe(0);

    f.dbProxy.setMode('pass');
    await expect.poll(() => stored(f.sessionId).then((rows) => rows.map((r) => r.client_msg_id).sort()), { timeout: 10_000 }).toEqual(
      [...during.map((r) => r.clientMessageId), (await stored(f.sessionId))[0]!.client_msg_id].sort(),
    );
    await expect.poll(() => queueDepth(f.ingress.queue)).toBe(0);
  });

  it('rejects a send the broker cannot route instead of confirming it silently', async () => {
    const f = await fixture();
    await f.ingress.submit(f.alice, send(f, 'warm-up')); // the publisher's channel is open now
    await expect.poll(() => stored(f.sessionId)).toHaveLength(1);
    // Deleted under a running publisher: the next publish has no queue to go to (until the
    // consumer, cancelled with its queue, declares it again some 200 ms later).
    await raw.queueDelete({ queue: f.ingress.queue });
    await expect(f.ingress.submit(f.alice, send(f, 'into the void'))).rejects.toMatchObject({ code: 'BUS_UNAVAILABLE', cause: { message: expect.stringMatching(/unroutable/) } });
    // The consumer was cancelled with its queue; it declares it again and the next send works.
    await expect.poll(() => raw.queueDeclare({ queue: f.ingress.queue, passive: true }).then(() => true, () => false), { timeout: 10_000 }).toBe(true);
    const next = send(f, 'back');
    await expect.poll(() => f.ingress.submit(f.alice, next).then(() => true, () => false), { timeout: 10_000 }).toBe(true);
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
    await f.ingress.submit(f.alice, poison);
    for (const request of good) await f.ingress.submit(f.alice, request);
    // Raw garbage on the queue, as a buggy older version might have published.
    const rawPublisher = raw.createPublisher({ confirm: true });
    cleanups.push(() => rawPublisher.close());
    await rawPublisher.send({ routingKey: f.ingress.queue, contentType: 'application/json' }, Buffer.from('{"not":"a send"}'));

    await expect.poll(() => stored(f.sessionId).then((rows) => rows.length)).toBe(5);
    await expect.poll(() => queueDepth(f.ingress.deadLetterQueue), { timeout: 10_000 }).toBe(2);
    expect(poisonCalls).toHaveLength(3); // maxAttempts, then no more
    const dead = [await raw.basicGet({ queue: f.ingress.deadLetterQueue, noAck: true }), await raw.basicGet({ queue: f.ingress.deadLetterQueue, noAck: true })];
    const errors = dead.map((m) => String(m?.headers?.['x-chat-error'])).sort();
    expect(errors).toEqual([expect.stringMatching(/^Error: malformed send/), expect.stringMatching(/^TypeError: .*poison/)]);
    const poisoned = dead.find((m) => String(m?.headers?.['x-chat-error']).startsWith('TypeError'));
    expect(poisoned?.body).toMatchObject({ request: { clientMessageId: poison.clientMessageId } });
    expect(poisoned?.headers?.['x-chat-attempts']).toBe(3);
    expect(await queueDepth(f.ingress.queue)).toBe(0);
  });

  it('redelivers a send whose ack was lost after its commit, and stores it once', async () => {
    const { proxy: amqpProxy, url } = await FaultProxy.forUrl(rabbitmqUrl, 5672);
    cleanups.push(() => amqpProxy.close());
    let cutAfterCommit = true;
    const f = await fixture({
      ingress: { url },
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
    await f.ingress.submit(f.alice, request);
    await expect.poll(() => f.busEvents.length, { timeout: 15_000 }).toBe(1);
    expect(f.busEvents[0]!.event).toMatchObject({ type: 'message', destinations: [{ queue: 'ack' }], message: { clientMessageId: request.clientMessageId } });
    expect(await stored(f.sessionId)).toHaveLength(1);
    await expect.poll(() => queueDepth(f.ingress.queue)).toBe(0);
    expect([await counter(f.metrics, 'created'), await counter(f.metrics, 'repeat')]).toEqual([1, 1]);
  });

  it('fails a send fast with BUS_UNAVAILABLE while the broker is silent, and stop does not hang', async () => {
    const { proxy: amqpProxy, url } = await FaultProxy.forUrl(rabbitmqUrl, 5672);
    cleanups.push(() => amqpProxy.close());
    const f = await fixture({ ingress: { url, publishTimeoutMs: 300, closeTimeoutMs: 300 } });
    amqpProxy.setMode('black-hole');
    await expect(f.ingress.submit(f.alice, send(f, 'lost in space'))).rejects.toBeInstanceOf(ChatError);
    const started = Date.now();
    await f.ingress.stop();
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
