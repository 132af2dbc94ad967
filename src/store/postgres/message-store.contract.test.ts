import { describe } from 'vitest';
import pino from 'pino';
import type { BusEnvelope } from '../../chat/ports.js';
import { createTestDatabase, infra } from '../../../test/support/infra.js';
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
