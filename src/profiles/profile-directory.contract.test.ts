import { generateKeyPairSync } from 'node:crypto';
import pino from 'pino';
import { describe } from 'vitest';
import { Registry } from 'prom-client';
import { startProfileService } from '../../tools/profile-service/profile-service.js';
import { infra } from '../../test/support/infra.js';
import { createTestDatabase } from '../../test/support/test-database.js';
import { migrate } from '../store/postgres/migrator.js';
import { PgDatabase } from '../store/postgres/pg-database.js';
import { PgliteDatabase } from '../store/postgres/pglite-database.js';
import { HttpProfileDirectory } from './http-profile-directory.js';
import { LocalProfileDirectory } from './local-profile-directory.js';
import { describeProfileDirectoryContract } from './profile-directory.contract.js';

const logger = pino({ level: 'silent' });

describeProfileDirectoryContract('local (PGlite)', async () => {
  const db = await PgliteDatabase.open(undefined);
  await migrate({ kind: 'pglite', db }, logger);
  return { directory: new LocalProfileDirectory(db), close: () => db.close() };
});

describeProfileDirectoryContract('HTTP (reference profile service)', async () => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const service = await startProfileService({ publicKey, autoCreate: true });
  const directory = new HttpProfileDirectory({
    baseUrl: service.url,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    issuer: 'chat-service',
    audience: 'profile-service',
    cacheTtlMs: 60_000,
    cacheMax: 1000,
    logger,
    registry: new Registry(),
  });
  return { directory, close: () => service.close() };
});

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  describeProfileDirectoryContract('local (PostgreSQL)', async () => {
    const database = await createTestDatabase(infra.postgresUrl!);
    await migrate({ kind: 'postgres', url: database.url }, logger);
    const db = new PgDatabase({ url: database.url, poolSize: 4, logger });
    return {
      directory: new LocalProfileDirectory(db),
      close: async () => {
        await db.close();
        await database.drop();
      },
    };
  });
});
