/**
 * Session recovery: every message of a tracked session reaches the application once, in seq order,
 * whatever path it took — live deliveries, acks of my own sends, topic copies and history pages all
 * go through one SessionSequencer per session. What live delivery cannot bring is fetched from
 * history (`after=lastSeq`): the sessions that moved while the connection was down, once it is back,
 * and a gap in a session's seqs that lasts `gapFillDelayMs`.
 *
 * A session is tracked from the first message seen, or from `track(id, lastSeq)`. Recovery that
 * fails is reported and tried again later, as long as the connection it started on is still up.
 *
 * Edits and deletes (`change`) of a message already handed out are reported as changes, each state
 * once; of a message not handed out yet, they replace it in the queue, so it is handed out as it is.
 *
 * With a sync token (taken on the first connection, before history is read), a reconnect catches up
 * with one `sync` page sequence for every session, edits and deletes included; history per session
 * is the fallback when there is no token yet or the sync fails.
 *
 * Must never happen: a seq handed out twice or out of order, or two catch-ups of one session at once.
 */
import type { HistoryQuery } from './chat-api.js';
import { ChatClientError } from './chat-client-error.js';
import type { ChatMessage, HistoryPage, SyncPage, SyncReceipt } from './chat-types.js';
import { SessionSequencer } from './session-sequencer.js';

export interface SessionRecoveryOptions {
  history(sessionId: string, query: HistoryQuery): Promise<HistoryPage>;
  /** Each session's latest seq, to skip those that did not move. */
  listSessions(): Promise<ReadonlyArray<{ sessionId: string; lastSeq: number }>>;
  /** Every message taken in, live or from history, before ordering: a copy of my own send settles it. */
  arrived(message: ChatMessage): void;
  /** Messages of a session in seq order, each once. */
  deliver(message: ChatMessage): void;
  /** An edit or delete of a message handed out before: the message as it is now. */
  changed(message: ChatMessage): void;
  /** `GET /api/chat/sync`; absent: recovery reads history only. */
  sync?(since: string | undefined): Promise<SyncPage>;
  /** A receipt a sync brought. */
  syncedReceipt?(receipt: SyncReceipt): void;
  /** Where sync stands to start from (a token kept by the application); default none. */
  syncToken?: string;
  error(error: ChatClientError): void;
  /** How long a gap in a session's seqs may last before history fills it. */
  gapFillDelayMs: number;
  /** How long to wait before trying a failed recovery again. */
  retryDelayMs(): number;
}

interface TrackedSession {
  readonly sequencer: SessionSequencer<ChatMessage>;
  /** The newest state handed out of each message that was edited or deleted. */
  readonly versions: Map<string, number>;
  gapTimer?: ReturnType<typeof setTimeout>;
  catchingUp?: Promise<void>;
  catchUpAgain?: boolean;
}

const HISTORY_PAGE = 200;
const RECOVERY_CONCURRENCY = 4;
const noop = (): void => undefined;

export class SessionRecovery {
  private readonly sessions = new Map<string, TrackedSession>();
  private readonly retryTimers = new Set<ReturnType<typeof setTimeout>>();
  private online = false;
  private closed = false;
  /** Moves whenever the connection comes up or goes down: work begun under another is dropped. */
  private epoch = 0;
  private token: string | undefined;
  private syncing: Promise<void> | undefined;

  constructor(private readonly options: SessionRecoveryOptions) {
    this.token = options.syncToken;
  }

  /** Where sync stands: keep it to start a later client from here. */
  get syncToken(): string | undefined {
    return this.token;
  }

  isTracking(sessionId: string): boolean {
    return this.sessions.has(sessionId);
  }

  /** The highest seq handed out for a session (undefined when not tracked). */
  lastSeq(sessionId: string): number | undefined {
    return this.sessions.get(sessionId)?.sequencer.lastSeq;
  }

  /** Tracks a session from `lastSeq` (what the application already has); never moves it backwards. */
  track(sessionId: string, lastSeq: number): void {
    const session = this.sessions.get(sessionId);
    if (!session) {
      this.sessions.set(sessionId, newSession(Math.max(0, lastSeq)));
      return;
    }
    this.deliver(session.sequencer.advanceTo(lastSeq));
    this.checkGap(sessionId, session);
  }

