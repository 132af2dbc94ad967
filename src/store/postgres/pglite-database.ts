/**
 * Embedded PostgreSQL (PGlite, Postgres compiled to WASM) for the zero-configuration default.
 *
 * PGlite is one connection in this process: transactions serialise, so parallelism is 1, and code
 * must never query through the database while holding a transaction (it would wait for itself).
 * One process per data directory: a lock file stops a second process from corrupting it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import type { Queryable, SqlDatabase } from './sql-database.js';

export class PgliteDatabase implements SqlDatabase {
  readonly kind = 'pglite';
  readonly parallelism = 1;

  private constructor(
    private readonly db: PGlite,
    private readonly releaseLock: () => void,
  ) {}

  /** Opens (creating on first use) the database under dataDir; `undefined` keeps it in memory. */
  static async open(dataDir: string | undefined): Promise<PgliteDatabase> {
    let releaseLock = (): void => undefined;
    if (dataDir) {
      fs.mkdirSync(dataDir, { recursive: true });
      releaseLock = acquireDirectoryLock(path.join(dataDir, 'chat-service.lock'));
    }
    try {
      const db = await PGlite.create(dataDir ? path.join(dataDir, 'pgdata') : undefined);
      return new PgliteDatabase(db, releaseLock);
    } catch (err) {
      releaseLock();
      throw err;
    }
  }

  /** Statements and transactions called and not yet finished: one runs, the rest wait. */
  private pending = 0;

  async query<R>(sql: string, params?: readonly unknown[]): Promise<R[]> {
    this.pending++;
    try {
      await yieldToIo();
      return (await this.db.query<R>(sql, params as unknown[] | undefined)).rows;
    } finally {
      this.pending--;
    }
  }

  poolStats(): { inUse: number; idle: number; waiting: number } {
    return { inUse: Math.min(1, this.pending), idle: this.pending > 0 ? 0 : 1, waiting: Math.max(0, this.pending - 1) };
  }

  /** Runs a script of several statements (migrations); the extended protocol allows only one. */
  async exec(sql: string): Promise<Array<Record<string, unknown>>> {
    const results = await this.db.exec(sql);
    return (results.at(-1)?.rows ?? []) as Array<Record<string, unknown>>;
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    this.pending++;
    try {
      await yieldToIo();
      return await this.db.transaction(async (pgTx) =>
        fn({ query: async <R>(sql: string, params?: readonly unknown[]) => (await pgTx.query<R>(sql, params as unknown[] | undefined)).rows }),
      );
    } finally {
      this.pending--;
    }
  }

  async listen(channel: string, handler: (payload: string) => void): Promise<() => Promise<void>> {
    return this.db.listen(channel, (payload) => handler(payload));
  }

  async ping(): Promise<void> {
    await this.db.query('SELECT 1');
  }

  async close(): Promise<void> {
    try {
      await this.db.close();
    } finally {
      this.releaseLock();
    }
  }
}

/**
 * PGlite runs each statement synchronously on this thread, and hands its lock from one waiting
 * statement to the next in promise callbacks, so a queue of statements runs back to back without
 * the event loop ever reading a socket (we measured event-loop stalls of 700 ms under load, and
 * group commits of one message each because sends could not arrive while statements ran). Queuing
 * each statement behind pending I/O lets sends in and lets them share a transaction.
 */
function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Takes an exclusive lock file holding our pid. A lock left by a process that no longer exists
 * (kill -9) is taken over; one held by a live process is a clear start-up error.
 */
function acquireDirectoryLock(lockPath: string): () => void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lockPath, String(process.pid), { flag: 'wx' });
      return () => fs.rmSync(lockPath, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(fs.readFileSync(lockPath, 'utf8').trim());
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
        throw new Error(`DATA_DIR: ${path.dirname(lockPath)} is in use by process ${holder}; run one process per data directory`, { cause: err });
      }
      fs.rmSync(lockPath, { force: true });
    }
  }
  throw new Error(`DATA_DIR: could not lock ${lockPath}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
