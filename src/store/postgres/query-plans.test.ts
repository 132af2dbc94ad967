/**
 * Plans of the stores' statements, checked the way PostgreSQL caches them.
 *
 * A named statement is planned for its values five times, then PostgreSQL may keep one generic plan
 * for the connection's life, chosen with the statistics of that moment. On a fresh database every
 * table looks empty, a sequential scan is the cheapest plan, and once cached it scans the whole
 * table on every call as it grows, until an ANALYZE happens to invalidate it: a send cost time in
 * proportion to all messages ever stored. So every statement must find the rows of a growing table
 * through an index in its generic plan on an empty database, the worst case for it.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import type { BusEnvelope, MessageRecord, Participant, SessionRecord } from '../../chat/ports.js';
import { createTestDatabase, infra, type TestDatabase } from '../../../test/support/infra.js';
import { migrate } from './migrator.js';
import { PgDatabase } from './pg-database.js';
import { PgliteDatabase } from './pglite-database.js';
import { PostgresMessageStore } from './postgres-message-store.js';
import { PostgresOutboxStore } from './postgres-outbox-store.js';
import { PostgresPresenceStore } from './postgres-presence-store.js';
import { PostgresWebhookStore } from './postgres-webhook-store.js';
import type { Queryable, SqlDatabase } from './sql-database.js';

const logger = pino({ level: 'silent' });

/**
 * Statements that read a whole set by nature and run on a timer or once per dead instance, never
 * per request: metrics counts and the sweep of a dead instance's presence rows.
 */
