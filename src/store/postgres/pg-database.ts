import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import { isConnectionFailure, type Queryable, type SqlDatabase } from './sql-database.js';
import { withTimeout } from '../../common/timeout.js';

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
  /**
   * How often the LISTEN connection proves it is alive with a query. A LISTEN connection only
   * receives, so without this a black-holed one would wait for notifications for ever. Default 10 s.
   */
  listenCheckIntervalMs?: number;
}

/** PostgreSQL through a node-postgres pool. */
export class PgDatabase implements SqlDatabase {
  readonly kind = 'postgres';
  readonly parallelism: number;
  private readonly pool: pg.Pool;
  private readonly queryTimeoutMs: number;

  constructor(private readonly options: PgDatabaseOptions) {
    const statementTimeout = options.statementTimeoutMs ?? 10_000;
    this.queryTimeoutMs = statementTimeout + 2_000;
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
      query_timeout: this.queryTimeoutMs,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: 'chat-service',
      ...(options.synchronousCommit === false ? { options: '-c synchronous_commit=off' } : {}),
    });
    // Without a listener, an idle client whose backend dies emits 'error' and crashes the process.
    this.pool.on('error', (err) => options.logger.warn({ err }, 'idle PostgreSQL client failed'));
  }

  async query<R>(sql: string, params?: readonly unknown[]): Promise<R[]> {
    const result = await this.pool.query(prepared(sql, params));
    return result.rows as R[];
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken = false;
    // The pool stops listening for a client's errors while it is checked out; a socket error then
    // (the backend or the network dies mid-transaction) would otherwise be an uncaught exception.
    // The query in flight fails with it too, so marking the client broken is all there is to do.
    const onError = (): void => {
      broken = true;
    };
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      const tx: Queryable = {
        query: async <R>(sql: string, params?: readonly unknown[]) => (await client.query(prepared(sql, params))).rows as R[],
      };
      const result = await fn(tx);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      if (isConnectionFailure(err)) {
        // The connection is gone or silent: a ROLLBACK would only wait for its own timeout. The
        // server rolls back when the connection closes, and the client is discarded.
        broken = true;
      } else {
        await client.query('ROLLBACK').catch(() => {
          broken = true;
        });
      }
      throw err;
    } finally {
      // A broken client is ended by the pool and may still report its socket's end: keep listening.
      if (!broken) client.removeListener('error', onError);
      client.release(broken);
    }
  }

  async listen(channel: string, handler: (payload: string) => void): Promise<() => Promise<void>> {
    let stopped = false;
    let client: pg.Client | undefined;
    let retry: NodeJS.Timeout | undefined;
    const checkEveryMs = this.options.listenCheckIntervalMs ?? 10_000;
    // A dedicated connection: LISTEN is per session, and pooled clients get handed to others.
    const connect = async (): Promise<void> => {
      const c = new pg.Client({
        connectionString: this.options.url,
        connectionTimeoutMillis: this.options.connectTimeoutMs ?? 5_000,
        query_timeout: this.queryTimeoutMs,
        keepAlive: true,
      });
      c.on('notification', (msg) => handler(msg.payload ?? ''));
      c.on('error', (err) => {
        if (discarded.has(c)) return;
        this.options.logger.warn({ err, channel }, 'LISTEN connection lost, reconnecting');
        scheduleReconnect(c);
      });
      try {
        await c.connect();
        await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
        if (stopped) {
          drop(c);
          return;
        }
        client = c;
        // Anything committed while we were disconnected was not announced to us.
        handler('');
      } catch (err) {
        this.options.logger.warn({ err, channel }, 'LISTEN connection failed, retrying');
        scheduleReconnect(c);
      }
    };
    const discarded = new WeakSet<pg.Client>();
    const drop = (c: pg.Client): void => {
      if (discarded.has(c)) return;
      discarded.add(c);
      discard(c);
    };
    const scheduleReconnect = (failed: pg.Client): void => {
      drop(failed);
      // A newer connection is already listening: nothing to do.
      if (client !== undefined && client !== failed) return;
      client = undefined;
      if (stopped || retry) return;
      retry = setTimeout(() => {
        retry = undefined;
        if (!stopped) void connect();
      }, 1_000);
      retry.unref();
    };
    // Receiving nothing looks the same on a quiet connection and on a black-holed one: ask.
    let checking = false;
    const check = setInterval(() => {
      const c = client;
      if (!c || stopped || checking) return;
      checking = true;
      c.query('SELECT 1')
        .catch((err: unknown) => {
          this.options.logger.warn({ err, channel }, 'LISTEN connection stopped answering, reconnecting');
          scheduleReconnect(c);
        })
        .finally(() => {
          checking = false;
        });
    }, checkEveryMs);
    check.unref();
    await connect();
    return async () => {
      stopped = true;
      clearInterval(check);
      if (retry) clearTimeout(retry);
      const c = client;
      client = undefined;
      if (c) {
        discarded.add(c);
        await endWithin(c, 2_000);
      }
    };
  }

  poolStats(): { inUse: number; idle: number; waiting: number } {
    const { totalCount, idleCount, waitingCount } = this.pool;
    return { inUse: totalCount - idleCount, idle: idleCount, waiting: waitingCount };
  }

  async ping(): Promise<void> {
    await this.pool.query({ text: 'SELECT 1', query_timeout: 2_000 } as pg.QueryConfig);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

const statementNames = new Map<string, string>();

/**
 * A statement with parameters runs as a named prepared statement: PostgreSQL parses and plans it
 * once per connection instead of on every call. Our statements are a handful of fixed literal
 * strings, and planning the send path's CTEs cost more PostgreSQL CPU than running them when a
 * commit carries only a message or two. (Needs session pooling: a transaction-pooling proxy in
 * front would hand the name to a connection that never prepared it.)
 */
function prepared(sql: string, params: readonly unknown[] | undefined): pg.QueryConfig {
  if (!params || params.length === 0) return { text: sql };
  let name = statementNames.get(sql);
  if (!name) {
    name = `chat_${createHash('sha1').update(sql).digest('hex').slice(0, 16)}`;
    statementNames.set(sql, name);
  }
  return { name, text: sql, values: params as unknown[] };
}

/** Ends a client, destroying its socket if the server does not answer the goodbye in time. */
async function endWithin(client: pg.Client, ms: number): Promise<void> {
  const ended = client.end().catch(() => undefined);
  await withTimeout(ended, ms, () => new Error('no goodbye from PostgreSQL')).catch(() => {
    // A silent peer never completes the close handshake; the socket must not linger.
    (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  });
}

function discard(client: pg.Client): void {
  void endWithin(client, 1_000);
}
