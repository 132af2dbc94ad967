import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { describe } from 'vitest';
import { createTestDatabase, infra } from '../../../test/support/infra.js';
import { migrate } from './migrator.js';
import { PgDatabase } from './pg-database.js';
import { PgliteDatabase } from './pglite-database.js';
import { PostgresMessageStore } from './postgres-message-store.js';
import { PostgresPresenceStore } from './postgres-presence-store.js';
import { describePresenceStoreContract, type PresenceStoreFixture } from './presence-store.contract.js';
import type { SqlDatabase } from './sql-database.js';

const logger = pino({ level: 'silent' });

function fixture(db: SqlDatabase, peerDb: SqlDatabase, close: () => Promise<void>): PresenceStoreFixture {
  const sessions = new PostgresMessageStore(db);
  return {
    store: new PostgresPresenceStore(db),
    peer: new PostgresPresenceStore(peerDb),
    age: async (instanceId, ms) => {
      await db.query(`UPDATE chat_instances SET alive_at = now() - $2::double precision * interval '1 millisecond' WHERE id = $1`, [instanceId, ms]);
    },
    openSession: async (a, b, intent = 'dating') => {
      const [x, y] = [
        { profileId: randomUUID(), email: a, displayName: a },
        { profileId: randomUUID(), email: b, displayName: b },
      ].sort((p, q) => (p.profileId < q.profileId ? -1 : 1));
      return (await sessions.upsertSession({ a: x!, b: y!, intent })).id;
    },
    close,
  };
}

describePresenceStoreContract(
  'PGlite',
  async () => {
    const db = await PgliteDatabase.open(undefined);
    await migrate({ kind: 'pglite', db }, logger);
    return fixture(db, db, () => db.close());
  },
  { concurrentTransactions: false },
);

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  describePresenceStoreContract(
    'PostgreSQL',
    async () => {
      const database = await createTestDatabase(infra.postgresUrl!);
      await migrate({ kind: 'postgres', url: database.url }, logger);
      const [db, peerDb] = [new PgDatabase({ url: database.url, poolSize: 4, logger }), new PgDatabase({ url: database.url, poolSize: 4, logger })];
      return fixture(db, peerDb, async () => {
        await Promise.all([db.close(), peerDb.close()]);
        await database.drop();
      });
    },
    { concurrentTransactions: true },
  );
});
