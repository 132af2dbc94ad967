import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sessionTopic } from '../../chat/chat-events.js';
import type { BusEnvelope, MessageRecord, Participant, SessionRecord } from '../../chat/ports.js';
import { createTestDatabase, infra } from '../../../test/support/infra.js';
import { migrate } from './migrator.js';
import { PgDatabase } from './pg-database.js';
import { PgliteDatabase } from './pglite-database.js';
import { PostgresMessageStore } from './postgres-message-store.js';
import { PostgresWebhookStore } from './postgres-webhook-store.js';
import type { SqlDatabase } from './sql-database.js';
import { describeWebhookStoreContract, webhookEnvelope, type StoredWebhookRow, type WebhookStoreFixture } from './webhook-store.contract.js';

const logger = pino({ level: 'silent' });

function fixture(storeDb: SqlDatabase, peerDb: SqlDatabase, tables: SqlDatabase, close: () => Promise<void>): WebhookStoreFixture {
  return {
    store: new PostgresWebhookStore(storeDb),
    peer: new PostgresWebhookStore(peerDb),
    write: (rows) =>
      tables
        .query<{ id: string }>(
          `INSERT INTO chat_webhook_outbox (session_id, event_type, payload, next_attempt_at, attempts, delivered_at, dead)
           SELECT s, 'message.created', p, now() + d * interval '1 millisecond', a, now() - x * interval '1 millisecond', dead
             FROM unnest($1::text[], $2::jsonb[], $3::float8[], $4::int[], $5::float8[], $6::bool[]) WITH ORDINALITY AS t(s, p, d, a, x, dead, i)
            ORDER BY i
           RETURNING id::text AS id`,
          [
            rows.map((r) => r.session),
            rows.map((r) => JSON.stringify(webhookEnvelope(r.session, r.tag))),
            rows.map((r) => r.dueInMs ?? 0),
            rows.map((r) => r.attempts ?? 0),
            rows.map((r) => r.deliveredAgoMs ?? null),
            rows.map((r) => r.dead ?? false),
          ],
        )
        .then((ids) => ids.map((r) => r.id).sort((x, y) => Number(BigInt(x) - BigInt(y)))),
    read: async () =>
      (
        await tables.query<{ id: string; tag: string; attempts: number; dead: boolean; delivered: boolean; last_error: string | null; due_in_ms: number }>(
          `SELECT id::text AS id, payload->'event'->'message'->>'messageId' AS tag, attempts, dead, delivered_at IS NOT NULL AS delivered, last_error,
                  (extract(epoch FROM next_attempt_at - now()) * 1000)::float8 AS due_in_ms
             FROM chat_webhook_outbox ORDER BY id`,
        )
      ).map(
        (r): StoredWebhookRow => ({
          id: r.id,
          tag: r.tag,
          attempts: Number(r.attempts),
          dead: r.dead,
          delivered: r.delivered,
          lastError: r.last_error,
          dueInMs: Number(r.due_in_ms),
        }),
      ),
    whileLocked: (ids, fn) =>
      tables.transaction(async (tx) => {
        await tx.query('SELECT id FROM chat_webhook_outbox WHERE id = ANY($1::bigint[]) FOR UPDATE', [ids]);
        await fn();
      }),
    reset: async () => {
      await tables.query('TRUNCATE chat_webhook_outbox');
    },
    close,
  };
}

describeWebhookStoreContract(
  'PGlite',
  async () => {
    const db = await PgliteDatabase.open(undefined);
    await migrate({ kind: 'pglite', db }, logger);
    return fixture(db, db, db, () => db.close());
  },
  { concurrentTransactions: false },
);

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  describeWebhookStoreContract(
    'PostgreSQL',
    async () => {
      const database = await createTestDatabase(infra.postgresUrl!);
      await migrate({ kind: 'postgres', url: database.url }, logger);
      const open = (): PgDatabase => new PgDatabase({ url: database.url, poolSize: 4, logger });
      const [storeDb, peerDb, tables] = [open(), open(), open()];
      return fixture(storeDb, peerDb, tables, async () => {
        await Promise.all([storeDb.close(), peerDb.close(), tables.close()]);
        await database.drop();
      });
    },
    { concurrentTransactions: true },
  );
});

/** The writing side: PostgresMessageStore adds webhook rows to its commits only when configured. */
describeWebhookWrites('PGlite', async () => {
  const db = await PgliteDatabase.open(undefined);
  await migrate({ kind: 'pglite', db }, logger);
  return { db, close: () => db.close() };
});

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  describeWebhookWrites('PostgreSQL', async () => {
    const database = await createTestDatabase(infra.postgresUrl!);
    await migrate({ kind: 'postgres', url: database.url }, logger);
    const db = new PgDatabase({ url: database.url, poolSize: 4, logger });
    return {
      db,
      close: async () => {
        await db.close();
        await database.drop();
      },
    };
  });
});

