/**
 * The outbox relay (docs/architecture.md, "The path of a message"): moves events from `chat_message_outbox` to the EventBus.
 *
 * Cycle: claim → publish → mark. Rows this instance just wrote come without the claim: the store
 * writes them leased to this instance and hands them over (`adopt`), and the relay publishes them
 * from memory right after the commit; only what it did not write, or could not publish, is claimed.
 *  1. Claim, in one statement (so one short transaction): the due rows, oldest id first,
 *     `FOR UPDATE SKIP LOCKED`, leased by pushing `next_retry_at` to now + leaseMs. A relay that
 *     dies mid-batch leaves its rows to whichever relay finds them due after the lease.
 *  2. Publish every claimed envelope through the bus, concurrently (bounded), each with a timeout.
 *  3. Mark, in two batched statements: published rows `processed`; failed rows `retry_count + 1`,
 *     `next_retry_at = now + backoff(retry_count)`, `last_error`, and `dead` once retry_count
 *     reaches maxRetries (logged and counted). A failure never holds back the other rows.
 *  A full batch loops at once; otherwise the relay sleeps until `wake()` (local commit), a NOTIFY on
 *  `chat_outbox` from another instance (debounced: that instance's own relay is woken at once and
 *  normally claims its rows first; this is the net for a relay that is slow or gone), the earliest
 *  retry it scheduled, or the poll interval.
 *  Every pruneIntervalMs it deletes processed rows older than pruneAfterMs, in small batches.
 *
 * Lifecycle: construct → `start()` (LISTEN, first cycle at once) → `wake()` any number of times →
 * `stop()` (idempotent: stops listening, lets the in-flight batch finish publishing and marking,
 * then resolves). The relay does not own the bus or the database: start it after both, stop it
 * before both.
 *
 * Invariants:
 * - No transaction is open while publishing; the relay never queries inside a transaction
 *   callback (PGlite is one connection and would wait for itself).
 * - At least once: a row is marked processed only after a publish of it resolved (by this relay
 *   or, when leases overlapped, by another). Duplicates are allowed (a lease that expired while a
 *   slow publish was still running); clients de-duplicate by messageId and seq.
 * - A failure is recorded only while our lease on the row still holds, so a relay that lost its
 *   lease never pushes back, counts against or kills a row another relay has re-claimed.
 * - While the bus reports itself unhealthy, nothing is claimed, and a failure seen with the bus
 *   down is released without counting a retry: a broker outage must not kill every row.
 * - One cycle at a time per relay; a wake during a cycle causes exactly one more cycle.
 *
 * Must never happen: an exception escaping a timer or the loop (database and bus errors are
 * logged, then retried with a capped backoff); a row marked processed that nobody published; a
 * transaction held across a publish; a poison row blocking the rows behind it.
 */
import type { Logger } from 'pino';
import { asBusEnvelope } from '../chat/bus-envelope.js';
import { systemClock, type BusEnvelope, type Clock, type EventBus, type PublishBatchOptions } from '../chat/ports.js';
import type { Metrics } from '../observability/metrics.js';
import { OUTBOX_CHANNEL, type WrittenOutbox } from '../store/postgres/postgres-message-store.js';
import type { Queryable, SqlDatabase } from '../store/postgres/sql-database.js';

export interface OutboxRelayOptions {
  /** Rows claimed per cycle. Default 500. */
  batchSize: number;
  /** How long a claim keeps a row from other relays. Must comfortably exceed a batch's publish time. Default 30 s. */
  leaseMs: number;
  /** Safety-net poll when no wake or NOTIFY arrives. Default 1 s. */
  pollIntervalMs: number;
  /** Failed attempts after which a row is dead. Default 10. */
  maxRetries: number;
  /** Delay before attempt n+1 after the n-th failure (n ≥ 1), in ms. Default `defaultBackoff`. */
  backoff: (failures: number) => number;
  /** Processed rows older than this (since sent_at) are deleted. Default 60 s. */
  pruneAfterMs: number;
  /** How often to prune. Default 10 s. */
  pruneIntervalMs: number;
  /** Rows deleted per prune statement. Default 1000. */
  pruneBatchSize: number;
  /** Events per bus batch (one broker message each); a batch that fails fails all its rows. Default 250. */
  publishBatchSize: number;
  /** A publish not confirmed within this counts as failed (it may still land: at-least-once). 0 = none. Default 10 s. */
  publishTimeoutMs: number;
  /** Ceiling of the backoff after database errors (doubling from pollIntervalMs). Default 10 s. */
  errorBackoffMaxMs: number;
  /**
   * How long after another instance's NOTIFY this relay looks for rows. Each commit notifies every
   * instance; claiming at once on all of them would double the claims per commit in a cluster of
   * two (and more with more), almost all of them finding nothing. Default 100 ms.
   */
  remoteWakeDelayMs: number;
}