  /** Every message, from any source, goes through here. */
  accept(message: ChatMessage): void {
    this.options.arrived(message);
    const session = this.sessionOf(message);
    this.deliver(session.sequencer.offer(message));
    this.checkGap(message.sessionId, session);
  }

  /** An edit or delete (live, from sync, or my own): the message as it is now. */
  change(message: ChatMessage): void {
    const session = this.sessionOf(message);
    if (message.seq > session.sequencer.lastSeq) {
      // Not handed out yet: it goes out once, as it is now.
      this.deliver(session.sequencer.offerNewer(message));
      this.checkGap(message.sessionId, session);
      return;
    }
    const version = versionOf(message);
    if (version <= (session.versions.get(message.messageId) ?? 0)) return;
    session.versions.set(message.messageId, version);
    this.options.changed(message);
  }

  /**
   * The connection is up (again): with a sync token, one sync sequence; without one (a first
   * start), a token first, then history after each tracked session that moved.
   */
  connected(): void {
    this.epoch++;
    this.online = true;
    this.clearRetries();
    void this.recover();
  }

  /** Catches up every session with sync now (history when it cannot); resolves when done. */
  async syncNow(): Promise<void> {
    await this.recover();
  }

  disconnected(): void {
    this.epoch++;
    this.online = false;
    this.clearRetries();
  }

  close(): void {
    this.closed = true;
    this.disconnected();
    for (const session of this.sessions.values()) clearTimeout(session.gapTimer);
  }

  /** Catches a session up now; a failure is reported and tried again later on the same connection. */
  async catchUpOrRetry(sessionId: string): Promise<void> {
    const epoch = this.epoch;
    try {
      await this.catchUp(sessionId);
    } catch (err) {
      // Lost with the connection: the next one recovers it. Otherwise say so and try again soon.
      if (epoch !== this.epoch) return;
      this.options.error(asClientError(err, 'RECOVERY_FAILED'));
      this.later(() => void this.catchUp(sessionId).catch(noop));
    }
  }

  private deliver(messages: ChatMessage[]): void {
    for (const message of messages) {
      const version = versionOf(message);
      if (version > 0) this.sessions.get(message.sessionId)?.versions.set(message.messageId, version);
      this.options.deliver(message);
    }
  }

  private sessionOf(message: ChatMessage): TrackedSession {
    let session = this.sessions.get(message.sessionId);
    if (!session) {
      // A session we did not know (a new conversation): start tracking at this message.
      session = newSession(message.seq - 1);
      this.sessions.set(message.sessionId, session);
    }
    return session;
  }

  private recover(): Promise<void> {
    if (this.syncing) return this.syncing;
    const run = async (): Promise<void> => {
      const epoch = this.epoch;
      const sync = this.options.sync;
      if (sync && this.token !== undefined) {
        try {
          await this.syncFrom(sync, epoch);
          return;
        } catch (err) {
          if (epoch !== this.epoch) return;
          const error = asClientError(err, 'SYNC_FAILED');
          this.options.error(error);
          if (error.retryable) {
            // The service or the way to it failed: the same token, a little later.
            this.later(() => void this.recover());
            return;
          }
          // A token the service does not take (or no sync there): start over from history.
          this.token = undefined;
        }
      }
      if (sync && this.token === undefined) {
        // Taken before history is read, so nothing that happens meanwhile falls between the two.
        try {
          const start = await sync(undefined);
          if (epoch === this.epoch) this.token = start.next;
        } catch {
          // No sync here: history alone, as before.
        }
      }
      if (epoch === this.epoch) await this.recoverAll();
    };
    this.syncing = run().finally(() => {
      this.syncing = undefined;
    });
    return this.syncing;
  }

