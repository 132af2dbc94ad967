import pg from 'pg';
import type { Logger } from 'pino';
import type { Queryable, SqlDatabase } from './sql-database.js';

export interface PgDatabaseOptions {
  url: string;
  poolSize: number;
  logger: Logger;
  /** Per-statement limit, so a black-holed server means errors, never hangs. */
  statementTimeoutMs?: number;
  connectTimeoutMs?: number;
  /**
   * false for work whose commits may be lost in a crash without harm (the outbox relay's claims and
   * marks: a lost claim expires, a lost mark means one more delivery, which at-least-once allows).
   * Their commits then do not wait for a WAL flush, nor queue message commits behind theirs.
   */
  synchronousCommit?: boolean;
}

/** PostgreSQL through a node-postgres pool. */
export class PgDatabase implements SqlDatabase {
  readonly kind = 'postgres';
  readonly parallelism: number;
  private readonly pool: pg.Pool;

  constructor(private readonly options: PgDatabaseOptions) {
    const statementTimeout = options.statementTimeoutMs ?? 10_000;
    // Two batches in flight: one committing (waiting on the WAL flush) while the next one gathers.
    // More would split the load into smaller batches that queue on the same flush (measured: at
    // 500 msg/s a batch took 7 ms with 2 in flight, 26 ms with 8; see docs/benchmarks.md).
    this.parallelism = Math.min(2, options.poolSize);
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
      statement_timeout: statementTimeout,
      // The client-side guard for when the server never answers at all (network black hole).
      query_timeout: statementTimeout + 2_000,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: 'chat-service',
      ...(options.synchronousCommit === false ? { options: '-c synchronous_commit=off' } : {}),
    });
    // Without a listener, an idle client whose backend dies emits 'error' and crashes the process.
    this.pool.on('error', (err) => options.logger.warn({ err }, 'idle PostgreSQL client failed'));
  }

  async query<R>(sql: string, params?: readonly unknown[]): Promise<R[]> {
    const result = await this.pool.query(sql, params as unknown[] | undefined);
    return result.rows as R[];
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken = false;
    try {
      await client.query('BEGIN');
      const tx: Queryable = {
        query: async <R>(sql: string, params?: readonly unknown[]) => (await client.query(sql, params as unknown[] | undefined)).rows as R[],
      };
      const result = await fn(tx);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {
        broken = true;
      });
      throw err;
    } finally {
      client.release(broken);
    }
  }

  async listen(channel: string, handler: () => void): Promise<() => Promise<void>> {
    let stopped = false;
    let client: pg.Client | undefined;
    let retry: NodeJS.Timeout | undefined;
    // A dedicated connection: LISTEN is per session, and pooled clients get handed to others.
    const connect = async (): Promise<void> => {
      const c = new pg.Client({ connectionString: this.options.url, connectionTimeoutMillis: 5_000, keepAlive: true });
      c.on('notification', () => handler());
      c.on('error', (err) => {
        this.options.logger.warn({ err, channel }, 'LISTEN connection lost, reconnecting');
        scheduleReconnect();
      });
      try {
        await c.connect();
        await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
        client = c;
        // Anything committed while we were disconnected was not announced to us.
        handler();
      } catch (err) {
        await c.end().catch(() => undefined);
        this.options.logger.warn({ err, channel }, 'LISTEN connection failed, retrying');
        scheduleReconnect();
      }
    };
    const scheduleReconnect = (): void => {
      const old = client;
      client = undefined;
      void old?.end().catch(() => undefined);
      if (stopped || retry) return;
      retry = setTimeout(() => {
        retry = undefined;
        if (!stopped) void connect();
      }, 1_000);
      retry.unref();
    };
    await connect();
    return async () => {
      stopped = true;
      if (retry) clearTimeout(retry);
      await client?.end().catch(() => undefined);
    };
  }

  async ping(): Promise<void> {
    await this.pool.query({ text: 'SELECT 1', query_timeout: 2_000 } as pg.QueryConfig);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
