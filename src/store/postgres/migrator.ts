/**
 * Applies migrations/NNNN_name.sql with node-pg-migrate. It holds a PostgreSQL advisory lock while
 * it runs, waiting for it when another instance holds it, so several instances starting at once
 * all come up and apply each migration exactly once.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { runner } from 'node-pg-migrate';
import type { Logger } from 'pino';
import type { PgliteDatabase } from './pglite-database.js';

export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../migrations');

type Target = { kind: 'postgres'; url: string } | { kind: 'pglite'; db: PgliteDatabase };

export async function migrate(target: Target, logger: Logger): Promise<string[]> {
  const log = (msg: string): void => logger.debug({ component: 'migrate' }, msg);
  const common = {
    dir: MIGRATIONS_DIR,
    direction: 'up' as const,
    migrationsTable: 'chat_schema_migrations',
    count: Infinity,
    logger: { debug: log, info: log, warn: (m: string) => logger.warn(m), error: (m: string) => logger.error(m) },
    checkOrder: true,
    verbose: false,
    // Instances started together queue on the lock and each finds the work done, instead of all
    // but one exiting with "Another migration is already running".
    advisoryLockMode: 'wait' as const,
  };
  if (target.kind === 'postgres') {
    // A dedicated client: the advisory lock belongs to one session for the whole run.
    const client = new pg.Client({ connectionString: target.url, connectionTimeoutMillis: 10_000, query_timeout: 300_000, keepAlive: true });
    // A lost connection fails the migration's query in flight; without a listener it would also crash the process.
    client.on('error', (err) => logger.warn({ err }, 'migration connection failed'));
    await client.connect();
    try {
      const ran = await runner({ ...common, dbClient: client });
      return ran.map((m) => m.name);
    } finally {
      await client.end();
    }
  }
  const adapter = {
    query: async (text: string | { text: string; values?: unknown[] }, values?: unknown[]) => {
      const sql = typeof text === 'string' ? text : text.text;
      const params = typeof text === 'string' ? values : text.values;
      return { rows: params && params.length > 0 ? await target.db.query(sql, params) : await target.db.exec(sql) };
    },
  };
  const ran = await runner({ ...common, dbClient: adapter as unknown as pg.Client });
  return ran.map((m) => m.name);
}
