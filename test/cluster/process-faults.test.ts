/**
 * Crashes (SIGKILL) of whole instances under load, with instances as child processes: a steady
 * instance stays up throughout, and each test starts a second one and has it die, either at an
 * exact point from inside (right after a confirmed relay publish, right after a send's commit)
 * or from outside, mid-load, with clients connected to it. Senders and recipients are SDK
 * ChatClients that fail over to the other instance. The ledger then shows nothing acknowledged is
 * lost, nothing is stored twice, and each recipient's SDK hands every message to the application
 * once, in seq order, live or recovered from history after it reconnects.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { api, type ClusterShared, deleteQueues, type InstanceProcess, instanceQueueOf, newUser, openSession, sharedCluster, startInstanceProcess, storedMessages } from './support/cluster.js';
import { expectHandedOutOnceInOrder, type LedgerFigures, LedgerLoad, type LoadOptions, type Pair } from './support/load.js';

const LOAD: LoadOptions = { messagesPerSender: 150, window: 8, ratePerSender: 50, ackTimeoutMs: 3_000, deadlineMs: 40_000 };

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('instances killed with SIGKILL under load (child processes)', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  let steady: InstanceProcess;
  const started: InstanceProcess[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
    steady = await startInstanceProcess(shared, { name: 'steady' });
    started.push(steady);
  });
  afterAll(async () => {
    await Promise.allSettled(
      started.map(async (p) => {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
        const timer = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
        await p.exited;
        clearTimeout(timer);
      }),
    );
    // A killed instance cannot delete its queue; it would expire, but we remove it now.
    if (shared) await deleteQueues(shared.amqpUrl, shared, started.map(instanceQueueOf).filter((q): q is string => q !== undefined));
    await database?.drop();
  });

  async function startDoomed(fault?: string): Promise<InstanceProcess> {
    const p = await startInstanceProcess(shared, { name: 'doomed', fault });
    started.push(p);
    return p;
  }

  /**
   * Four pairs; with `doomed`, senders alternate between it and the steady one, recipients on the
   * other; with `sendersOn`, every sender starts there and every recipient is on the steady one.
   */
  async function pairs(doomed?: InstanceProcess, sendersOn?: InstanceProcess): Promise<Pair[]> {
    return Promise.all(
      Array.from({ length: 4 }, async (_, i) => {
        const [sender, recipient] = await Promise.all([newUser(shared.idp, `sender${i}`), newUser(shared.idp, `recipient${i}`)]);
        const [mine, theirs] = sendersOn
          ? [sendersOn.url, steady.url]
          : !doomed ? [steady.url, steady.url] : i % 2 === 0 ? [doomed.url, steady.url] : [steady.url, doomed.url];
        const sessionId = await openSession(steady.url, sender, recipient);
        return { sessionId, sender, recipient, senderUrls: [mine, theirs], recipientUrls: [theirs, mine] };
      }),
    );
  }

  function expectNothingLost(f: LedgerFigures, load: LedgerLoad): void {
    expect(f.lost, 'accepted or acknowledged but not stored').toBe(0);
    expect(f.storedMoreThanOnce).toBe(0);
    expect(f.seqGaps).toBe(0);
    expect(f.permanentErrors).toBe(0);
    expect(f.unacked, 'every send acknowledged in the end').toBe(0);
    expect(f.stored).toBe(load.total);
    expect(f.deliveredLive + f.recoveredFromHistory, 'every stored message reached its recipient').toBe(f.stored);
    expectHandedOutOnceInOrder(f);
  }

  /** The line the child wrote right before it killed itself. */
  function injected(p: InstanceProcess): { fault: string; messageId: string; clientMessageId: string } {
    const line = p.output().split('\n').find((l) => l.includes('"msg":"fault injected"'));
    if (!line) throw new Error(`no fault line in the output:\n${p.output().slice(-2000)}`);
    return JSON.parse(line);
  }

  async function repeatsOn(p: InstanceProcess): Promise<number> {
    const metrics = await api(p.url, 'GET', '/metrics');
    const match = /chat_messages_sent_total\{transport="stomp",result="repeat"\} (\d+)/.exec(String(metrics.body));
    return Number(match?.[1] ?? 0);
  }

  it('an instance killed after a send\u2019s commit, before its ack: the sender resends elsewhere and it is stored once', async () => {
    const doomed = await startDoomed('store-after-commits:40');
    // Its senders store there; their recipients stay connected to the steady one throughout.
    const load = new LedgerLoad(await pairs(undefined, doomed), LOAD);
    const repeatsBefore = await repeatsOn(steady);
    await load.start();
    expect(await doomed.exited).toBe('SIGKILL');
    const victim = injected(doomed);
    const figures = await load.finish(shared.databaseUrl, 'instance killed between commit and ack');
    expectNothingLost(figures, load);
    // The sender reconnected to the steady instance and sent the unacked send again, which found it
    // stored: a repeat, acked as such.
    expect(await repeatsOn(steady)).toBeGreaterThan(repeatsBefore);
    const stored = (await storedMessages(shared.databaseUrl, load.pairs.map((p) => p.sessionId))).filter((m) => m.clientMessageId === victim.clientMessageId);
    expect(stored).toHaveLength(1);
    expect(load.isAcked(victim.clientMessageId)).toBe(true);
    // Its event: published by the steady relay (at once, or after the lease if the dead relay had claimed it).
    expect(load.liveDeliveries(victim.messageId)).toBeGreaterThanOrEqual(1);
    expect(figures.deliveredLive).toBe(figures.stored);
  });

  it('a relay killed after a confirmed publish, before marking its row: the event is published again and seen once after de-duplication', async () => {
    const doomed = await startDoomed('relay-after-confirms:40');
    // Its senders' commits hand their rows to its relay; their recipients stay on the steady one.
    const load = new LedgerLoad(await pairs(undefined, doomed), LOAD);
    await load.start();
    expect(await doomed.exited).toBe('SIGKILL');
    const victim = injected(doomed);
    // Its row was never marked: the steady relay claims it once the lease (5 s) ends and publishes
    // it again, though its first publish was delivered.
    await expect.poll(() => load.liveDeliveries(victim.messageId), { timeout: 20_000 }).toBeGreaterThanOrEqual(2);
    const figures = await load.finish(shared.databaseUrl, 'relay killed between confirm and mark');
    expectNothingLost(figures, load);
    expect(figures.duplicatesDelivered).toBeGreaterThanOrEqual(1);
    expect(figures.deliveredLive).toBe(figures.stored);
  });

  it('kill -9 of an instance mid-load: its clients fail over, nothing acknowledged is lost', async () => {
    const doomed = await startDoomed();
    const load = new LedgerLoad(await pairs(doomed), LOAD);
    await load.start();
    await expect.poll(() => load.acked, { timeout: 20_000, interval: 20 }).toBeGreaterThanOrEqual(load.total * 0.3);
    expect(await doomed.kill()).toBe('SIGKILL');
    const figures = await load.finish(shared.databaseUrl, 'kill -9 mid-load');
    expectNothingLost(figures, load);
    expect(figures.reconnects).toBeGreaterThanOrEqual(4);
  });
});
