/**
 * Delivers the webhook outbox to the configured URL: at least once, in order per session, with
 * capped exponential backoff, and dead (kept, counted, logged) after the last attempt.
 *
 * Lifecycle: `start` begins one loop; `wake` (called after local commits) makes it look at once
 * instead of at the next poll; `stop` ends the loop, aborts the requests in flight and releases
 * their rows (due at once for any instance, no attempt counted). Several instances each run one;
 * the store's claims share the work.
 *
 * Invariants: at most `concurrency` rows held (requests in flight, bodies in memory) whatever the
 * backlog or the receiver's state; a session's rows are claimed one at a time by the store, so this
 * loop never holds two of one session; a row is marked delivered only after a 2xx, and a failure is
 * recorded under the lease it was claimed with. The loop has its own database budget (the caller
 * gives it its own pool) and never runs on the chat send or relay path.
 *
 * Must never happen: an unbounded wait on the receiver (every request has a timeout); a crash of the
 * loop on a database or receiver failure (it logs and tries again later); a redirect followed.
 */
import type { LeasedWebhookRow, WebhookStore } from '../chat/ports.js';
import type { AdapterLogger } from '../common/adapter-logger.js';
import { type Backoff, backoffMs } from '../common/backoff.js';
import type { Metrics } from '../observability/metrics.js';
import { buildWebhookBody, type RecipientState, recipientOf, UnusableWebhookRow } from './webhook-payload.js';
import { signedHeaders } from './webhook-signature.js';

/** Whether a user can be reached live right now (a push gateway skips them then). */
export type RecipientOnline = (email: string) => Promise<boolean>;
export type UnreadTotals = (email: string) => Promise<{ total: number; sessions: number }>;

export interface WebhookDispatcherOptions {
  readonly url: string;
  readonly secret: string;
  /** Attempts before a row is dead. */
  readonly maxAttempts: number;
  /** Per request: connect, send and response headers and body. */
  readonly timeoutMs: number;
  /** Rows in flight at once (and in memory). */
  readonly concurrency: number;
  readonly includeContent: boolean;
  readonly backoff: Backoff;
  /** How often to look for rows other instances wrote (local commits wake the loop at once). */
  readonly pollIntervalMs: number;
  /** Delivered rows are deleted after this long. */
  readonly keepDeliveredMs: number;
}

export const DEFAULT_WEBHOOK_TUNING = {
  concurrency: 16,
  backoff: { initialMs: 1_000, maxMs: 5 * 60_000 },
  pollIntervalMs: 1_000,
  keepDeliveredMs: 60 * 60_000,
} as const;

export interface WebhookDispatcherDeps {
  readonly store: WebhookStore;
  readonly recipientOnline: RecipientOnline;
  readonly unreadTotals: UnreadTotals;
  readonly metrics: Metrics;
  readonly logger: AdapterLogger;
  readonly options: WebhookDispatcherOptions;
}

type Outcome = { ok: true } | { ok: false; error: string } | { ok: false; stopped: true } | { ok: false; deferred: unknown };

const PRUNE_EVERY_MS = 60_000;
const PRUNE_LIMIT = 1_000;

export class WebhookDispatcher {
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private woken = false;
  private wakeWaiter: (() => void) | undefined;
  private lastPruneAt = 0;
  /** Aborts the requests in flight when stopping: their rows are released, not failed. */
  private readonly stopping = new AbortController();
  /** Longer than any request can take, so a live dispatcher's row is never claimed by another. */
  private readonly leaseMs: number;
  private readonly target: { url: string; authorization: string | undefined };

  constructor(private readonly deps: WebhookDispatcherDeps) {
    this.leaseMs = deps.options.timeoutMs * 2 + 10_000;
    this.target = withoutCredentials(deps.options.url);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Look for rows now: cheap, synchronous, safe to call on every commit. */
  wake(): void {
    this.woken = true;
    const waiter = this.wakeWaiter;
    this.wakeWaiter = undefined;
    waiter?.();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.stopping.abort();
    this.wake();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { store, logger, options } = this.deps;
    while (this.running) {
      this.woken = false;
      const free = options.concurrency - this.inFlight.size;
      let claimedAll = false;
      if (free > 0) {
        try {
          const rows = await store.claim(free, this.leaseMs);
          for (const row of rows) this.track(this.handle(row));
          claimedAll = rows.length === free;
        } catch (err) {
          logger.warn({ err }, 'claiming webhook rows failed; trying again at the next poll');
        }
      }
      await this.pruneNowAndThen();
      // A full claim may have left more due: go on as soon as a slot frees (handle wakes us).
      if (!this.running) break;
      if (claimedAll && this.inFlight.size < options.concurrency) continue;
      await this.idle(options.pollIntervalMs);
    }
    await Promise.allSettled([...this.inFlight]);
  }

  private track(work: Promise<void>): void {
    const settled = work.finally(() => {
      this.inFlight.delete(settled);
      this.wake();
    });
    this.inFlight.add(settled);
  }

  private idle(ms: number): Promise<void> {
    if (this.woken || !this.running) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakeWaiter = undefined;
        resolve();
      }, ms);
      this.wakeWaiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private async pruneNowAndThen(): Promise<void> {
    const now = Date.now();
    if (now - this.lastPruneAt < PRUNE_EVERY_MS) return;
    this.lastPruneAt = now;
    try {
      await this.deps.store.prune(this.deps.options.keepDeliveredMs, PRUNE_LIMIT);
    } catch (err) {
      this.deps.logger.warn({ err }, 'pruning delivered webhook rows failed');
    }
  }

