/**
 * The send path under the two outages it must ride out (docs/adr/0010), with real STOMP clients,
 * PostgreSQL and RabbitMQ reached through TCP fault proxies:
 * - PostgreSQL cut while one connection sends: what cannot be stored spills into the send queue,
 *   later sends of that connection follow it, and seq order is send order across the outage;
 * - RabbitMQ cut for every instance: users on one instance keep chatting live, a user on another
 *   instance gets her messages once the broker is back; nothing lost, nothing stored twice.
 *
 * Both stay on raw STOMP frames rather than the SDK (whose faults are proven by the ledger tests,
 * faults.test.ts and process-faults.test.ts): the first asserts what each SEND of one connection
 * gets — a RECEIPT once accepted, exactly one ack, a seq in SEND order — which the SDK's resends
 * of the same clientMessageId would blur; the second asserts delivery live over the bus, which the
 * SDK's catch-up from history would make up for if it failed.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FaultProxy } from '../support/fault-proxy.js';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import type { TestApp } from '../support/test-app.js';
import { type ClusterShared, deleteQueues, newUser, openSession, sharedCluster, startInstance, storedMessages } from './support/cluster.js';

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('the send path through outages', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  const cleanups: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  });
  afterAll(async () => {
    if (shared) await deleteQueues(shared.amqpUrl, shared);
    await database?.drop();
  });

  async function instance(name: string): Promise<{ app: TestApp; db: FaultProxy; amqp: FaultProxy }> {
    const amqp = await FaultProxy.forUrl(shared.amqpUrl, 5672);
    const db = await FaultProxy.forUrl(shared.databaseUrl, 5432);
    const app = await startInstance(shared, { name, amqpUrl: amqp.url, databaseUrl: db.url, app: { database: { connectTimeoutMs: 500 } } });
    cleanups.push(() => Promise.all([amqp.proxy.close(), db.proxy.close()]));
    cleanups.push(() => app.close());
    return { app, db: db.proxy, amqp: amqp.proxy };
  }

  async function client(app: TestApp, token: string): Promise<TestStompClient> {
    const c = await connectStomp({ baseUrl: app.url, token });
    cleanups.push(() => c.close());
    return c;
  }

  it('keeps one connection\u2019s seq order equal to its send order through a 2 s PostgreSQL cut, each send acked once', async () => {
    const node = await instance('pg-cut');
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(node.app.url, alice, bob);
    const sender = await client(node.app, alice.token);
    await sender.subscribe('/user/queue/ack');
    await sender.subscribe('/user/queue/error');

    const total = 500;
    const ids = Array.from({ length: total }, () => randomUUID());
    const receipts: Array<Promise<void>> = [];
    const startedAt = Date.now();
    let cutAt = 0;
    let healedAt = 0;
    for (let i = 0; i < total; i++) {
      if (i === 150) {
        node.db.setMode('cut');
        cutAt = Date.now();
      }
      // Paced so the cut falls in the middle: 150 before it, about 2 s of sends during it, the rest after.
      if (i >= 150 && cutAt && !healedAt && Date.now() - cutAt >= 2_000) {
        node.db.setMode('pass');
        healedAt = Date.now();
      }
      receipts.push(sender.sendWithReceipt('/app/chat.send', { sessionId, content: `m${i}`, clientMessageId: ids[i] }));
      if (receipts.length % 8 === 0) await Promise.all(receipts.slice(-8));
      if (i >= 150 && !healedAt) await new Promise((resolve) => setTimeout(resolve, 12));
    }
    if (!healedAt) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 2_000 - (Date.now() - cutAt))));
      node.db.setMode('pass');
      healedAt = Date.now();
    }
    await Promise.all(receipts);

    await expect.poll(() => new Set(sender.on('/user/queue/ack').map((m) => m.body.clientMessageId)).size, { timeout: 30_000 }).toBe(total);
    const stored = await storedMessages(shared.databaseUrl, [sessionId]);
    const acksPerId = new Map<string, number>();
    for (const ack of sender.on('/user/queue/ack')) acksPerId.set(ack.body.clientMessageId, (acksPerId.get(ack.body.clientMessageId) ?? 0) + 1);
    const ackedTwice = [...acksPerId.values()].filter((n) => n > 1).length;
    console.log(
      `[PostgreSQL cut ${healedAt - cutAt} ms after ${cutAt - startedAt} ms] one connection, ${total} sends: ${stored.length} stored, ` +
        `seqs ${stored[0]?.seq}..${stored.at(-1)?.seq}, acked ${acksPerId.size}, acked more than once ${ackedTwice}, errors ${sender.on('/user/queue/error').length}`,
    );
    expect(stored.map((m) => m.clientMessageId)).toEqual(ids);
    expect(stored.map((m) => m.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    expect(sender.on('/user/queue/error')).toEqual([]);
    expect(ackedTwice).toBe(0);
  }, 90_000);

  it('lets alice and bob on one instance chat live while RabbitMQ is cut; carol on another gets hers when it is back', async () => {
    const [one, two] = [await instance('broker-cut-one'), await instance('broker-cut-two')];
    const [alice, bob, carol] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob'), newUser(shared.idp, 'carol')]);
    const withBob = await openSession(one.app.url, alice, bob);
    const withCarol = await openSession(one.app.url, alice, carol);
    const [aliceC, bobC, carolC] = [await client(one.app, alice.token), await client(one.app, bob.token), await client(two.app, carol.token)];
    for (const c of [aliceC, bobC, carolC]) await c.subscribe('/user/queue/messages');

    for (const node of [one, two]) node.amqp.setMode('cut');
    await expect.poll(async () => (await fetch(`${one.app.url}/health/ready`)).status, { timeout: 10_000 }).toBe(503);
    const cutAt = Date.now();

    const toBob = Array.from({ length: 10 }, () => randomUUID());
    const toAlice = Array.from({ length: 10 }, () => randomUUID());
    const toCarol = Array.from({ length: 10 }, () => randomUUID());
    for (let i = 0; i < 10; i++) {
      await aliceC.sendWithReceipt('/app/chat.send', { sessionId: withBob, content: `hi bob ${i}`, clientMessageId: toBob[i] });
      await bobC.sendWithReceipt('/app/chat.send', { sessionId: withBob, content: `hi alice ${i}`, clientMessageId: toAlice[i] });
      await aliceC.sendWithReceipt('/app/chat.send', { sessionId: withCarol, content: `hi carol ${i}`, clientMessageId: toCarol[i] });
    }
    const received = (c: TestStompClient, ids: string[]) => new Set(c.on('/user/queue/messages').map((m) => m.body.clientMessageId).filter((id: string) => ids.includes(id))).size;
    // Live, while the broker is still away.
    await expect.poll(() => [received(bobC, toBob), received(aliceC, toAlice)], { timeout: 10_000 }).toEqual([10, 10]);
    const liveWithin = Date.now() - cutAt;
    const carolDuringCut = received(carolC, toCarol);

    for (const node of [one, two]) node.amqp.setMode('pass');
    const healedAt = Date.now();
    await expect.poll(() => received(carolC, toCarol), { timeout: 30_000 }).toBe(10);
    const carolAfter = Date.now() - healedAt;

    const stored = await storedMessages(shared.databaseUrl, [withBob, withCarol]);
    const storedIds = stored.map((m) => m.clientMessageId);
    console.log(
      `[RabbitMQ cut] alice↔bob on one instance: 20 of 20 delivered live within ${liveWithin} ms of the cut; ` +
        `carol on the other: ${carolDuringCut} during the cut, 10 of 10 ${carolAfter} ms after it healed; stored ${stored.length}, distinct ${new Set(storedIds).size}`,
    );
    expect(storedIds.sort()).toEqual([...toBob, ...toAlice, ...toCarol].sort());
    expect(carolDuringCut).toBe(0);
  }, 90_000);
});