function describeWebhookWrites(name: string, open: () => Promise<{ db: SqlDatabase; close(): Promise<void> }>): void {
  describe(`webhook rows written with chat events, and unread totals: ${name}`, () => {
    let db: SqlDatabase;
    let close: () => Promise<void>;
    beforeAll(async () => {
      ({ db, close } = await open());
    });
    afterAll(async () => {
      await close?.();
    });

    const participant = (name: string): Participant => {
      const id = randomUUID();
      return { profileId: id, email: `${name}.${id.slice(0, 8)}@example.com`, displayName: name };
    };
    async function session(store: PostgresMessageStore): Promise<SessionRecord> {
      const [x, y] = [participant('ann'), participant('ben')];
      const [a, b] = x.profileId < y.profileId ? [x, y] : [y, x];
      return store.upsertSession({ a, b, intent: 'dating' });
    }
    const toEvent =
      (s: SessionRecord) =>
      (m: MessageRecord): BusEnvelope => ({ ...webhookEnvelope(s.id, m.id), recipients: [s.a.email, s.b.email] });
    const receipt = (s: SessionRecord) => (): BusEnvelope => ({
      recipients: [s.a.email, s.b.email],
      event: { type: 'receipt', sessionId: s.id, destinations: [{ topic: sessionTopic(s.id) }], receipt: { sessionId: s.id, readerEmail: s.b.email, upToSeq: 1, status: 'seen', messageIds: [] } },
    });
    const rowsOf = (sessionId: string) =>
      db.query<{ event_type: string; tag: string }>(
        `SELECT event_type, payload->'event'->'message'->>'messageId' AS tag FROM chat_webhook_outbox WHERE session_id = $1 ORDER BY id`,
        [sessionId],
      );

    it('writes one row per message event of a configured type, in seq order, in the commit; none for receipts', async () => {
      const store = new PostgresMessageStore(db, 'test', { webhookTypes: new Set(['message.created'] as const) });
      const s = await session(store);
      const results = await Promise.all(
        [1, 2, 3, 4, 5].map((i) =>
          store.appendMessage({ sessionId: s.id, senderProfileId: s.a.profileId, content: `m${i}`, clientMessageId: randomUUID(), sentAt: new Date(), toEvent: toEvent(s) }),
        ),
      );
      const bySeq = results.map((r) => r.message).sort((x, y) => x.seq - y.seq);
      await store.markSeen(s.id, s.b.profileId, 5, receipt(s));
      const rows = await rowsOf(s.id);
      expect(rows.map((r) => r.event_type)).toEqual(Array(5).fill('message.created'));
      expect(rows.map((r) => r.tag)).toEqual(bySeq.map((m) => m.id));
      // A repeat writes nothing.
      await store.appendMessage({ sessionId: s.id, senderProfileId: s.a.profileId, content: 'm1', clientMessageId: bySeq[0]!.clientMessageId, sentAt: new Date(), toEvent: toEvent(s) });
      expect(await rowsOf(s.id)).toHaveLength(5);
    });

    it('writes nothing when webhooks are off or the type is not configured', async () => {
      for (const store of [new PostgresMessageStore(db, 'off'), new PostgresMessageStore(db, 'other', { webhookTypes: new Set(['report.created'] as const) })]) {
        const s = await session(store);
        await store.appendMessage({ sessionId: s.id, senderProfileId: s.a.profileId, content: 'x', clientMessageId: randomUUID(), sentAt: new Date(), toEvent: toEvent(s) });
        expect(await rowsOf(s.id)).toEqual([]);
      }
    });

    it('unreadTotals counts the other participants\' unseen messages across sessions', async () => {
      const store = new PostgresMessageStore(db, 'unread');
      const ben = participant('ben');
      const sessions: SessionRecord[] = [];
      for (const name of ['ann', 'cat', 'dan']) {
        const other = participant(name);
        const [a, b] = other.profileId < ben.profileId ? [other, ben] : [ben, other];
        sessions.push(await store.upsertSession({ a, b, intent: 'dating' }));
      }
      const send = (s: SessionRecord, fromBen: boolean) =>
        store.appendMessage({
          sessionId: s.id,
          senderProfileId: (s.a.email === ben.email) === fromBen ? s.a.profileId : s.b.profileId,
          content: 'x',
          clientMessageId: randomUUID(),
          sentAt: new Date(),
          toEvent: toEvent(s),
        });
      await send(sessions[0]!, false);
      await send(sessions[0]!, false);
      await send(sessions[0]!, true);
      await send(sessions[1]!, false);
      await send(sessions[2]!, true);
      expect(await store.unreadTotals(ben.email)).toEqual({ total: 3, sessions: 2 });
      await store.markSeen(sessions[0]!.id, ben.profileId, 10, receipt(sessions[0]!));
      expect(await store.unreadTotals(ben.email)).toEqual({ total: 1, sessions: 1 });
      expect(await store.unreadTotals('nobody@example.com')).toEqual({ total: 0, sessions: 0 });
    });
  });
}
