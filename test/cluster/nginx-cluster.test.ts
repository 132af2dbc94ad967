/**
 * The cluster as deployed: three instances behind Debian's nginx running deploy/nginx/chat.conf
 * (tools/local-nginx.ts), every client connecting to nginx only. Users chat both ways over a plain
 * WebSocket and over SockJS xhr-streaming; then, under an SDK load, one instance gets SIGTERM and
 * drains: its clients are told SERVER_SHUTDOWN, reconnect through nginx to the others and recover in
 * order, and no acknowledged message is lost (the ledger is printed).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, nginxMissing, startNginx, type RunningNginx } from '../../tools/local-nginx.js';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import { type ClusterShared, deleteQueues, type InstanceProcess, instanceQueueOf, newUser, openSession, sharedCluster, startInstanceProcess } from './support/cluster.js';
import { expectHandedOutOnceInOrder, LedgerLoad, type Pair } from './support/load.js';

const missing = nginxMissing();
if (missing) console.warn(`\n*** SKIPPING the nginx cluster tests: ${missing} ***\n`);


describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl || !!missing)('three instances behind nginx', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  let nginx: RunningNginx;
  const instances: InstanceProcess[] = [];
  const clients: TestStompClient[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
    for (const name of ['a', 'b', 'c']) instances.push(await startInstanceProcess(shared, { name }));
    nginx = await startNginx(
      instances.map((i) => new URL(i.url).host),
      await freePort(),
      { stdio: 'pipe' },
    );
  }, 120_000);

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await nginx?.stop();
    await Promise.allSettled(
      instances.map(async (p) => {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
        const timer = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
        await p.exited;
        clearTimeout(timer);
      }),
    );
    if (shared) await deleteQueues(shared.amqpUrl, shared, instances.map(instanceQueueOf).filter((q): q is string => !!q));
    await database?.drop();
  });

  it('lets users chat both ways through nginx, one over a WebSocket and one over SockJS xhr-streaming', async () => {
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(nginx.url, alice, bob);
    const aliceClient = await connectStomp({ baseUrl: nginx.url, token: alice.token, transport: 'ws' });
    const bobClient = await connectStomp({ baseUrl: nginx.url, token: bob.token, transport: 'sockjs-xhr-streaming' });
    clients.push(aliceClient, bobClient);
    for (const c of [aliceClient, bobClient]) await c.subscribe('/user/queue/messages');

    const hello = randomUUID();
    const reply = randomUUID();
    await aliceClient.sendWithReceipt('/app/chat.send', { sessionId, content: 'hello through nginx', clientMessageId: hello });
    await expect.poll(() => bobClient.on('/user/queue/messages').map((m) => m.body.clientMessageId), { timeout: 10_000 }).toEqual([hello]);
    await bobClient.sendWithReceipt('/app/chat.send', { sessionId, content: 'hello back', clientMessageId: reply });
    await expect.poll(() => aliceClient.on('/user/queue/messages').map((m) => m.body.clientMessageId), { timeout: 10_000 }).toEqual([reply]);
  }, 30_000);

  it('loses no acknowledged message when one instance drains on SIGTERM under load; its clients come back through nginx', async () => {
    const pairs: Pair[] = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const [sender, recipient] = await Promise.all([newUser(shared.idp, `sender${i}`), newUser(shared.idp, `recipient${i}`)]);
        const sessionId = await openSession(nginx.url, sender, recipient);
        return { sessionId, sender, recipient, senderUrls: [nginx.url], recipientUrls: [nginx.url] };
      }),
    );
    const load = new LedgerLoad(pairs, { messagesPerSender: 120, window: 8, ratePerSender: 40, ackTimeoutMs: 3_000, deadlineMs: 45_000 });
    await load.start();
    const drained = instances[1]!;
    await new Promise((r) => setTimeout(r, 1_000));
    drained.child.kill('SIGTERM');
    expect(await drained.exited).toBe(0);
    expect(drained.output()).toMatch(/"msg":"draining/);
    const f = await load.finish(shared.databaseUrl, 'one of three instances behind nginx drained on SIGTERM');
    expect(f.lost, 'accepted or acknowledged but not stored').toBe(0);
    expect(f.storedMoreThanOnce).toBe(0);
    expect(f.seqGaps).toBe(0);
    expect(f.unacked, 'every send acknowledged in the end').toBe(0);
    expect(f.stored).toBe(load.total);
    expect(f.deliveredLive + f.recoveredFromHistory).toBe(f.stored);
    expect(f.reconnects, 'the drained instance\u2019s clients reconnected').toBeGreaterThan(0);
    expectHandedOutOnceInOrder(f);
  }, 90_000);
});
