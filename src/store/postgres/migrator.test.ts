import fs from 'node:fs';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createTestDatabase, infra } from '../../../test/support/infra.js';
import { MIGRATIONS_DIR, migrate } from './migrator.js';

describe.skipIf(!infra.postgresUrl)('migrate on PostgreSQL', () => {
  it('lets instances that migrate at the same moment wait for each other: all succeed, each migration runs once', async () => {
    const database = await createTestDatabase(infra.postgresUrl!);
    try {
      const logger = pino({ level: 'silent' });
      const runs = await Promise.all(Array.from({ length: 3 }, () => migrate({ kind: 'postgres', url: database.url }, logger)));
      const all = fs.readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).map((f) => f.replace(/\.sql$/, '')).sort();
      expect(runs.flat().sort()).toEqual(all);
    } finally {
      await database.drop();
    }
  });
});
