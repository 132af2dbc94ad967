/**
 * One user's malformed sends over STOMP, on an instance with PostgreSQL and RabbitMQ, must neither
 * fail nor slow the sends of 50 concurrent bystanders: each is refused to its sender alone.
 *
 * Raw STOMP frames rather than the SDK: the test times the service from each SEND frame to its ack
 * frame and reads the refusal frames themselves (problem body, client-message-id header); the
 * SDK's resend timers and error objects would stand between the measurement and the service.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import type { TestApp } from '../support/test-app.js';
import { type ClusterShared, deleteQueues, newUser, openSession, sharedCluster, startInstance, storedMessages } from './support/cluster.js';

const SENDERS = 10;
const PER_SENDER = 5;

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('a poison send among bystanders over STOMP with RabbitMQ', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  let app: TestApp;
  const bystanders: Array<{ client: TestStompClient; sessionId: string }> = [];
  let poisoner: { client: TestStompClient; sessionId: string };

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
    app = await startInstance(shared, { name: 'poison' });
    const connect = async (name: string) => {
      const [me, peer] = [await newUser(shared.idp, name), await newUser(shared.idp, `${name}-peer`)];
      const sessionId = await openSession(app.url, me, peer);
      const client = await connectStomp({ baseUrl: app.url, token: me.token });
      await client.subscribe('/user/queue/ack');
      await client.subscribe('/user/queue/error');
      return { client, sessionId };
    };
    for (let i = 0; i < SENDERS; i++) bystanders.push(await connect(`by${i}`));
    poisoner = await connect('mallory');
  });
  afterAll(async () => {
    for (const { client } of [...bystanders, poisoner]) await client?.close();
    await app?.close();
    if (shared) await deleteQueues(shared.amqpUrl, shared);
    await database?.drop();
  });

  /** Every bystander sends PER_SENDER at once; resolves with each send's send→ack time. */
  async function round(withPoison: boolean): Promise<{ ackMs: number[]; poisonIds: string[] }> {
    const sent = new Map<string, { client: TestStompClient; at: number }>();
    for (const { client, sessionId } of bystanders) {
      for (let i = 0; i < PER_SENDER; i++) {
        const clientMessageId = randomUUID();
        sent.set(clientMessageId, { client, at: performance.now() });
        client.send('/app/chat.send', { sessionId, content: `hello ${i}`, clientMessageId });
      }
    }
    const poisonIds = withPoison ? Array.from({ length: 5 }, () => randomUUID()) : [];
    for (const clientMessageId of poisonIds) {
      poisoner.client.send('/app/chat.send', { sessionId: poisoner.sessionId, content: 'poison \uD800 pill', clientMessageId });
    }
    const ackAt = (id: string, client: TestStompClient) => client.on('/user/queue/ack').find((m) => m.body.clientMessageId === id)?.receivedAt;
    await expect.poll(() => [...sent].filter(([id, s]) => ackAt(id, s.client) === undefined).length, { timeout: 20_000 }).toBe(0);
    return { ackMs: [...sent].map(([id, s]) => ackAt(id, s.client)! - s.at).sort((a, b) => a - b), poisonIds };
  }

  it('acks all 50 bystander sends as fast as without it, and refuses the poison to its sender only', async () => {
    const rounds: Array<{ withPoison: boolean; ackMs: number[]; poisonIds: string[] }> = [];
    for (const withPoison of [false, false, true, false, true]) rounds.push({ withPoison, ...(await round(withPoison)) });
    const p50 = (ms: number[]) => ms[Math.floor(ms.length / 2)]!;
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const clean = mean(rounds.slice(1).filter((r) => !r.withPoison).map((r) => p50(r.ackMs)));
    const poisoned = mean(rounds.filter((r) => r.withPoison).map((r) => p50(r.ackMs)));
    const poisonedMax = Math.max(...rounds.filter((r) => r.withPoison).map((r) => r.ackMs.at(-1)!));
    console.log(`[poison over STOMP + RabbitMQ] 50 bystander sends: ack p50 clean ${clean.toFixed(1)} ms, with poison ${poisoned.toFixed(1)} ms (max ${poisonedMax.toFixed(1)} ms)`);
    expect(poisoned).toBeLessThanOrEqual(2 * clean + 25);

    const poisonIds = rounds.flatMap((r) => r.poisonIds);
    await expect.poll(() => poisoner.client.on('/user/queue/error').length).toBe(poisonIds.length);
    for (const error of poisoner.client.on('/user/queue/error')) expect(error.body).toMatchObject({ code: 'INVALID_CONTENT', field: 'content' });
    expect(poisoner.client.on('/user/queue/error').map((m) => m.body.clientMessageId).sort()).toEqual([...poisonIds].sort());
    for (const { client } of bystanders) expect(client.on('/user/queue/error')).toEqual([]);

    const stored = await storedMessages(shared.databaseUrl, [...bystanders.map((b) => b.sessionId), poisoner.sessionId]);
    expect(stored.filter((m) => m.sessionId === poisoner.sessionId)).toEqual([]);
    expect(stored.length).toBe(rounds.length * SENDERS * PER_SENDER);
  });
});
