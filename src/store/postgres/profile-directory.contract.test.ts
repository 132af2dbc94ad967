/** The ProfileDirectory contract against the PostgreSQL directory, on PGlite and on PostgreSQL. */
import pino from 'pino';
import { describe } from 'vitest';
import { createTestDatabase, infra } from '../../../test/support/infra.js';
import { describeProfileDirectoryContract } from '../../profiles/profile-directory.contract.js';
import { migrate } from './migrator.js';
import { PgDatabase } from './pg-database.js';
import { PgliteDatabase } from './pglite-database.js';
import { PostgresProfileDirectory } from './postgres-profile-directory.js';

const logger = pino({ level: 'silent' });

describeProfileDirectoryContract('PostgreSQL directory (PGlite)', async () => {
  const db = await PgliteDatabase.open(undefined);
  await migrate({ kind: 'pglite', db }, logger);
  return { directory: new PostgresProfileDirectory(db), close: () => db.close() };
});

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  describeProfileDirectoryContract('PostgreSQL directory (PostgreSQL)', async () => {
    const database = await createTestDatabase(infra.postgresUrl!);
    await migrate({ kind: 'postgres', url: database.url }, logger);
    const db = new PgDatabase({ url: database.url, poolSize: 4, logger });
    return {
      directory: new PostgresProfileDirectory(db),
      close: async () => {
        await db.close();
        await database.drop();
      },
    };
  });
});