export interface OutboxRelayDeps {
  db: SqlDatabase;
  bus: EventBus;
  metrics: Metrics;
  logger: Logger;
  clock?: Clock;
  /** This instance's NOTIFY payload (see PostgresMessageStore): its own notifications are ignored. */
  origin?: string;
  options?: Partial<OutboxRelayOptions>;
}

/** min(60 s, 2^n s) after the n-th failure (docs/architecture.md). */
export function defaultBackoff(failures: number): number {
  return Math.min(60_000, 2 ** failures * 1000);
}

export const DEFAULT_OUTBOX_RELAY_OPTIONS: Readonly<OutboxRelayOptions> = Object.freeze({
  batchSize: 500,
  leaseMs: 30_000,
  pollIntervalMs: 1000,
  maxRetries: 10,
  backoff: defaultBackoff,
  pruneAfterMs: 60_000,
  pruneIntervalMs: 10_000,
  pruneBatchSize: 1000,
  publishBatchSize: 250,
  publishTimeoutMs: 10_000,
  errorBackoffMaxMs: 10_000,
  remoteWakeDelayMs: 100,
});

/** Outbox rows not yet published (and not dead), and dead rows: for /metrics and readiness. */
export async function outboxCounts(db: Queryable): Promise<{ pending: number; dead: number }> {
  // Two counts so the pending one can use the partial index on unpublished rows.
  const rows = await db.query<{ pending: string | number; dead: string | number }>(
    `SELECT (SELECT count(*) FROM chat_message_outbox WHERE NOT processed AND NOT dead) AS pending,
            (SELECT count(*) FROM chat_message_outbox WHERE dead) AS dead`,
  );
  return { pending: Number(rows[0]?.pending ?? 0), dead: Number(rows[0]?.dead ?? 0) };
}

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
 WHERE o.id = f.id AND NOT o.processed AND NOT o.dead
   AND (extract(epoch FROM o.next_retry_at) * 1000000)::bigint = f.lease
RETURNING o.id, o.retry_count, o.dead`;

/** Leased to this instance at insert, never published by it: due now for any relay. */
const RELEASE_SQL = `
UPDATE chat_message_outbox SET next_retry_at = now()
 WHERE id = ANY($1::bigint[]) AND NOT processed AND NOT dead`;

/** Milliseconds until the earliest retry is due (by the database's clock), or null when none waits. */
const NEXT_RETRY_SQL = `
SELECT greatest(0, extract(epoch FROM min(next_retry_at) - now()) * 1000)::float8 AS ms
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

// -------------------------------------------------------------------------------------------------

interface ClaimedRow {
  id: string;
  payload: BusEnvelope;
  createdAt: Date;
  retryCount: number;
  /** The claim (or the commit that wrote the row leased) this relay holds the row by. */
  lease: string;
}

type Attempt = { row: ClaimedRow; ok: true } | { row: ClaimedRow; ok: false; error: unknown };

/** The outcome of a batch, kept until the database has recorded it. */
interface PendingMark {
  published: string[];
  failed: Array<{ row: ClaimedRow; counted: boolean; delayMs: number; error: string }>;
}

type CycleOutcome = 'idle' | 'partial' | 'full' | 'bus-down';

class PublishTimeoutError extends Error {
  constructor(ms: number) {
    super(`publish not confirmed within ${ms} ms`);
    this.name = 'PublishTimeoutError';
  }
}

