import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import pino from 'pino';
import { sessionTopic } from '../../chat/chat-events.js';
import type { BusEnvelope, ChangeStamp } from '../../chat/ports.js';
import { createTestDatabase, infra, type TestDatabase } from '../../../test/support/infra.js';
import { describeMessageStoreContract } from './message-store.contract.js';
import { migrate } from './migrator.js';
import { PgDatabase } from './pg-database.js';
import { PgliteDatabase } from './pglite-database.js';
import { PostgresMessageStore } from './postgres-message-store.js';
import type { SqlDatabase } from './sql-database.js';

const logger = pino({ level: 'silent' });
const readOutbox = (db: SqlDatabase) => async () =>
  db.query<{ destination: string; payload: BusEnvelope }>('SELECT destination, payload FROM chat_message_outbox ORDER BY id');

describeMessageStoreContract('PGlite', async () => {
  const db = await PgliteDatabase.open(undefined);
  await migrate({ kind: 'pglite', db }, logger);
  return { store: new PostgresMessageStore(db), outbox: readOutbox(db), close: () => db.close() };
}, { multiInstance: false });

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  describeMessageStoreContract('PostgreSQL', async () => {
    const database = await createTestDatabase(infra.postgresUrl!);
    await migrate({ kind: 'postgres', url: database.url }, logger);
    const db = new PgDatabase({ url: database.url, poolSize: 10, logger });
    const peerDb = new PgDatabase({ url: database.url, poolSize: 10, logger });
    return {
      store: new PostgresMessageStore(db),
      peer: new PostgresMessageStore(peerDb),
      openWriter: async () => {
        const own = new PgDatabase({ url: database.url, poolSize: 1, logger });
        return { store: new PostgresMessageStore(own), close: () => own.close() };
      },
      outbox: readOutbox(db),
      close: async () => {
        await Promise.all([db.close(), peerDb.close()]);
        await database.drop();
      },
    };
  }, { multiInstance: true });
});

// The case sync's horizon exists for, made to happen rather than hoped for: a transaction that took
// its id first and commits last. Raw SQL on its own connection plays that slow writer.
describe.skipIf(!infra.postgresUrl)('sync on PostgreSQL with a transaction that commits out of order', () => {
  let database: TestDatabase;
  let db: PgDatabase;
  let slow: pg.Client;
  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    await migrate({ kind: 'postgres', url: database.url }, logger);
    db = new PgDatabase({ url: database.url, poolSize: 4, logger });
    slow = new pg.Client({ connectionString: database.url });
    await slow.connect();
  });
  afterAll(async () => {
    await slow?.end();
    await db?.close();
    await database?.drop();
  });

  it('returns nothing past a running transaction, and the late change once it commits', async () => {
    const store = new PostgresMessageStore(db);
    const ids = [randomUUID(), randomUUID()].sort();
    const a = { profileId: ids[0]!, email: `a.${ids[0]!.slice(0, 8)}@example.com`, displayName: 'a' };
    const b = { profileId: ids[1]!, email: `b.${ids[1]!.slice(0, 8)}@example.com`, displayName: 'b' };
    const session = await store.upsertSession({ a, b, intent: 'race' });
    const toEvent = (m: { id: string; seq: number }): BusEnvelope => ({
      recipients: [a.email, b.email],
      event: { type: 'receipt', sessionId: session.id, destinations: [{ topic: sessionTopic(session.id) }], receipt: { sessionId: session.id, readerEmail: b.email, upToSeq: m.seq, status: 'seen', messageIds: [] } },
    });
    const { message: first } = await store.appendMessage({ sessionId: session.id, senderProfileId: a.profileId, content: 'first', clientMessageId: randomUUID(), sentAt: new Date(), toEvent });
    const start = await store.changeHorizon();

    // The slow writer takes its transaction id now, before the fast one…
    await slow.query('BEGIN');
    await slow.query('SELECT pg_current_xact_id()');
    const fast = await store.changeMessage({ sessionId: session.id, messageId: first.id, requesterProfileId: a.profileId, change: { kind: 'edit', content: 'fast' }, at: new Date(), toEvent });
    // …which has committed: a sync now must not hand out a token past the slow one.
    const during = await store.changesSince(b.email, start, 10);
    expect(during.changes).toEqual([]);
    let next: ChangeStamp = during.horizon;

    await slow.query(
      `INSERT INTO chat_messages (id, session_id, seq, sender_profile_id, content, client_msg_id, sent_at) VALUES ($1, $2, 2, $3, 'slow', $4, now())`,
      [randomUUID(), session.id, b.profileId, randomUUID()],
    );
    await slow.query('COMMIT');
    const after = await store.changesSince(b.email, next, 10);
    expect(after.changes.map((c) => (c.kind === 'message' ? c.message.content : c.kind))).toEqual(['slow', 'fast']);
    expect(after.changes[1]).toMatchObject({ message: { id: fast.message.id } });
    next = after.horizon;
    expect((await store.changesSince(b.email, next, 10)).changes).toEqual([]);
  });
});
