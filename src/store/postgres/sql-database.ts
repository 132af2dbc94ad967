/**
 * The one seam between our SQL and the two ways of running PostgreSQL: a node-postgres pool against
 * a server, or PGlite in-process. Queries are literal SQL that runs on PostgreSQL 15 and on PGlite.
 */

export interface Queryable {
  /** Runs one statement with $n parameters and returns its rows. */
  query<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<R[]>;
}

export interface SqlDatabase extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /**
   * How many transactions are worth running at once: the pool size on a server, 1 on PGlite
   * (one connection; a second transaction would only queue behind the first).
   */
  readonly parallelism: number;
  /** Runs fn in one transaction; commits when it resolves, rolls back when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Calls handler with the payload of each NOTIFY on channel (from any instance) until the returned stop is called. */
  listen(channel: string, handler: (payload: string) => void): Promise<() => Promise<void>>;
  /** Resolves when the database answers a trivial query within a short timeout. */
  ping(): Promise<void>;
  /** Connections checked out, idle, and callers waiting for one (a pool of one on PGlite). */
  poolStats(): { inUse: number; idle: number; waiting: number };
  close(): Promise<void>;
}

/** Maps the driver's failures to a question the domain can ask: is the store unreachable? */
export function isConnectionFailure(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    // 08xxx connection exceptions, 57P01-03 admin shutdown / cannot connect now, 53300 too many connections
    if (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === '53300' || code === '57014') return true;
    if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND'].includes(code)) return true;
  }
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout|connection timeout/i.test(err.message);
}
