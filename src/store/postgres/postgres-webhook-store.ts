/**
 * WebhookStore on PostgreSQL (server or PGlite): the dispatchers' side of `chat_webhook_outbox`.
 * The rows are written by PostgresMessageStore, in the transaction of the event they announce.
 *
 * Lifecycle: construct on a database the caller owns (open before, close after). No state.
 *
 * Invariants: every statement is one short transaction of its own; a claim takes only a session's
 * first pending row (so a session has at most one row in flight, on any instance, and its rows go
 * in id order); a failure is recorded only under the lease it names; due times come from the
 * database's clock.
 *
 * Must never happen: a claim that waits on another's lock (it skips); a pending or dead row pruned;
 * a session's later row claimed while an earlier one is pending.
 */
import { randomUUID } from 'node:crypto';
import type { BusEnvelope, LeasedWebhookRow, WebhookFailure, WebhookStore } from '../../chat/ports.js';
import type { SqlDatabase } from './sql-database.js';

// --- SQL (literal, reviewed; runs on PostgreSQL 14+ and PGlite) --------------------------------

/**
 * The locking subquery runs once, first (`= ANY (ARRAY(…))`), then rows are updated by primary key,
 * as the chat outbox's claim does. A row whose session has an earlier pending row is not claimable,
 * whether that row is due, leased to another dispatcher or waiting for a retry: that is what keeps
 * a session's deliveries one at a time and in order across instances. A row another dispatcher
 * leased after this statement's snapshot is re-checked once locked (its next_attempt_at moved on).
 */
const CLAIM_SQL = `
UPDATE chat_webhook_outbox AS w
   SET next_attempt_at = now() + $2::double precision * interval '1 millisecond', lease = $3::uuid
 WHERE w.id = ANY (ARRAY(
         SELECT c.id FROM chat_webhook_outbox c
          WHERE c.delivered_at IS NULL AND NOT c.dead AND c.next_attempt_at <= now()
            AND NOT EXISTS (
                  SELECT 1 FROM chat_webhook_outbox e
                   WHERE e.session_id = c.session_id AND e.id < c.id AND e.delivered_at IS NULL AND NOT e.dead)
          ORDER BY c.id
          LIMIT $1
          FOR UPDATE SKIP LOCKED))
RETURNING w.id::text AS id, w.event_id::text AS event_id, w.session_id, w.event_type, w.payload, w.created_at, w.attempts, w.lease::text AS lease`;

/** Not conditioned on the lease: the receiver has it, whoever holds the row now. */
const MARK_DELIVERED_SQL = `
UPDATE chat_webhook_outbox
   SET delivered_at = now(), lease = NULL
 WHERE id = ANY($1::bigint[]) AND delivered_at IS NULL`;

/** Only while our lease holds; clearing it makes a second report of the same attempt a no-op. */
const MARK_FAILED_SQL = `
UPDATE chat_webhook_outbox AS w
   SET attempts = w.attempts + 1,
       next_attempt_at = now() + f.delay_ms * interval '1 millisecond',
       last_error = f.error,
       dead = w.attempts + 1 >= $5,
       lease = NULL
  FROM unnest($1::bigint[], $2::uuid[], $3::double precision[], $4::text[]) AS f(id, lease, delay_ms, error)
 WHERE w.id = f.id AND w.delivered_at IS NULL AND NOT w.dead AND w.lease = f.lease
RETURNING w.id::text AS id, w.attempts, w.dead`;

/** Due now for any dispatcher, attempts unchanged; only while our lease holds. */
const RELEASE_SQL = `
UPDATE chat_webhook_outbox AS w
   SET next_attempt_at = now(), lease = NULL
  FROM unnest($1::bigint[], $2::uuid[]) AS r(id, lease)
 WHERE w.id = r.id AND w.delivered_at IS NULL AND NOT w.dead AND w.lease = r.lease`;

const COUNTS_SQL = `
SELECT (SELECT count(*) FROM chat_webhook_outbox WHERE delivered_at IS NULL AND NOT dead) AS pending,
       (SELECT count(*) FROM chat_webhook_outbox WHERE dead) AS dead`;

const PRUNE_SQL = `
WITH gone AS (
  DELETE FROM chat_webhook_outbox
   WHERE id = ANY (ARRAY(
           SELECT id FROM chat_webhook_outbox
            WHERE delivered_at < now() - $1::double precision * interval '1 millisecond'
            ORDER BY id
            LIMIT $2
            FOR UPDATE SKIP LOCKED))
  RETURNING 1
)
SELECT count(*)::int AS n FROM gone`;

// -------------------------------------------------------------------------------------------------

interface ClaimedRow {
  id: string;
  event_id: string;
  session_id: string;
  event_type: string;
  payload: BusEnvelope;
  created_at: Date;
  attempts: number;
  lease: string;
}

export class PostgresWebhookStore implements WebhookStore {
  constructor(private readonly db: SqlDatabase) {}

  async claim(limit: number, leaseMs: number): Promise<LeasedWebhookRow[]> {
    if (limit <= 0) return [];
    const rows = await this.db.query<ClaimedRow>(CLAIM_SQL, [limit, leaseMs, randomUUID()]);
    return rows
      .map((r) => ({
        id: r.id,
        eventId: r.event_id,
        sessionId: r.session_id,
        type: r.event_type,
        payload: typeof r.payload === 'string' ? (JSON.parse(r.payload) as BusEnvelope) : r.payload,
        createdAt: new Date(r.created_at),
        attempts: Number(r.attempts),
        lease: r.lease,
      }))
      .sort((x, y) => Number(BigInt(x.id) - BigInt(y.id)));
  }

  async markDelivered(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.query(MARK_DELIVERED_SQL, [[...ids]]);
  }

  async markFailed(failures: readonly WebhookFailure[], maxAttempts: number): Promise<Array<{ id: string; attempts: number; dead: boolean }>> {
    if (failures.length === 0) return [];
    const rows = await this.db.query<{ id: string; attempts: number; dead: boolean }>(MARK_FAILED_SQL, [
      failures.map((f) => f.id),
      failures.map((f) => f.lease),
      failures.map((f) => f.delayMs),
      failures.map((f) => f.error),
      maxAttempts,
    ]);
    return rows.map((r) => ({ id: r.id, attempts: Number(r.attempts), dead: r.dead }));
  }

  async release(rows: ReadonlyArray<{ id: string; lease: string }>): Promise<void> {
    if (rows.length === 0) return;
    await this.db.query(RELEASE_SQL, [rows.map((r) => r.id), rows.map((r) => r.lease)]);
  }

  async counts(): Promise<{ pending: number; dead: number }> {
    const [row] = await this.db.query<{ pending: string | number; dead: string | number }>(COUNTS_SQL);
    return { pending: Number(row?.pending ?? 0), dead: Number(row?.dead ?? 0) };
  }

  async prune(olderThanMs: number, limit: number): Promise<number> {
    if (limit <= 0) return 0;
    const [row] = await this.db.query<{ n: number }>(PRUNE_SQL, [olderThanMs, limit]);
    return Number(row?.n ?? 0);
  }
}