const MAX_LOGGED_FAILURES_PER_BATCH = 10;
const MAX_PRUNE_STATEMENTS_PER_RUN = 50;
const MAX_ERROR_TEXT = 2000;
const LISTEN_RETRY_MS = 10_000;
const MAX_ADOPTED_ROWS = 10_000;

export class OutboxRelay {
  private readonly db: SqlDatabase;
  private readonly bus: EventBus;
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly opts: OutboxRelayOptions;
  private readonly origin: string | undefined;

  private state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private loop: Promise<void> | undefined;
  private pruning: Promise<void> | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private nextListenAttemptAt = 0;
  private wakeRequested = false;
  private remoteWake: NodeJS.Timeout | undefined;
  /** Commits of this instance whose rows were written leased to it, oldest first, not yet published. */
  private readonly adopted: WrittenOutbox[] = [];
  private adoptedRows = 0;
  /** Something may be due in the table that was not handed over: claim before sleeping again. */
  private claimDue = true;
  private lastClaimAt = Number.NEGATIVE_INFINITY;
  private sleeper: { wakeable: boolean; done: () => void } | undefined;
  private pendingMark: PendingMark | undefined;
  /** This relay scheduled retries: ask the database when the next is due rather than wait for a poll. */
  private retriesScheduled = false;
  private lastPruneAt = Number.NEGATIVE_INFINITY;
  private consecutiveErrors = 0;
  private busDown = false;
  private cycleCount = 0;

  constructor(deps: OutboxRelayDeps) {
    this.db = deps.db;
    this.bus = deps.bus;
    this.metrics = deps.metrics;
    this.log = deps.logger.child({ component: 'outbox-relay' });
    this.clock = deps.clock ?? systemClock;
    this.origin = deps.origin;
    this.opts = { ...DEFAULT_OUTBOX_RELAY_OPTIONS, ...deps.options };
    validate(this.opts);
    if (this.opts.publishTimeoutMs === 0 || this.opts.publishTimeoutMs >= this.opts.leaseMs) {
      this.log.warn(
        { leaseMs: this.opts.leaseMs, publishTimeoutMs: this.opts.publishTimeoutMs },
        'publish timeout is not shorter than the lease: slow publishes will be duplicated by other relays',
      );
    }
  }

  /** Cycles started since `start()`; for tests and diagnostics. */
  get cycles(): number {
    return this.cycleCount;
  }

  /** Starts listening and the cycle loop. A second call is a no-op; a call after stop() throws. */
  start(): Promise<void> {
    if (this.state === 'stopping' || this.state === 'stopped') return Promise.reject(new Error('OutboxRelay: start after stop'));
    this.starting ??= this.startOnce();
    return this.starting;
  }

  /**
   * Asks for a cycle as soon as possible (call it after a commit that wrote outbox rows). Wakes
   * coalesce: any number during a cycle cause exactly one more. Never throws; no-op unless running.
   */
  wake(): void {
    this.claimDue = true;
    this.wakeUp();
  }

  /**
   * Takes over the rows a local commit wrote leased to this instance: delivers their events to this
   * instance's connections at once (no broker round trip for the users connected here, and no wait
   * while the broker is away), then publishes them for the other instances without claiming them.
   * Beyond MAX_ADOPTED_ROWS waiting (the bus away for long), rows are left to be claimed when their
   * lease ends, so a long outage costs bounded memory; this instance then sees them twice, and
   * clients drop the second copy by seq.
   */
  adopt(written: WrittenOutbox): void {
    if (this.state !== 'running') return;
    if (!written.leased) return this.wake();
    if (written.rows.length === 0) return;
    for (const row of written.rows) this.bus.deliverLocally(row.payload);
    if (this.adoptedRows + written.rows.length <= MAX_ADOPTED_ROWS) {
      this.adopted.push(written);
      this.adoptedRows += written.rows.length;
    }
    this.wakeUp();
  }

  private wakeUp(): void {
    if (this.state !== 'running') return;
    this.wakeRequested = true;
    if (this.sleeper?.wakeable) this.sleeper.done();
  }

