import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from './migrator.js';
import { PgliteDatabase } from './pglite-database.js';
import { PostgresProfileDirectory } from './postgres-profile-directory.js';

describe('PostgresProfileDirectory', () => {
  let db: PgliteDatabase;
  beforeAll(async () => {
    db = await PgliteDatabase.open(undefined);
    await migrate({ kind: 'pglite', db }, pino({ level: 'silent' }));
  });
  afterAll(async () => {
    await db?.close();
  });

  it('creates a profile on first use, named by the hint', async () => {
    const profile = await new PostgresProfileDirectory(db).resolve('Ann@Example.com', 'dating', { displayName: ' Ann ' });
    expect(profile).toMatchObject({ email: 'ann@example.com', displayName: 'Ann' });
  });

  it('names a profile created without a hint by its email', async () => {
    const profile = await new PostgresProfileDirectory(db).resolve('ben@example.com', 'dating');
    expect(profile.displayName).toBe('ben@example.com');
  });

  it('finds a stored profile by id from a fresh instance, as after a restart', async () => {
    const stored = await new PostgresProfileDirectory(db).resolve('cat@example.com', 'dating', { displayName: 'Cat' });
    const restarted = new PostgresProfileDirectory(db);
    expect(await restarted.byId(stored.id)).toEqual(stored);
    expect((await restarted.resolve('CAT@example.com', 'dating')).id).toBe(stored.id);
  });
});
