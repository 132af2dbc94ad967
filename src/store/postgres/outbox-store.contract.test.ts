import pino from 'pino';
import { describe } from 'vitest';
import { createTestDatabase, infra } from '../../../test/support/infra.js';
import { describeOutboxStoreContract, outboxEnvelope, type OutboxRowSpec, type OutboxStoreFixture, type StoredOutboxRow } from './outbox-store.contract.js';
import { migrate } from './migrator.js';
import { PgDatabase } from './pg-database.js';
import { PgliteDatabase } from './pglite-database.js';
import { OUTBOX_CHANNEL } from './postgres-message-store.js';
import { PostgresOutboxStore } from './postgres-outbox-store.js';
import type { SqlDatabase } from './sql-database.js';

const logger = pino({ level: 'silent' });

/** What the fixture does with the table, on any database: `tables` writes, reads and locks. */
function fixture(storeDb: SqlDatabase, peerDb: SqlDatabase, tables: SqlDatabase, close: () => Promise<void>): OutboxStoreFixture {
  return {
    store: new PostgresOutboxStore(storeDb, { origin: 'a' }),
    peer: new PostgresOutboxStore(peerDb, { origin: 'b' }),
    write: (rows, origin = '') => writeRows(tables, rows, origin),
    read: () => readRows(tables),
    whileLocked: (ids, fn) =>
      tables.transaction(async (tx) => {
        await tx.query('SELECT id FROM chat_message_outbox WHERE id = ANY($1::bigint[]) FOR UPDATE', [ids]);
        await fn();
      }),
    reset: async () => {
      await tables.query('TRUNCATE chat_message_outbox');
    },
    close,
  };
}

/** As a commit of the MessageStore does: the rows and their NOTIFY in one transaction. */
async function writeRows(db: SqlDatabase, rows: readonly OutboxRowSpec[], origin: string): Promise<string[]> {
  return db.transaction(async (tx) => {
    const written = await tx.query<{ id: string }>(
      `INSERT INTO chat_message_outbox (destination, payload, next_retry_at, retry_count, processed, sent_at, dead)
       SELECT '/topic/test', p, now() + d * interval '1 millisecond', r, s IS NOT NULL, now() - s * interval '1 millisecond', x
         FROM unnest($1::jsonb[], $2::float8[], $3::int[], $4::float8[], $5::bool[]) WITH ORDINALITY AS t(p, d, r, s, x, i)
        ORDER BY i
       RETURNING id::text AS id`,
      [
        rows.map((r) => JSON.stringify(outboxEnvelope(r.key))),
        rows.map((r) => r.dueInMs ?? 0),
        rows.map((r) => r.retryCount ?? 0),
        rows.map((r) => r.processedAgoMs ?? null),
        rows.map((r) => r.dead ?? false),
      ],
    );
    await tx.query(`SELECT pg_notify('${OUTBOX_CHANNEL}', $1)`, [origin]);
    return written.map((r) => r.id).sort((x, y) => x.length - y.length || (x < y ? -1 : 1));
  });
}

async function readRows(db: SqlDatabase): Promise<StoredOutboxRow[]> {
  const rows = await db.query<{
    id: string;
    key: string;
    processed: boolean;
    dead: boolean;
    retry_count: number;
    last_error: string | null;
    sent_at: Date | null;
    due_in_ms: number;
  }>(
    `SELECT id::text AS id, payload->'event'->>'sessionId' AS key, processed, dead, retry_count, last_error, sent_at,
            (extract(epoch FROM next_retry_at - now()) * 1000)::float8 AS due_in_ms
       FROM chat_message_outbox ORDER BY id`,
  );
  return rows.map((r) => ({
    id: r.id,
    key: r.key,
    processed: r.processed,
    dead: r.dead,
    retryCount: Number(r.retry_count),
    lastError: r.last_error,
    sentAt: r.sent_at,
    dueInMs: Number(r.due_in_ms),
  }));
}

describeOutboxStoreContract(
  'PGlite',
  async () => {
    const db = await PgliteDatabase.open(undefined);
    await migrate({ kind: 'pglite', db }, logger);
    // One connection: both instances' stores share it, as every PGlite user in a process does.
    return fixture(db, db, db, () => db.close());
  },
  { concurrentTransactions: false },
);

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  describeOutboxStoreContract(
    'PostgreSQL',
    async () => {
      const database = await createTestDatabase(infra.postgresUrl!);
      await migrate({ kind: 'postgres', url: database.url }, logger);
      const open = (poolSize: number): PgDatabase => new PgDatabase({ url: database.url, poolSize, logger });
      const [storeDb, peerDb, tables] = [open(4), open(4), open(4)];
      return fixture(storeDb, peerDb, tables, async () => {
        await Promise.all([storeDb.close(), peerDb.close(), tables.close()]);
        await database.drop();
      });
    },
    { concurrentTransactions: true },
  );
});