  /** One page sequence from the token; the token moves only past pages applied. */
  private async syncFrom(sync: (since: string | undefined) => Promise<SyncPage>, epoch: number): Promise<void> {
    for (;;) {
      const page = await sync(this.token);
      if (epoch !== this.epoch || this.closed) return;
      for (const event of page.events) {
        if (event.type === 'message') this.accept(event.message);
        else if (event.type === 'receipt') this.options.syncedReceipt?.(event.receipt);
        else this.change(event.message);
      }
      this.token = page.next;
      if (!page.hasMore) return;
    }
  }

  /** A gap that lasts is filled from history: the missing message may never come live. */
  private checkGap(sessionId: string, session: TrackedSession): void {
    if (!session.sequencer.hasGap) {
      clearTimeout(session.gapTimer);
      session.gapTimer = undefined;
      return;
    }
    if (session.gapTimer || this.closed) return;
    session.gapTimer = setTimeout(() => {
      session.gapTimer = undefined;
      if (session.sequencer.hasGap && this.online) this.catchUp(sessionId).catch((err: unknown) => this.options.error(asClientError(err, 'RECOVERY_FAILED')));
    }, this.options.gapFillDelayMs);
  }

  private async recoverAll(): Promise<void> {
    const epoch = this.epoch;
    if (this.sessions.size === 0) return;
    let latest: Map<string, number> | undefined;
    try {
      latest = new Map((await this.options.listSessions()).map((s) => [s.sessionId, s.lastSeq]));
    } catch {
      latest = undefined; // then look at every tracked session
    }
    const queue = [...this.sessions]
      .filter(([id, s]) => {
        const last = latest?.get(id);
        return last === undefined || last > s.sequencer.lastSeq || s.sequencer.hasGap;
      })
      .map(([id]) => id);
    let failed: unknown;
    const worker = async (): Promise<void> => {
      for (let id = queue.shift(); id !== undefined && epoch === this.epoch; id = queue.shift()) {
        try {
          await this.catchUp(id);
        } catch (err) {
          failed = err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(RECOVERY_CONCURRENCY, queue.length) }, worker));
    if (failed !== undefined && epoch === this.epoch) {
      this.options.error(asClientError(failed, 'RECOVERY_FAILED'));
      this.later(() => void this.recoverAll());
    }
  }

  /** Fetches history after the session's last seq until the end; one run per session at a time. */
  private catchUp(sessionId: string): Promise<void> {
    const session = this.sessions.get(sessionId);
    if (!session) return Promise.resolve();
    if (session.catchingUp) {
      session.catchUpAgain = true;
      return session.catchingUp;
    }
    const run = async (): Promise<void> => {
      try {
        do {
          session.catchUpAgain = false;
          let after: number | null = session.sequencer.lastSeq;
          while (after !== null && !this.closed) {
            const page = await this.options.history(sessionId, { after, limit: HISTORY_PAGE });
            for (const message of [...page.messages].sort((a, b) => a.seq - b.seq)) this.accept(message);
            after = page.nextCursor;
          }
        } while (session.catchUpAgain && !this.closed);
      } finally {
        session.catchingUp = undefined;
      }
    };
    session.catchingUp = run();
    return session.catchingUp;
  }

  /** Runs `task` after the retry delay if the connection is still the one it was scheduled on. */
  private later(task: () => void): void {
    const epoch = this.epoch;
    const timer = setTimeout(() => {
      this.retryTimers.delete(timer);
      if (epoch === this.epoch) task();
    }, this.options.retryDelayMs());
    this.retryTimers.add(timer);
  }

  private clearRetries(): void {
    for (const timer of this.retryTimers) clearTimeout(timer);
    this.retryTimers.clear();
  }
}

function asClientError(err: unknown, code: string): ChatClientError {
  if (err instanceof ChatClientError) return err;
  return new ChatClientError(code, err instanceof Error ? err.message : String(err));
}

function newSession(lastSeq: number): TrackedSession {
  return { sequencer: new SessionSequencer<ChatMessage>(lastSeq), versions: new Map() };
}

/** Orders a message's states: untouched, then each edit by time, then deleted (final). */
function versionOf(message: ChatMessage): number {
  if (message.deleted) return Number.MAX_SAFE_INTEGER;
  return message.editedAt ? Date.parse(message.editedAt) || 1 : 0;
}
