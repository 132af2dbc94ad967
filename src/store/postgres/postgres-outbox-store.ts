/**
 * OutboxStore on PostgreSQL (server or PGlite): the relay's side of `chat_message_outbox`. All of
 * the relay's SQL is literal and lives here; the rows are written by PostgresMessageStore.
 *
 * Lifecycle: construct on a database the caller owns (open before, close after); `subscribe` holds
 * a LISTEN (on PostgreSQL, its own connection) until its stop is called. No state beyond that.
 *
 * Invariants: every statement is one short transaction of its own, never run inside another's
 * callback (PGlite is one connection and would wait for itself); a failure is recorded only under
 * the lease it names; due times come from the database's clock.
 *
 * Must never happen: a claim that waits on another's lock (it skips); a pending or dead row pruned.
 */
import type { DeadOutboxRow, LeasedOutboxRow, OutboxFailure, OutboxStore, OutboxWake, RecordedOutboxFailure } from '../../chat/ports.js';
import { OUTBOX_CHANNEL } from './postgres-message-store.js';
import type { SqlDatabase } from './sql-database.js';

// --- SQL (literal, reviewed; runs on PostgreSQL 15 and PGlite) ---------------------------------

/**
 * One statement = one short transaction. `= ANY (ARRAY(…))` runs the locking subquery once, first,
 * and then updates by primary key: written as a join, the planner (guessing thousands of due rows)
 * hashed the whole table, processed rows included, on every claim — after a burst that made claims
 * the largest CPU cost of PostgreSQL at a steady 500 msg/s (docs/benchmarks.md).
 * `lease` identifies this claim: the exact next_retry_at it wrote, in epoch microseconds (exact,
 * unlike a JS Date); it is the same for every row of the claim (now() is per transaction).
 */
const CLAIM_SQL = `
UPDATE chat_message_outbox AS o
   SET next_retry_at = now() + $2::double precision * interval '1 millisecond'
 WHERE o.id = ANY (ARRAY(
         SELECT id FROM chat_message_outbox
          WHERE NOT processed AND NOT dead AND next_retry_at <= now()
          ORDER BY id
          LIMIT $1
          FOR UPDATE SKIP LOCKED))
RETURNING o.id, o.payload, o.created_at, o.retry_count,
          (extract(epoch FROM o.next_retry_at) * 1000000)::bigint::text AS lease`;

/** Not conditioned on the lease: the row was published, whoever holds it now. */
const MARK_PUBLISHED_SQL = `
UPDATE chat_message_outbox
   SET processed = true, sent_at = now(), dead = false
 WHERE id = ANY($1::bigint[]) AND NOT processed`;

/** Only while our lease holds (next_retry_at is still what our claim wrote). */
const MARK_FAILED_SQL = `
UPDATE chat_message_outbox AS o
   SET retry_count = o.retry_count + f.counted,
       next_retry_at = now() + f.delay_ms * interval '1 millisecond',
       last_error = f.error,
       dead = o.retry_count + f.counted >= $4
  FROM unnest($1::bigint[], $2::int[], $3::double precision[], $5::text[], $6::bigint[]) AS f(id, counted, delay_ms, error, lease)
 WHERE o.id = f.id AND o.id = ANY($1::bigint[]) AND NOT o.processed AND NOT o.dead
   AND (extract(epoch FROM o.next_retry_at) * 1000000)::bigint = f.lease
RETURNING o.id, o.retry_count, o.dead`;

/** Leased to this instance at insert, never published by it: due now for any relay. */
const RELEASE_SQL = `
UPDATE chat_message_outbox SET next_retry_at = now()
 WHERE id = ANY($1::bigint[]) AND NOT processed AND NOT dead`;

/**
 * Milliseconds until the earliest retry is due (by the database's clock, negative when overdue), or
 * null when none waits. Not clamped here: greatest() ignores NULL, so greatest(0, …) over no rows
 * gave 0, and a relay that had scheduled one retry then claimed every millisecond for good.
 */
const NEXT_RETRY_SQL = `
SELECT (extract(epoch FROM min(next_retry_at) - now()) * 1000)::float8 AS ms
  FROM chat_message_outbox
 WHERE NOT processed AND NOT dead AND retry_count > 0`;

const PRUNE_SQL = `
WITH gone AS (
  DELETE FROM chat_message_outbox
   WHERE id = ANY (ARRAY(
           SELECT id FROM chat_message_outbox
            WHERE processed AND sent_at < now() - $1::double precision * interval '1 millisecond'
            ORDER BY id
            LIMIT $2
            FOR UPDATE SKIP LOCKED))
  RETURNING 1
)
SELECT count(*)::int AS n FROM gone`;

// Two counts so the pending one can use the partial index on unpublished rows.
const COUNTS_SQL = `
SELECT (SELECT count(*) FROM chat_message_outbox WHERE NOT processed AND NOT dead) AS pending,
       (SELECT count(*) FROM chat_message_outbox WHERE dead) AS dead`;

/** Readiness asks this on every probe: the first pending row by id, read from the claim index. */
const OLDEST_PENDING_SQL = `
SELECT (extract(epoch FROM now() - (SELECT created_at FROM chat_message_outbox
                                     WHERE NOT processed AND NOT dead ORDER BY id LIMIT 1)) * 1000)::float8 AS ms`;