  /** Stops listening, waits for the in-flight batch to be published and marked. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.stopOnce();
    return this.stopping;
  }

  private async startOnce(): Promise<void> {
    this.state = 'running';
    // Listen before the first cycle: a row committed between that cycle's claim and LISTEN taking
    // effect would otherwise wait for the poll.
    await this.ensureListening();
    this.loop = this.run().catch((err: unknown) => {
      // run() catches everything it expects; this is a bug, not an outage. Say so loudly.
      this.log.fatal({ err }, 'outbox relay loop failed; events are no longer published by this instance');
    });
    this.log.info({ batchSize: this.opts.batchSize, leaseMs: this.opts.leaseMs, pollIntervalMs: this.opts.pollIntervalMs }, 'outbox relay started');
  }

  private async stopOnce(): Promise<void> {
    if (this.state === 'new') {
      this.state = 'stopped';
      return;
    }
    await this.starting?.catch(() => undefined);
    this.state = 'stopping';
    clearTimeout(this.remoteWake);
    this.sleeper?.done();
    await this.loop;
    await this.pruning;
    if (this.pendingMark) {
      try {
        await this.flushMark();
      } catch (err) {
        this.log.warn({ err, rows: countRows(this.pendingMark) }, 'could not record the last batch; its rows will be published again after their lease');
      }
    }
    await this.releaseAdopted();
    const unlisten = this.unlisten;
    this.unlisten = undefined;
    await unlisten?.().catch((err: unknown) => this.log.warn({ err }, 'UNLISTEN failed'));
    this.state = 'stopped';
    this.log.info('outbox relay stopped');
  }

  /** Rows handed over but not published: due again now, for the other relays, not after the lease. */
  private async releaseAdopted(): Promise<void> {
    const ids = this.adopted.splice(0).flatMap((w) => w.rows.map((r) => r.id));
    this.adoptedRows = 0;
    if (ids.length === 0) return;
    try {
      await this.db.query(RELEASE_SQL, [ids]);
    } catch (err) {
      this.log.warn({ err, rows: ids.length }, 'could not release unpublished outbox rows; they are claimed when their lease ends');
    }
  }

  private async ensureListening(): Promise<void> {
    if (this.unlisten || this.clock.now().getTime() < this.nextListenAttemptAt) return;
    try {
      const unlisten = await this.db.listen(OUTBOX_CHANNEL, (payload) => this.notified(payload));
      if (this.state === 'running') this.unlisten = unlisten;
      else await unlisten();
    } catch (err) {
      this.nextListenAttemptAt = this.clock.now().getTime() + LISTEN_RETRY_MS;
      this.log.warn({ err, channel: OUTBOX_CHANNEL }, 'LISTEN failed; relying on polling until it works');
    }
  }

  /**
   * A commit somewhere wrote outbox rows. Ours came through wake() already; another named instance's
   * are its own relay's first; an unnamed notification (a writer that does not say, or the LISTEN
   * connection coming back after missing some) wakes at once.
   */
  private notified(origin: string): void {
    if (origin === '') return this.wake();
    if (origin === this.origin) return;
    if (this.remoteWake || this.state !== 'running') return;
    this.remoteWake = setTimeout(() => {
      this.remoteWake = undefined;
      this.wake();
    }, this.opts.remoteWakeDelayMs);
    this.remoteWake.unref();
  }

  private async run(): Promise<void> {
    while (this.state === 'running') {
      await this.ensureListening();
      // Cleared before the claim: a wake from here on means rows the claim may not have seen.
      this.wakeRequested = false;
      let outcome: CycleOutcome | 'error';
      try {
        outcome = await this.cycle();
        if (this.consecutiveErrors > 0) this.log.info({ failedCycles: this.consecutiveErrors }, 'outbox relay recovered');
        this.consecutiveErrors = 0;
      } catch (err) {
        this.consecutiveErrors++;
        outcome = 'error';
        this.claimDue = true;
        this.log.warn({ err, failedCycles: this.consecutiveErrors }, 'outbox cycle failed, will retry');
      }
      this.maybePrune();
      if (this.state !== 'running') break;
      if (outcome === 'error') {
        // Wakes arrive at the commit rate; they must not turn an outage into a busy loop.
        await this.sleep(Math.min(this.opts.errorBackoffMaxMs, this.opts.pollIntervalMs * 2 ** (this.consecutiveErrors - 1)), false);
        continue;
      }
      if (outcome === 'full' || this.wakeRequested) continue;
      // With the bus down nothing can be claimed, so a due retry must not shorten the wait.
      const delay = outcome === 'bus-down' ? this.opts.pollIntervalMs : await this.idleDelay();
      if (this.wakeRequested || this.state !== 'running') continue;
      await this.sleep(delay, true);
    }
  }

