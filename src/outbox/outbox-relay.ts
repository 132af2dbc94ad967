/**
 * The outbox relay (docs/architecture.md, "The path of a message"): moves events from the outbox
 * (the OutboxStore port) to the EventBus. It owns the loop and its timing; the store owns the SQL
 * (src/store/postgres/postgres-outbox-store.ts), the retry policy is in retry-policy.ts.
 *
 * Cycle: claim → publish → mark. Rows this instance just wrote come without the claim: the store
 * writes them leased to this instance and hands them over (`adopt`), and the relay publishes them
 * from memory right after the commit; only what it did not write, or could not publish, is claimed.
 *  1. Claim (`OutboxStore.claim`, one short transaction): the due rows, oldest id first, skipping
 *     locked ones, leased for leaseMs. A relay that dies mid-batch leaves its rows to whichever
 *     relay finds them due after the lease.
 *  2. Publish every claimed envelope through the bus, concurrently (bounded), each with a timeout.
 *  3. Mark, in two batched calls: published rows processed; failed rows as the retry policy says
 *     (retry-policy.ts: counted or not, due again after the backoff, dead once the retries are
 *     exhausted, logged and counted). A failure never holds back the other rows.
 *  A full batch loops at once; otherwise the relay sleeps until `wake()` (local commit), the store's
 *  wake-up for another instance's commit (debounced: that instance's own relay is woken at once and
 *  normally claims its rows first; this is the net for a relay that is slow or gone), the earliest
 *  retry it scheduled, or the poll interval.
 *  Every pruneIntervalMs it deletes processed rows older than pruneAfterMs, in small batches.
 *
 * Lifecycle: construct → `start()` (subscribe to the store's wake-ups, first cycle at once) →
 * `wake()` any number of times → `stop()` (idempotent: stops listening, lets the in-flight batch
 * finish publishing and marking, then resolves). The relay does not own the bus or the store's
 * database: start it after both, stop it before both.
 *
 * Invariants:
 * - No transaction is open while publishing: every store call is its own short transaction.
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
import { traceBatch } from '../observability/tracing.js';
import { backoffMs } from '../common/backoff.js';
import { withTimeout } from '../common/timeout.js';
import {
  systemClock,
  type BusEnvelope,
  type Clock,
  type EventBus,
  type LeasedOutboxRow,
  type OutboxStore,
  type OutboxWake,
  type PublishBatchOptions,
  type RecordedOutboxFailure,
  type WrittenOutbox,
} from '../chat/ports.js';
import type { Metrics } from '../observability/metrics.js';
import { type Backoff, defaultBackoff, RetryPolicy } from './retry-policy.js';

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
  backoff: Backoff;
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
  /**
   * How long published rows may wait to be marked, so that one statement marks the rows of many
   * cycles: at a steady low rate each cycle publishes a commit or two, and a mark per cycle was a
   * statement (and a WAL record) per message. A row unmarked when the instance dies is published
   * again after its lease, as at-least-once allows. Failures are recorded at once. Default 100 ms.
   */
  markDelayMs: number;
}

export interface OutboxRelayDeps {
  /** Where the rows are; its wake-ups already leave out this instance's own commits. */
  store: OutboxStore;
  bus: EventBus;
  metrics: Metrics;
  logger: Logger;
  clock?: Clock;
  options?: Partial<OutboxRelayOptions>;
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
  markDelayMs: 100,
});

type Attempt = { row: LeasedOutboxRow; ok: true } | { row: LeasedOutboxRow; ok: false; error: unknown };

/** The outcome of a batch, kept until the store has recorded it. */
interface PendingMark {
  published: string[];
  failed: Array<{ row: LeasedOutboxRow; counted: boolean; delayMs: number; error: string }>;
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
  private readonly store: OutboxStore;
  private readonly bus: EventBus;
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly opts: OutboxRelayOptions;
  private readonly retries: RetryPolicy;

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
  /** When the oldest outcome in pendingMark was added (clock ms). */
  private markSince = 0;
  /** This relay scheduled retries: ask the database when the next is due rather than wait for a poll. */
  private retriesScheduled = false;
  private lastPruneAt = Number.NEGATIVE_INFINITY;
  private consecutiveErrors = 0;
  private busDown = false;
  private cycleCount = 0;