const WHOLE_SET = [
  /^\s*SELECT \(SELECT count\(\*\) FROM chat_(message|webhook)_outbox/,
  /^\s*SELECT count\(DISTINCT p\.email\)/,
  /^\s*WITH gone AS \(\s*DELETE FROM chat_presence p USING unnest/,
];

/** Tables that grow with users, messages and traffic (chat_instances holds one row per instance). */
const GROWING = ['chat_messages', 'chat_sessions', 'chat_message_outbox', 'chat_webhook_outbox', 'chat_read_marks', 'chat_reports', 'chat_presence', 'chat_last_seen', 'chat_profiles'];

/** Records every statement the store sends, through the pool or inside a transaction. */
function recording(db: SqlDatabase, seen: Set<string>): SqlDatabase {
  const record = (target: Queryable): Queryable => ({
    query: (sql, params) => {
      seen.add(sql);
      return target.query(sql, params);
    },
  });
  return new Proxy(db, {
    get(target, prop, receiver) {
      if (prop === 'query') return record(target).query;
      if (prop === 'transaction') return <T>(fn: (tx: Queryable) => Promise<T>) => target.transaction((tx) => fn(record(tx)));
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** The generic plan of `sql`, as a connection would cache it, with every parameter unknown. */
async function genericPlan(db: SqlDatabase, sql: string): Promise<string> {
  const params = Math.max(0, ...[...sql.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));
  return db.transaction(async (tx) => {
    await tx.query('SET LOCAL plan_cache_mode = force_generic_plan');
    await tx.query(`PREPARE plan_probe AS ${sql}`);
    try {
      const rows = await tx.query<{ 'QUERY PLAN': string }>(`EXPLAIN EXECUTE plan_probe${params ? `(${Array(params).fill('NULL').join(', ')})` : ''}`);
      return rows.map((r) => r['QUERY PLAN']).join('\n');
    } finally {
      await tx.query('DEALLOCATE plan_probe');
    }
  });
}

const participant = (name: string): Participant => {
  const id = randomUUID();
  return { profileId: id, email: `${name}.${id.slice(0, 8)}@example.com`, displayName: name };
};

const envelope = (session: SessionRecord, type: 'message' | 'edit' | 'delete' = 'message') => (m: MessageRecord | { id: string; seq: number }): BusEnvelope => ({
  recipients: [session.a.email, session.b.email],
  event: {
    type,
    sessionId: session.id,
    destinations: [{ user: session.b.email, queue: 'messages' }],
    message: {
      messageId: m.id, sessionId: session.id, seq: m.seq, senderId: session.a.profileId, senderEmail: session.a.email, senderDisplayName: 'a',
      content: 'x', clientMessageId: 'c', sentAt: new Date(0).toISOString(), delivered: false, seen: false, editedAt: null, deleted: false,
    },
  },
});

const receipt = (session: SessionRecord) => (): BusEnvelope => ({
  recipients: [session.a.email, session.b.email],
  event: { type: 'receipt', sessionId: session.id, destinations: [{ user: session.a.email, queue: 'receipts' }], receipt: { sessionId: session.id, readerId: session.b.profileId, messageIds: [], seen: false } },
} as unknown as BusEnvelope);

/** Every store call of the chat, the relays and presence, once, so its statements are recorded. */
async function exercise(db: SqlDatabase): Promise<void> {
  const store = new PostgresMessageStore(db);
  const outbox = new PostgresOutboxStore(db, { origin: 'plans' });
  const webhooks = new PostgresWebhookStore(db);
  const presence = new PostgresPresenceStore(db);
  const [a, b] = [participant('ann'), participant('ben')].sort((x, y) => (x.profileId < y.profileId ? -1 : 1)) as [Participant, Participant];
  const session = await store.upsertSession({ a, b, intent: 'plans' });
  const sent = await Promise.all(Array.from({ length: 3 }, (_, i) =>
    store.appendMessage({ sessionId: session.id, senderProfileId: a.profileId, content: `m${i}`, clientMessageId: randomUUID(), sentAt: new Date(), toEvent: envelope(session) })));
  await store.history(session.id, { limit: 10 });
  await store.history(session.id, { limit: 10, beforeSeq: 3 });
  await store.history(session.id, { limit: 10, afterSeq: 1 });
  await store.unseen(session.id, b.profileId, 10);
  await store.markDelivered(session.id, b.profileId, [sent[0]!.message.id], receipt(session));
  await store.markSeen(session.id, b.profileId, 2, receipt(session));
  await store.unreadTotals(b.email);
  await store.listSessions(b.email, 10);
  await store.changeMessage({ sessionId: session.id, messageId: sent[1]!.message.id, requesterProfileId: a.profileId, change: { kind: 'edit', content: 'edited' }, at: new Date(), toEvent: envelope(session, 'edit') });
  await store.changeMessage({ sessionId: session.id, messageId: sent[2]!.message.id, requesterProfileId: a.profileId, change: { kind: 'delete' }, at: new Date(), toEvent: envelope(session, 'delete') });
  await store.changesSince(b.email, await store.changeHorizon(), 10);
  await store.setBlocked(session.id, a.profileId, true);
  await store.blockers(session.id);
  await store.report({ sessionId: session.id, messageId: sent[0]!.message.id, reporterProfileId: b.profileId, reporterEmail: b.email, reason: 'spam', toEvent: () => envelope(session)(sent[0]!.message) });
  await store.listReports(10);

  const [row] = await outbox.claim(10, 60_000);
  const lease = row?.lease ?? randomUUID();
  await outbox.markPublished(['1']);
  await outbox.markFailed([{ id: '2', lease, counted: true, delayMs: 10, error: 'x' }], 3);
  await outbox.release(['3']);
  await outbox.nextRetryInMs();
  await outbox.prune(0, 10);
  await outbox.counts();
  await outbox.oldestPendingAgeMs();
  await outbox.listDead(10);
  await outbox.replayDead('4');

  await webhooks.claim(10, 60_000);
  await webhooks.markDelivered(['1']);
  await webhooks.markFailed([{ id: '2', lease: randomUUID(), delayMs: 10, error: 'x' }], 3);
  await webhooks.release([{ id: '3', lease: randomUUID() }]);
  await webhooks.counts();
  await webhooks.prune(0, 10);

  await presence.heartbeat('plans', { connections: 1, users: 1 });
  await presence.online(a.email, 'plans', 30_000);
  await presence.offline(a.email, 'plans', new Date(), 30_000);
  await presence.sweep(30_000);
  await presence.presenceOf([a.email, b.email], 30_000);
  await presence.peersOf(a.email);
  await presence.instances(30_000);
  await presence.onlineUsers(30_000);
  await presence.leave('plans', 30_000);
}

function describePlans(name: string, open: () => Promise<{ db: SqlDatabase; close(): Promise<void> }>): void {
  describe(`statements over growing tables: ${name}`, () => {
    let fx: { db: SqlDatabase; close(): Promise<void> };
    const statements = new Set<string>();
    beforeAll(async () => {
      fx = await open();
      await exercise(recording(fx.db, statements));
    });
    afterAll(async () => {
      await fx?.close();
    });

    it('find rows of growing tables by index in the generic plan a connection caches on a fresh database', async () => {
      const planned = [...statements].filter((sql) => /^\s*(WITH|SELECT|UPDATE|INSERT|DELETE)\b/i.test(sql) && !WHOLE_SET.some((re) => re.test(sql)));
      expect(planned.length).toBeGreaterThanOrEqual(40);
      const scans: string[] = [];
      for (const sql of planned) {
        const plan = await genericPlan(fx.db, sql);
        const scanned = [...plan.matchAll(/Seq Scan on (\w+)/g)].map((m) => m[1]!).filter((table) => GROWING.includes(table));
        if (scanned.length) scans.push(`${scanned.join(', ')}: ${sql.replace(/\s+/g, ' ').slice(0, 200)}\n${plan}`);
      }
      expect(scans).toEqual([]);
    });
  });
}

describePlans('PGlite', async () => {
  const db = await PgliteDatabase.open(undefined);
  await migrate({ kind: 'pglite', db }, logger);
  return { db, close: () => db.close() };
});

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  let database: TestDatabase;
  describePlans('PostgreSQL', async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    await migrate({ kind: 'postgres', url: database.url }, logger);
    const db = new PgDatabase({ url: database.url, poolSize: 2, logger });
    return {
      db,
      close: async () => {
        await db.close();
        await database.drop();
      },
    };
  });
});