  /**
   * The poll interval, or less when a retry falls due sooner. The delay comes from the database
   * because the claim compares next_retry_at with the database's clock, not ours (PGlite's and a
   * server's clock can be milliseconds off Node's; a timer set by ours would wake to find nothing).
   */
  private async idleDelay(): Promise<number> {
    if (!this.retriesScheduled) return this.opts.pollIntervalMs;
    try {
      const rows = await this.db.query<{ ms: number | string | null }>(NEXT_RETRY_SQL);
      const ms = rows[0]?.ms;
      if (ms === null || ms === undefined || Number(ms) >= this.opts.pollIntervalMs) {
        this.retriesScheduled = false;
        return this.opts.pollIntervalMs;
      }
      // +1: timestamps are microseconds, timers milliseconds; never spin on a row due "now" that a
      // concurrent claim holds.
      return Math.max(1, Math.ceil(Number(ms)) + 1);
    } catch (err) {
      this.log.debug({ err }, 'could not read the next retry time; waiting for the poll');
      return this.opts.pollIntervalMs;
    }
  }

  private sleep(ms: number, wakeable: boolean): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.sleeper === sleeper) this.sleeper = undefined;
        resolve();
      };
      const sleeper = { wakeable, done };
      // Waking from the poll, a retry's due time or an error's backoff: look in the table again.
      const timer = setTimeout(() => {
        this.claimDue = true;
        done();
      }, ms);
      timer.unref();
      this.sleeper = sleeper;
    });
  }

  private async cycle(): Promise<CycleOutcome> {
    this.cycleCount++;
    // Record the last batch before claiming more: the database may have been down for it.
    if (this.pendingMark) await this.flushMark();
    if (!this.bus.isHealthy()) {
      if (!this.busDown) this.log.warn('bus unavailable; not claiming outbox rows until it is back');
      this.busDown = true;
      return 'bus-down';
    }
    if (this.busDown) {
      this.log.info('bus available again; publishing outbox rows');
      this.claimDue = true;
    }
    this.busDown = false;

    // Every commit handed over since the last cycle, up to a batch: one publish and one mark for all.
    const rows: ClaimedRow[] = [];
    while (this.adopted.length > 0 && rows.length < this.opts.batchSize) {
      const written = this.adopted.shift()!;
      this.adoptedRows -= written.rows.length;
      for (const r of written.rows) rows.push({ ...r, retryCount: 0, lease: written.lease });
    }
    const written = rows.length > 0;
    if (written) {
      this.pendingMark = this.toMark(await this.publishAll(rows, { deliveredHere: true }));
      await this.flushMark();
    }
    const more = this.adopted.length > 0;
    // Under a steady stream of handed-over rows the relay never sleeps long enough for its poll, so
    // the table is also looked at once per poll interval: a dead instance's rows must not starve.
    const now = this.clock.now().getTime();
    if (!this.claimDue && now - this.lastClaimAt < this.opts.pollIntervalMs) return more ? 'full' : written ? 'partial' : 'idle';
    this.claimDue = false;
    this.lastClaimAt = now;
    const claim = await this.claim();
    if (claim.length === 0) return more ? 'full' : written ? 'partial' : 'idle';
    this.pendingMark = this.toMark(await this.publishAll(claim));
    await this.flushMark();
    if (claim.length >= this.opts.batchSize) this.claimDue = true;
    return claim.length >= this.opts.batchSize || more ? 'full' : 'partial';
  }

  private async claim(): Promise<ClaimedRow[]> {
    const rows = await this.db.query<{ id: string | number; payload: BusEnvelope; created_at: Date; retry_count: number; lease: string }>(CLAIM_SQL, [
      this.opts.batchSize,
      this.opts.leaseMs,
    ]);
    return rows
      .map((r) => ({ id: String(r.id), payload: r.payload, createdAt: r.created_at, retryCount: Number(r.retry_count), lease: r.lease }))
      .sort((a, b) => compareIds(a.id, b.id));
  }

  /**
   * Publishes in id order, `publishBatchSize` events per bus batch, the batches at once; never
   * rejects. A row whose payload is not an envelope fails alone, before the batch is sent.
   */
  private async publishAll(rows: ClaimedRow[], options: PublishBatchOptions = {}): Promise<Attempt[]> {
    const attempts: Attempt[] = [];
    const chunks: ClaimedRow[][] = [];
    for (const row of rows) {
      if (!asBusEnvelope(row.payload)) {
        attempts.push({ row, ok: false, error: new TypeError('outbox payload is not a bus envelope') });
        this.metrics.outboxFailed.inc();
        continue;
      }
      const last = chunks.at(-1);
      if (last && last.length < this.opts.publishBatchSize) last.push(row);
      else chunks.push([row]);
    }
    const outcomes = await Promise.allSettled(chunks.map((chunk) => this.publishChunk(chunk.map((row) => row.payload), options)));
    const now = this.clock.now().getTime();
    chunks.forEach((chunk, i) => {
      const outcome = outcomes[i]!;
      for (const row of chunk) {
        if (outcome.status === 'fulfilled') {
          attempts.push({ row, ok: true });
          this.metrics.outboxPublished.inc();
          this.metrics.outboxLag.observe(Math.max(0, now - row.createdAt.getTime()) / 1000);
        } else {
          attempts.push({ row, ok: false, error: outcome.reason });
          this.metrics.outboxFailed.inc();
        }
      }
    });
    return attempts;
  }

  private publishChunk(envelopes: BusEnvelope[], options: PublishBatchOptions): Promise<void> {
    let published: Promise<void>;
    try {
      published = this.bus.publishBatch(envelopes, options);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const ms = this.opts.publishTimeoutMs;
    if (ms <= 0) return published;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new PublishTimeoutError(ms)), ms);
      // Both handlers attached: a rejection after the timeout is settled here, never unhandled.
      published.then(
        () => {
          clearTimeout(timer);
          resolve();
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  private toMark(attempts: Attempt[]): PendingMark {
    // A failure seen while the bus says it is down is the outage, not the row: no retry counted.
    const counted = this.bus.isHealthy();
    const mark: PendingMark = { published: [], failed: [] };
    let logged = 0;
    for (const attempt of attempts) {
      if (attempt.ok) {
        mark.published.push(attempt.row.id);
        continue;
      }
      const failures = attempt.row.retryCount + (counted ? 1 : 0);
      const delayMs = counted ? this.backoffFor(failures) : 0;
      mark.failed.push({ row: attempt.row, counted, delayMs, error: errorText(attempt.error) });
      if (logged++ < MAX_LOGGED_FAILURES_PER_BATCH) {
        this.log.warn({ outboxId: attempt.row.id, retryCount: failures, retryInMs: delayMs, err: attempt.error }, 'publish failed, will retry');
      }
    }
    if (logged > MAX_LOGGED_FAILURES_PER_BATCH) this.log.warn({ failed: logged, logged: MAX_LOGGED_FAILURES_PER_BATCH }, 'more publishes failed in this batch');
    if (mark.failed.length > 0 && !counted) this.log.warn({ failed: mark.failed.length }, 'bus went down during the batch; failed rows released without counting a retry');
    return mark;
  }

  /** A misbehaving custom backoff must not lose a batch's outcome: fall back to the default. */
  private backoffFor(failures: number): number {
    try {
      const ms = this.opts.backoff(failures);
      if (Number.isFinite(ms) && ms >= 0) return ms;
    } catch (err) {
      this.log.error({ err }, 'backoff function threw; using the default');
    }
    return defaultBackoff(failures);
  }

  /** Records pendingMark; on a database error keeps it for the next cycle and throws. */
  private async flushMark(): Promise<void> {
    const mark = this.pendingMark;
    if (!mark) return;
    const [published, failed] = await Promise.allSettled([
      mark.published.length > 0 ? this.db.query(MARK_PUBLISHED_SQL, [mark.published]) : Promise.resolve([]),
      mark.failed.length > 0
        ? this.db.query<{ id: string | number; retry_count: number; dead: boolean }>(MARK_FAILED_SQL, [
            mark.failed.map((f) => f.row.id),
            mark.failed.map((f) => (f.counted ? 1 : 0)),
            mark.failed.map((f) => f.delayMs),
            this.opts.maxRetries,
            mark.failed.map((f) => f.error),
            mark.failed.map((f) => f.row.lease),
          ])
        : Promise.resolve([]),
    ]);
    if (published.status === 'fulfilled') mark.published = [];
    if (failed.status === 'fulfilled') {
      this.afterFailuresMarked(mark.failed, failed.value);
      mark.failed = [];
    }
    if (published.status === 'rejected') throw published.reason;
    if (failed.status === 'rejected') throw failed.reason;
    this.pendingMark = undefined;
  }

  private afterFailuresMarked(failed: PendingMark['failed'], updated: Array<{ id: string | number; retry_count: number; dead: boolean }>): void {
    const byId = new Map(failed.map((f) => [f.row.id, f]));
    for (const row of updated) {
      const f = byId.get(String(row.id));
      if (!f) continue;
      if (row.dead) {
        this.metrics.outboxDeadTotal.inc();
        this.log.error({ outboxId: String(row.id), retryCount: Number(row.retry_count), err: f.error }, 'outbox row is dead: retries exhausted, it will not be published');
        continue;
      }
      this.retriesScheduled = true;
    }
    if (updated.length < failed.length) {
      // Lease expired and another relay re-claimed (or already published) those rows: theirs now.
      this.log.debug({ lost: failed.length - updated.length }, 'lease lost before recording failures');
    }
  }

  private maybePrune(): void {
    const now = this.clock.now().getTime();
    if (this.pruning || this.state !== 'running' || now - this.lastPruneAt < this.opts.pruneIntervalMs) return;
    this.lastPruneAt = now;
    // Not awaited by the cycle: pruning must not delay publishing. stop() awaits it.
    this.pruning = this.prune().finally(() => {
      this.pruning = undefined;
    });
  }

  private async prune(): Promise<void> {
    let total = 0;
    try {
      for (let i = 0; i < MAX_PRUNE_STATEMENTS_PER_RUN && this.state === 'running'; i++) {
        const rows = await this.db.query<{ n: number }>(PRUNE_SQL, [this.opts.pruneAfterMs, this.opts.pruneBatchSize]);
        const n = Number(rows[0]?.n ?? 0);
        total += n;
        if (n < this.opts.pruneBatchSize) break;
      }
      if (total > 0) this.log.debug({ deleted: total }, 'pruned processed outbox rows');
    } catch (err) {
      this.log.warn({ err, deleted: total }, 'outbox prune failed, will retry later');
    }
  }
}

function validate(o: OutboxRelayOptions): void {
  const positive = ['batchSize', 'leaseMs', 'pollIntervalMs', 'maxRetries', 'pruneIntervalMs', 'pruneBatchSize', 'publishBatchSize', 'errorBackoffMaxMs'] as const;
  for (const key of positive) {
    if (!Number.isFinite(o[key]) || o[key] <= 0) throw new RangeError(`OutboxRelay: ${key} must be a positive number, got ${o[key]}`);
  }
  for (const key of ['pruneAfterMs', 'publishTimeoutMs', 'remoteWakeDelayMs'] as const) {
    if (!Number.isFinite(o[key]) || o[key] < 0) throw new RangeError(`OutboxRelay: ${key} must be a number ≥ 0, got ${o[key]}`);
  }
  if (typeof o.backoff !== 'function') throw new TypeError('OutboxRelay: backoff must be a function');
}

function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

function errorText(err: unknown): string {
  const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return text.length > MAX_ERROR_TEXT ? `${text.slice(0, MAX_ERROR_TEXT)}…` : text;
}

function countRows(mark: PendingMark): number {
  return mark.published.length + mark.failed.length;
}