  /** One row: build, POST, record. Never rejects. */
  private async handle(row: LeasedWebhookRow): Promise<void> {
    const { store, metrics, logger, options } = this.deps;
    const outcome = await this.attempt(row);
    try {
      if ('stopped' in outcome) {
        await store.release([{ id: row.id, lease: row.lease }]);
        return;
      }
      if ('deferred' in outcome) {
        // Our lookup failed, not the receiver: no attempt is counted, the row comes back when its lease ends.
        logger.warn({ err: outcome.deferred, eventId: row.eventId }, 'looking up the recipient for a webhook failed; it is retried after its lease');
        return;
      }
      if (outcome.ok) {
        await store.markDelivered([row.id]);
        metrics.webhookDeliveries.inc({ outcome: 'delivered' });
        metrics.webhookLag.observe(Math.max(0, Date.now() - row.createdAt.getTime()) / 1000);
        return;
      }
      const delayMs = backoffMs(row.attempts + 1, options.backoff);
      const [recorded] = await store.markFailed([{ id: row.id, lease: row.lease, delayMs, error: outcome.error.slice(0, 1000) }], options.maxAttempts);
      if (!recorded) return; // Someone else's by now (our lease ended): they record their own attempt.
      const fields = { eventId: row.eventId, type: row.type, sessionId: row.sessionId, attempts: recorded.attempts, error: outcome.error };
      if (recorded.dead) {
        metrics.webhookDeliveries.inc({ outcome: 'dead' });
        logger.error(fields, 'webhook delivery failed for the last time; the row is kept as dead');
      } else {
        metrics.webhookDeliveries.inc({ outcome: 'retry' });
        logger.warn({ ...fields, retryInMs: delayMs }, 'webhook delivery failed; retrying later');
      }
    } catch (err) {
      // The row stays leased and is tried again once the lease ends: at least once, not lost.
      logger.warn({ err, eventId: row.eventId }, 'recording a webhook delivery failed');
    }
  }

  private async attempt(row: LeasedWebhookRow): Promise<Outcome> {
    const { options } = this.deps;
    let recipient: RecipientState | undefined;
    try {
      recipient = await this.recipientState(row);
    } catch (err) {
      if (err instanceof UnusableWebhookRow) return { ok: false, error: err.message };
      return { ok: false, deferred: err };
    }
    let body: string;
    try {
      body = JSON.stringify(buildWebhookBody(row, options, recipient));
    } catch (err) {
      const reason = err instanceof UnusableWebhookRow ? err.message : `building the body failed: ${(err as Error).message}`;
      return { ok: false, error: reason };
    }
    const timestamp = Math.floor(Date.now() / 1000);
    // A timer of our own rather than AbortSignal.any([AbortSignal.timeout(…), …]): Node may collect
    // a timeout signal held only by a composite one before it fires (nodejs/node#57736), and the
    // request would then hold its slot for as long as the receiver keeps it open.
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new DOMException(`no response within ${options.timeoutMs} ms`, 'TimeoutError')), options.timeoutMs);
    const stop = (): void => abort.abort(this.stopping.signal.reason);
    if (this.stopping.signal.aborted) stop();
    else this.stopping.signal.addEventListener('abort', stop, { once: true });
    try {
      const headers = signedHeaders(options.secret, row.eventId, row.type, timestamp, body);
      if (this.target.authorization) headers.authorization = this.target.authorization;
      const response = await fetch(this.target.url, { method: 'POST', headers, body, redirect: 'manual', signal: abort.signal });
      // Never read: what a receiver answers is not ours to hold in memory.
      await response.body?.cancel().catch(() => undefined);
      if (response.status >= 200 && response.status < 300) return { ok: true };
      return { ok: false, error: `HTTP ${response.status}` };
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      if (this.stopping.signal.aborted) return { ok: false, stopped: true };
      if (e.name === 'TimeoutError') return { ok: false, error: `no response within ${options.timeoutMs} ms` };
      return { ok: false, error: e.cause?.code ? `${e.message} (${e.cause.code})` : e.message };
    } finally {
      clearTimeout(timer);
      this.stopping.signal.removeEventListener('abort', stop);
    }
  }

  private async recipientState(row: LeasedWebhookRow): Promise<RecipientState | undefined> {
    if (row.type !== 'message.created') return undefined;
    const email = recipientOf(row.payload);
    if (!email) return { online: false, unread: { total: 0, sessions: 0 } };
    const [online, unread] = await Promise.all([this.deps.recipientOnline(email), this.deps.unreadTotals(email)]);
    return { online, unread };
  }
}

/**
 * fetch refuses a URL with credentials in it, and receivers behind basic auth are commonly
 * configured that way (`https://user:pass@host/hook`): they go in an Authorization header instead.
 */
export function withoutCredentials(raw: string): { url: string; authorization: string | undefined } {
  const url = new URL(raw);
  if (!url.username && !url.password) return { url: raw, authorization: undefined };
  const user = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  url.username = '';
  url.password = '';
  return { url: url.toString(), authorization: `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}` };
}