/** Served by the partial index on dead rows (0005_presence). */
const LIST_DEAD_SQL = `
SELECT id::text AS id, created_at, retry_count, last_error,
       payload->'event'->>'type' AS event_type, payload->'event'->>'sessionId' AS session_id
  FROM chat_message_outbox
 WHERE dead AND id > $2::bigint
 ORDER BY id
 LIMIT $1`;

/** Due now with its retries reset; the empty-origin NOTIFY wakes every relay (none skips it as its own). */
const REPLAY_DEAD_SQL = `
WITH replayed AS (
  UPDATE chat_message_outbox
     SET dead = false, retry_count = 0, next_retry_at = now()
   WHERE id = $1::bigint AND dead
  RETURNING id
)
SELECT id::text AS id, pg_notify('${OUTBOX_CHANNEL}', '') FROM replayed`;

// -------------------------------------------------------------------------------------------------

export interface PostgresOutboxStoreOptions {
  /**
   * This instance's NOTIFY payload (the `origin` its PostgresMessageStore writes with): its own
   * notifications are not passed on, since its commits reach its relay directly.
   */
  origin?: string;
}

export class PostgresOutboxStore implements OutboxStore {
  private readonly origin: string;

  constructor(
    private readonly db: SqlDatabase,
    options: PostgresOutboxStoreOptions = {},
  ) {
    this.origin = options.origin ?? '';
  }

  async claim(batchSize: number, leaseMs: number): Promise<LeasedOutboxRow[]> {
    const rows = await this.db.query<{ id: string | number; payload: LeasedOutboxRow['payload']; created_at: Date; retry_count: number; lease: string }>(
      CLAIM_SQL,
      [batchSize, leaseMs],
    );
    return rows
      .map((r) => ({ id: String(r.id), payload: r.payload, createdAt: r.created_at, retryCount: Number(r.retry_count), lease: r.lease }))
      .sort((a, b) => compareIds(a.id, b.id));
  }

  async markPublished(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.query(MARK_PUBLISHED_SQL, [ids]);
  }

  async markFailed(failures: readonly OutboxFailure[], maxRetries: number): Promise<RecordedOutboxFailure[]> {
    if (failures.length === 0) return [];
    const rows = await this.db.query<{ id: string | number; retry_count: number; dead: boolean }>(MARK_FAILED_SQL, [
      failures.map((f) => f.id),
      failures.map((f) => (f.counted ? 1 : 0)),
      failures.map((f) => f.delayMs),
      maxRetries,
      failures.map((f) => f.error),
      failures.map((f) => f.lease),
    ]);
    return rows.map((r) => ({ id: String(r.id), retryCount: Number(r.retry_count), dead: r.dead }));
  }

  async release(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.query(RELEASE_SQL, [ids]);
  }

  async nextRetryInMs(): Promise<number | null> {
    const rows = await this.db.query<{ ms: number | string | null }>(NEXT_RETRY_SQL);
    const ms = rows[0]?.ms;
    return ms === null || ms === undefined ? null : Math.max(0, Number(ms));
  }

  async prune(olderThanMs: number, limit: number): Promise<number> {
    const rows = await this.db.query<{ n: number }>(PRUNE_SQL, [olderThanMs, limit]);
    return Number(rows[0]?.n ?? 0);
  }

  async counts(): Promise<{ pending: number; dead: number }> {
    const rows = await this.db.query<{ pending: string | number; dead: string | number }>(COUNTS_SQL);
    return { pending: Number(rows[0]?.pending ?? 0), dead: Number(rows[0]?.dead ?? 0) };
  }

  async oldestPendingAgeMs(): Promise<number | null> {
    const rows = await this.db.query<{ ms: number | string | null }>(OLDEST_PENDING_SQL);
    const ms = rows[0]?.ms;
    return ms === null || ms === undefined ? null : Math.max(0, Number(ms));
  }

  async listDead(limit: number, afterId = '0'): Promise<DeadOutboxRow[]> {
    const rows = await this.db.query<{ id: string; created_at: Date; retry_count: number; last_error: string | null; event_type: string | null; session_id: string | null }>(
      LIST_DEAD_SQL,
      [limit, afterId],
    );
    return rows.map((r) => ({
      id: r.id,
      createdAt: new Date(r.created_at),
      retryCount: Number(r.retry_count),
      lastError: r.last_error,
      eventType: r.event_type,
      sessionId: r.session_id,
    }));
  }

  async replayDead(id: string): Promise<boolean> {
    // Ids are bigints: anything else names no row (and must not reach the cast as an error).
    if (!/^[0-9]{1,18}$/.test(id)) return false;
    const rows = await this.db.query<{ id: string }>(REPLAY_DEAD_SQL, [id]);
    return rows.length > 0;
  }

  /**
   * Each commit that writes outbox rows notifies with its writer's origin. An empty payload is an
   * unnamed writer, or the LISTEN connection coming back after missing some: look at once.
   */
  subscribe(handler: (wake: OutboxWake) => void): Promise<() => Promise<void>> {
    return this.db.listen(OUTBOX_CHANNEL, (origin) => {
      if (origin === '') handler('unknown');
      else if (origin !== this.origin) handler('other-instance');
    });
  }
}

/** Ids are bigints as text: shorter is smaller. */
function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