  constructor(deps: OutboxRelayDeps) {
    this.store = deps.store;
    this.bus = deps.bus;
    this.metrics = deps.metrics;
    this.log = deps.logger.child({ component: 'outbox-relay' });
    this.clock = deps.clock ?? systemClock;
    this.opts = { ...DEFAULT_OUTBOX_RELAY_OPTIONS, ...deps.options };
    validate(this.opts);
    this.retries = new RetryPolicy(this.opts.maxRetries, this.opts.backoff, (err) => this.log.error({ err }, 'backoff function threw; using the default'));
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
    // Listen before the first cycle: a row committed between that cycle's claim and the
    // subscription taking effect would otherwise wait for the poll.
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
      await this.store.release(ids);
    } catch (err) {
      this.log.warn({ err, rows: ids.length }, 'could not release unpublished outbox rows; they are claimed when their lease ends');
    }
  }

  private async ensureListening(): Promise<void> {
    if (this.unlisten || this.clock.now().getTime() < this.nextListenAttemptAt) return;
    try {
      const unlisten = await this.store.subscribe((wake) => this.notified(wake));
      if (this.state === 'running') this.unlisten = unlisten;
      else await unlisten();
    } catch (err) {
      this.nextListenAttemptAt = this.clock.now().getTime() + LISTEN_RETRY_MS;
      this.log.warn({ err }, 'LISTEN failed; relying on polling until it works');
    }
  }

  /**
   * A commit somewhere else wrote outbox rows (ours come through adopt() and wake(), and the store
   * does not report them). Another named instance's are its own relay's first; an unknown writer,
   * or notifications possibly missed, wake at once.
   */
  private notified(wake: OutboxWake): void {
    if (wake === 'unknown') return this.wake();
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
        await this.sleep(backoffMs(this.consecutiveErrors, { initialMs: this.opts.pollIntervalMs, maxMs: this.opts.errorBackoffMaxMs }), false);
        continue;
      }
      if (outcome === 'full' || this.wakeRequested) continue;
      // With the bus down nothing can be claimed, so a due retry must not shorten the wait.
      const delay = outcome === 'bus-down' ? this.opts.pollIntervalMs : await this.idleDelay();
      if (this.wakeRequested || this.state !== 'running') continue;
      const markIn = this.pendingMark ? Math.max(0, this.markSince + this.opts.markDelayMs - this.clock.now().getTime()) : Number.POSITIVE_INFINITY;
      if (markIn < delay) {
        // Marks that fall due while idle are recorded on their own, without a cycle (no claim).
        await this.sleep(markIn, true, false);
        if (this.wakeRequested || this.state !== 'running') continue;
        await this.flushMark().catch((err: unknown) => this.log.warn({ err }, 'could not record published outbox rows, will retry'));
        if (this.wakeRequested || this.state !== 'running') continue;
        await this.sleep(delay - markIn, true);
      } else await this.sleep(delay, true);
    }
  }

  /**
   * The poll interval, or less when a retry falls due sooner. The delay comes from the store
   * because the claim compares due times with the database's clock, not ours (PGlite's and a
   * server's clock can be milliseconds off Node's; a timer set by ours would wake to find nothing).
   */
  private async idleDelay(): Promise<number> {
    if (!this.retriesScheduled) return this.opts.pollIntervalMs;
    try {
      const ms = await this.store.nextRetryInMs();
      if (ms === null || ms >= this.opts.pollIntervalMs) {
        this.retriesScheduled = false;
        return this.opts.pollIntervalMs;
      }
      // +1: timestamps are microseconds, timers milliseconds; never spin on a row due "now" that a
      // concurrent claim holds.
      return Math.max(1, Math.ceil(ms) + 1);
    } catch (err) {
      this.log.debug({ err }, 'could not read the next retry time; waiting for the poll');
      return this.opts.pollIntervalMs;
    }
  }

  /** `claimAfter`: the timer (a poll, a retry's due time, an error's backoff) means the table may hold due rows. */
  private sleep(ms: number, wakeable: boolean, claimAfter = true): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.sleeper === sleeper) this.sleeper = undefined;
        resolve();
      };
      const sleeper = { wakeable, done };
      // Waking from the poll, a retry's due time or an error's backoff: look in the table again.
      const timer = setTimeout(() => {
        if (claimAfter) this.claimDue = true;
        done();
      }, ms);
      timer.unref();
      this.sleeper = sleeper;
    });
  }

  private async cycle(): Promise<CycleOutcome> {
    this.cycleCount++;
    // Failures are recorded before claiming more (their rows must be rescheduled), and published
    // rows once they have waited long enough or are many.
    if (this.markDue()) await this.flushMark();
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
    const rows: LeasedOutboxRow[] = [];
    while (this.adopted.length > 0 && rows.length < this.opts.batchSize) {
      const written = this.adopted.shift()!;
      this.adoptedRows -= written.rows.length;
      for (const r of written.rows) rows.push({ ...r, retryCount: 0, lease: written.lease });
    }
    const written = rows.length > 0;
    if (written) {
      this.addMark(this.toMark(await this.publishAll(rows, { deliveredHere: true })));
      if (this.markDue()) await this.flushMark();
    }
    const more = this.adopted.length > 0;
    // Under a steady stream of handed-over rows the relay never sleeps long enough for its poll, so
    // the table is also looked at once per poll interval: a dead instance's rows must not starve.
    const now = this.clock.now().getTime();
    if (!this.claimDue && now - this.lastClaimAt < this.opts.pollIntervalMs) return more ? 'full' : written ? 'partial' : 'idle';
    this.claimDue = false;
    this.lastClaimAt = now;
    const claim = await this.store.claim(this.opts.batchSize, this.opts.leaseMs);
    if (claim.length === 0) return more ? 'full' : written ? 'partial' : 'idle';
    this.addMark(this.toMark(await this.publishAll(claim)));
    if (this.markDue()) await this.flushMark();
    if (claim.length >= this.opts.batchSize) this.claimDue = true;
    return claim.length >= this.opts.batchSize || more ? 'full' : 'partial';
  }

  /**
   * Publishes in id order, `publishBatchSize` events per bus batch, the batches at once; never
   * rejects. A row whose payload is not an envelope fails alone, before the batch is sent.
   */
  private async publishAll(rows: LeasedOutboxRow[], options: PublishBatchOptions = {}): Promise<Attempt[]> {
    const attempts: Attempt[] = [];
    const chunks: LeasedOutboxRow[][] = [];
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
    const outcomes = await Promise.allSettled(
      chunks.map((chunk) => traceBatch('outbox.publish', chunk.map((row) => row.payload.trace), () => this.publishChunk(chunk.map((row) => row.payload), options))),
    );
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
    return ms > 0 ? withTimeout(published, ms, () => new PublishTimeoutError(ms)) : published;
  }

  private toMark(attempts: Attempt[]): PendingMark {
    // Asked once per batch: the bus going down during it decides for all its failures.
    const busHealthy = this.bus.isHealthy();
    const mark: PendingMark = { published: [], failed: [] };
    let logged = 0;
    for (const attempt of attempts) {
      if (attempt.ok) {
        mark.published.push(attempt.row.id);
        continue;
      }
      const { counted, failures, delayMs } = this.retries.afterFailure(attempt.row.retryCount, busHealthy);
      mark.failed.push({ row: attempt.row, counted, delayMs, error: errorText(attempt.error) });
      if (logged++ < MAX_LOGGED_FAILURES_PER_BATCH) {
        this.log.warn({ outboxId: attempt.row.id, retryCount: failures, retryInMs: delayMs, err: attempt.error }, 'publish failed, will retry');
      }
    }
    if (logged > MAX_LOGGED_FAILURES_PER_BATCH) this.log.warn({ failed: logged, logged: MAX_LOGGED_FAILURES_PER_BATCH }, 'more publishes failed in this batch');
    if (mark.failed.length > 0 && !busHealthy) this.log.warn({ failed: mark.failed.length }, 'bus went down during the batch; failed rows released without counting a retry');
    return mark;
  }

  private addMark(mark: PendingMark): void {
    if (!this.pendingMark) {
      this.pendingMark = mark;
      this.markSince = this.clock.now().getTime();
      return;
    }
    this.pendingMark.published.push(...mark.published);
    this.pendingMark.failed.push(...mark.failed);
  }

  private markDue(): boolean {
    const mark = this.pendingMark;
    if (!mark) return false;
    return (
      mark.failed.length > 0 ||
      mark.published.length >= this.opts.batchSize ||
      this.state !== 'running' ||
      this.clock.now().getTime() - this.markSince >= this.opts.markDelayMs
    );
  }

  /** Records pendingMark; on a store error keeps it for the next cycle and throws. */
  private async flushMark(): Promise<void> {
    const mark = this.pendingMark;
    if (!mark) return;
    const [published, failed] = await Promise.allSettled([
      this.store.markPublished(mark.published),
      this.store.markFailed(
        mark.failed.map((f) => ({ id: f.row.id, lease: f.row.lease, counted: f.counted, delayMs: f.delayMs, error: f.error })),
        this.retries.maxRetries,
      ),
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

  private afterFailuresMarked(failed: PendingMark['failed'], updated: readonly RecordedOutboxFailure[]): void {
    const byId = new Map(failed.map((f) => [f.row.id, f]));
    for (const row of updated) {
      const f = byId.get(row.id);
      if (!f) continue;
      if (row.dead) {
        this.metrics.outboxDeadTotal.inc();
        this.log.error({ outboxId: row.id, retryCount: row.retryCount, err: f.error }, 'outbox row is dead: retries exhausted, it will not be published');
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
        const n = await this.store.prune(this.opts.pruneAfterMs, this.opts.pruneBatchSize);
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
  for (const key of ['pruneAfterMs', 'publishTimeoutMs', 'remoteWakeDelayMs', 'markDelayMs'] as const) {
    if (!Number.isFinite(o[key]) || o[key] < 0) throw new RangeError(`OutboxRelay: ${key} must be a number ≥ 0, got ${o[key]}`);
  }
  if (typeof o.backoff !== 'function') throw new TypeError('OutboxRelay: backoff must be a function');
}

function errorText(err: unknown): string {
  const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return text.length > MAX_ERROR_TEXT ? `${text.slice(0, MAX_ERROR_TEXT)}…` : text;
}

function countRows(mark: PendingMark): number {
  return mark.published.length + mark.failed.length;
}
