/**
 * The node-postgres binding when the network to the server fails silently (a black hole, not a
 * reset): every call ends in an error within its timeout, never hangs, and everything works again
 * once the network heals, LISTEN included.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { FaultProxy } from '../../../test/support/fault-proxy.js';
import { createTestDatabase, infra, type TestDatabase } from '../../../test/support/infra.js';
import { createLogger } from '../../observability/logger.js';
import { PgDatabase } from './pg-database.js';

const logger = createLogger('silent');

describe.skipIf(!infra.postgresUrl)('PgDatabase behind a black hole', () => {
  let database: TestDatabase;
  let admin: pg.Client;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  });
  afterAll(async () => {
    await admin?.end();
    await database?.drop();
  });

  async function open(options: { statementTimeoutMs: number; listenCheckIntervalMs?: number }): Promise<{ db: PgDatabase; proxy: FaultProxy }> {
    const { proxy, url } = await FaultProxy.forUrl(database.url, 5432);
    const db = new PgDatabase({ url, poolSize: 2, logger, connectTimeoutMs: 500, ...options });
    cleanups.push(() => proxy.close());
    cleanups.push(() => db.close());
    return { db, proxy };
  }

  async function elapsed(work: () => Promise<unknown>): Promise<{ ms: number; error: unknown }> {
    const started = Date.now();
    try {
      await work();
      return { ms: Date.now() - started, error: undefined };
    } catch (error) {
      return { ms: Date.now() - started, error };
    }
  }

  it('fails queries, transactions and pings within their timeouts, and recovers after healing', async () => {
    // statement 500 ms → the client-side read timeout is 2.5 s; new connections give up after 500 ms.
    const { db, proxy } = await open({ statementTimeoutMs: 500 });
    // Two idle connections in the pool, established before the network goes silent.
    await Promise.all([db.query('SELECT pg_sleep(0.05)'), db.transaction((tx) => tx.query('SELECT pg_sleep(0.05)'))]);

    proxy.setMode('black-hole');
    // One read timeout, not two: no ROLLBACK is sent down a connection that stopped answering.
    const tx = await elapsed(() => db.transaction((t) => t.query('SELECT 1')));
    expect(tx.error).toBeInstanceOf(Error);
    expect(tx.ms).toBeLessThan(4_000);
    const query = await elapsed(() => db.query('SELECT 1'));
    expect(query.error).toBeInstanceOf(Error);
    expect(query.ms).toBeLessThan(4_000);
    const ping = await elapsed(() => db.ping());
    expect(ping.error).toBeInstanceOf(Error);
    expect(ping.ms).toBeLessThan(4_000);

    proxy.setMode('pass');
    await expect.poll(() => db.query('SELECT 1').then(() => 'ok', () => 'failing'), { timeout: 10_000, interval: 100 }).toBe('ok');
    await db.transaction((t) => t.query('SELECT 1'));
  });

  it('replaces a LISTEN connection that went silent, and hears notifications again after healing', async () => {
    const { db, proxy } = await open({ statementTimeoutMs: 300, listenCheckIntervalMs: 200 });
    let heard = 0;
    const unlisten = await db.listen('chat_test_channel', () => (heard += 1));
    cleanups.push(unlisten);
    const notified = async (): Promise<void> => {
      const before = heard;
      await admin.query('NOTIFY chat_test_channel');
      await expect.poll(() => heard, { timeout: 500, interval: 10 }).toBeGreaterThan(before);
    };
    await vi.waitFor(notified, { timeout: 5_000 });

    proxy.setMode('black-hole');
    await expect(notified()).rejects.toThrow();
    // Let the liveness check find out (read timeout 2.3 s), then heal.
    await new Promise((resolve) => setTimeout(resolve, 2_600));
    proxy.setMode('pass');
    await vi.waitFor(notified, { timeout: 10_000, interval: 100 });
    await notified();
  });
});
