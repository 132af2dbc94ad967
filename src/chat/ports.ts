/**
 * The ports of the chat core. Adapters (store/, bus/, queue/, profiles/) implement them; chat/ talks
 * to the world only through them, and so do the outbox relay (OutboxStore, EventBus) and the
 * webhook dispatcher (WebhookStore). Each doc comment is the contract that the port's shared contract test
 * suite checks against every implementation.
 */
import type { Caller } from './caller.js';
import type { ChatEvent } from './chat-events.js';

/** A person's profile for one intent, as the profile directory knows it. */
export interface Profile {
  readonly id: string;
  readonly email: string;
  readonly displayName: string;
}

/**
 * Resolves (email, intent) to a profile.
 *
 * - `resolve` returns the same profile id for the same (email, intent) every time; email matching
 *   is case-insensitive. The local directory creates the profile on first use (display name from
 *   `hint.displayName`, else the email); a remote directory throws `ChatError('PROFILE_NOT_FOUND')`
 *   when the service says there is none.
 * - When the directory cannot answer (service down, circuit open) and has nothing cached, it throws
 *   `ChatError('PROFILE_SERVICE_UNAVAILABLE')` promptly; it never hangs.
 * - `byId` returns a profile previously seen by `resolve` (or stored), or undefined.
 */
export interface ProfileDirectory {
  resolve(email: string, intent: string, hint?: { displayName?: string }): Promise<Profile>;
  byId(profileId: string): Promise<Profile | undefined>;
}

/** A published event as one bus delivery: the event and the users it is for. */
export interface BusEnvelope {
  /** Lower-cased emails of the users this event must reach (usually both participants). */
  readonly recipients: readonly string[];
  readonly event: ChatEvent;
  /** The W3C trace context of the request that caused the event (`traceparent`), when traced. */
  readonly trace?: Readonly<Record<string, string>>;
}

export interface PublishBatchOptions {
  /** The events were delivered on this instance already: skip it. */
  readonly deliveredHere?: boolean;
}

/**
 * Receives bus deliveries on this instance. Must not throw; errors are its own to log. Must not
 * change the envelope: every handler gets the same object, and a local delivery's is the caller's.
 */
export type BusHandler = (envelope: BusEnvelope) => void;

/**
 * Carries events between instances.
 *
 * - `publish` resolves only once the bus has accepted the event durably enough to deliver it to
 *   every instance that is interested at that moment (RabbitMQ: publisher confirm). It rejects
 *   when the bus cannot take it; the caller (the outbox relay) retries.
 * - `publishBatch` is `publish` for several events at once, carried as few bus messages as the
 *   implementation can (RabbitMQ: one message per chunk, routed once to each interested instance),
 *   so the broker's cost is per batch, not per event. It resolves when every event is accepted; on
 *   rejection any of them may still arrive, and the caller retries them all (at-least-once). Each
 *   receiving instance is handed only the events one of its interested users is a recipient of.
 *   With `deliveredHere`, the caller has already handed the events to this instance's handlers
 *   (`deliverLocally`, right after the commit): the publishing instance does not get them again.
 * - An instance receives an event iff at least one of its recipients is in its interest set
 *   (`addInterest` called more often than `removeInterest` for that user) when the event is
 *   routed. Interest is reference-counted; implementations may keep a binding for a linger period
 *   after the count drops to zero. Events for users nobody is interested in are dropped.
 * - Delivery is at-least-once per interested instance and each instance gets an event once per
 *   publish even when several of its recipients are local. No ordering across publishes is promised
 *   (clients order by seq).
 * - `onEvent` handlers are called for every received envelope; `start` must be called before
 *   `publish`; `stop` releases everything and is idempotent.
 * - `deliverLocally` hands an envelope to this instance's own handlers only, without the broker,
 *   on a later turn of the event loop (never inside the call), in the order of the calls: what the
 *   writing instance does right after a commit, and what a caller does when `publish` failed, so
 *   users connected here get the event live also while the broker is away (other instances get it
 *   when a later publish succeeds).
 * - `addInterest` while the broker is unreachable holds the interest and resolves: the binding is
 *   made when the connection is back, before consuming resumes. Events published meanwhile could
 *   not reach the broker anyway; local ones arrive through `deliverLocally`.
 */
export interface EventBus {
  start(): Promise<void>;
  stop(): Promise<void>;
  publish(envelope: BusEnvelope): Promise<void>;
  publishBatch(envelopes: readonly BusEnvelope[], options?: PublishBatchOptions): Promise<void>;
  deliverLocally(envelope: BusEnvelope): void;
  onEvent(handler: BusHandler): void;
  addInterest(userEmail: string): Promise<void>;
  removeInterest(userEmail: string): void;
  /** True while the bus is connected and able to publish. */
  isHealthy(): boolean;
}

/**
 * The outbox rows one commit wrote, as the store hands them to the local relay so it can publish
 * them without claiming them. `lease` is what the rows are held by (the same for every row of the
 * commit), in the form `OutboxStore.claim` returns and `markFailed` compares.
 */
export interface WrittenOutbox {
  /** True when the rows were written leased to this instance; false: they are due for any relay. */
  readonly leased: boolean;
  readonly lease: string;
  readonly rows: ReadonlyArray<{ id: string; payload: BusEnvelope; createdAt: Date }>;
}

/** An outbox row a relay holds under a lease: claimed by it, or written leased to its instance. */
export interface LeasedOutboxRow {
  readonly id: string;
  /** As stored; rows written by another version may not have the envelope's shape, so check it. */
  readonly payload: BusEnvelope;
  readonly createdAt: Date;
  /** Counted failures so far. */
  readonly retryCount: number;
  /** What the row is held by: opaque, compared exactly. */
  readonly lease: string;
}

/** A failed publish of one leased row, as the relay records it. */
export interface OutboxFailure {
  readonly id: string;
  /** The lease the relay held the row by when it tried. */
  readonly lease: string;
  /** Whether this failure counts against the row's retries (not when the bus, not the row, failed). */
  readonly counted: boolean;
  /** The row is due again this long from now. */
  readonly delayMs: number;
  readonly error: string;
}

/** A row `markFailed` updated: its retry count now, and whether that made it dead. */
export interface RecordedOutboxFailure {
  readonly id: string;
  readonly retryCount: number;
  readonly dead: boolean;
}

/** A dead outbox row, as operators see it (`GET /admin/outbox/dead`). */
export interface DeadOutboxRow {
  readonly id: string;
  readonly createdAt: Date;
  readonly retryCount: number;
  readonly lastError: string | null;
  /** The event's type and session, when the payload has them. */
  readonly eventType: string | null;
  readonly sessionId: string | null;
}

/**
 * Why the store wakes a relay: another named instance committed rows, or an unnamed writer did (or
 * notifications may have been missed, say while reconnecting): look at once.
 */
export type OutboxWake = 'other-instance' | 'unknown';

/**
 * The outbox table as the relay works it: the rows the MessageStore writes with each event, each
 * published at least once, then pruned.
 *
 * - A row is due when it is neither processed nor dead and its due time has come, by the store's
 *   own clock (the database's), never the caller's. Writers decide a new row's due time (now, or
 *   leased to the instance that wrote it, see `WrittenOutbox`).
 * - `claim(batchSize, leaseMs)` takes, atomically, up to `batchSize` due rows, lowest id first,
 *   skipping (never waiting for) rows another transaction has locked, and leases them: none is due
 *   again for `leaseMs`, so concurrent claims never return the same row while its lease holds. The
 *   rows come back sorted by id, all with the same lease.
 * - `markPublished(ids)` marks the rows processed (sent now, not dead) whatever lease holds them now:
 *   they were published. Rows already processed are left as they are.
 * - `markFailed(failures, maxRetries)` records each failure only while the lease it names still
 *   holds (no claim or release since, not processed, not dead): retry count + 1 if counted, due again
 *   after `delayMs`, the error kept, and dead once the retry count reaches `maxRetries`. It returns
 *   the rows it updated; a row missing from the result was someone else's by then and is untouched.
 * - `release(ids)` makes those of the rows not processed and not dead due now, for any relay.
 * - `nextRetryInMs()` is the time until the earliest pending row that has failed before is due
 *   (0 when overdue), or null when none waits.
 * - `prune(olderThanMs, limit)` deletes up to `limit` processed rows published more than
 *   `olderThanMs` ago (skipping locked ones) and returns how many; pending and dead rows stay.
 * - `counts()`: pending rows (not processed, not dead, leased or not) and dead rows.
 * - `listDead(limit, afterId?)` lists up to `limit` dead rows, lowest id first (above `afterId` when
 *   given). `replayDead(id)` makes that row pending again if it is dead: due now, retry count 0, and
 *   every relay woken; it returns false (touching nothing) when no dead row has that id.
 * - `subscribe(handler)` resolves once listening (rejects when it cannot; the caller tries again
 *   later) and calls the handler when rows may have been written by someone else, never for the
 *   commits of this store's own instance (those reach the relay through `WrittenOutbox`). The
 *   returned function stops it. Empty arrays are accepted everywhere and touch nothing.
 */
export interface OutboxStore {
  claim(batchSize: number, leaseMs: number): Promise<LeasedOutboxRow[]>;
  markPublished(ids: readonly string[]): Promise<void>;
  markFailed(failures: readonly OutboxFailure[], maxRetries: number): Promise<RecordedOutboxFailure[]>;
  release(ids: readonly string[]): Promise<void>;
  nextRetryInMs(): Promise<number | null>;
  prune(olderThanMs: number, limit: number): Promise<number>;
  counts(): Promise<{ pending: number; dead: number }>;
  /** Age of the oldest row not yet published (and not dead), by the database's clock; null when none. */
  oldestPendingAgeMs(): Promise<number | null>;
  subscribe(handler: (wake: OutboxWake) => void): Promise<() => Promise<void>>;
  listDead(limit: number, afterId?: string): Promise<DeadOutboxRow[]>;
  replayDead(id: string): Promise<boolean>;
}

/** A send taken in while it could not be stored at once, as the client sent it (checked again when stored). */
export interface QueuedSend {
  readonly caller: Caller;
  readonly request: {
    readonly sessionId: unknown;
    readonly content: unknown;
    readonly clientMessageId: unknown;
    readonly senderEmail?: unknown;
    readonly intent?: unknown;
  };
}

/** What a SendQueue does with the sends it holds. */
export interface SendQueueHandlers {
  /**
   * Stores one queued send. Resolves when the queue may forget it (stored, a repeat, or refused and
   * the sender told). Rejects with a ChatError of status 503 (an outage) to keep it for later; any
   * other rejection counts as a failed attempt.
   */
  store(send: QueuedSend): Promise<void>;
  /** Told once a send has been set aside as dead (attempts exhausted), with the last error. */
  dead(send: QueuedSend, error: string): Promise<void> | void;
}

/** A send set aside as dead, as operators see it (`GET /admin/sends/dead`). */
export interface DeadSendView {
  /** Names it within the dead letters (opaque). */
  readonly id: string;
  readonly senderEmail: string | null;
  readonly sessionId: string | null;
  readonly clientMessageId: string | null;
  /** The last error, as recorded when it was set aside. */
  readonly error: string | null;
  readonly attempts: number | null;
  readonly deadAt: Date | null;
}

/**
 * The durable queue behind the send path: where a send goes that could not be stored when it was
 * accepted (the store unreachable, or an unexpected failure), to be stored once it can be.
 *
 * - `enqueue` resolves once the send will survive a crash of this process (RabbitMQ: routed and
 *   confirmed by the broker); it rejects when the queue cannot take it, and then the caller must
 *   not report the send as accepted. A send may be enqueued twice (a client retry): storing is
 *   idempotent on (sender, clientMessageId).
 * - `consume` registers the handlers, once, before `start`. Sends are handed over in the order they
 *   were enqueued; a session's sends one at a time, each after the previous one of that session is
 *   done, so their seqs follow that order. Sends of different sessions proceed concurrently.
 * - An outage rejection keeps the send, and the sends of its session behind it, and retries it after
 *   a capped backoff for as long as it takes. After `maxAttempts` other failures the send is moved to
 *   the dead letters with its error, `handlers.dead` is told, and its session moves on.
 * - `listDead(limit)` shows up to `limit` dead sends, oldest first, without taking them out.
 *   `replayDead(limit)` moves up to `limit` of them back into the queue, each as a new enqueue (to
 *   be stored, or refused and its sender told, as any queued send), and returns how many it moved;
 *   a dead send is removed only once it is back in the queue.
 * - `isHealthy` says whether `enqueue` can succeed now. `stop` stops consuming (sends in hand are
 *   finished or left to be handed over again) and is idempotent.
 */
export interface SendQueue {
  start(): Promise<void>;
  stop(): Promise<void>;
  enqueue(send: QueuedSend): Promise<void>;
  consume(handlers: SendQueueHandlers): void;
  isHealthy(): boolean;
  /**
   * Sends waiting to be stored, as far as this instance can tell (RabbitMQ: the shared queue's
   * messages not handed to a consumer yet); undefined when it cannot be told now (broker away).
   */
  depth(): Promise<number | undefined>;
  listDead(limit: number): Promise<DeadSendView[]>;
  replayDead(limit: number): Promise<number>;
}

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** One side of a session, as snapshotted on the session row. */
export interface Participant {
  readonly profileId: string;
  readonly email: string;
  readonly displayName: string;
}

/** A session in canonical order: `a.profileId < b.profileId`. */
export interface SessionRecord {
  readonly id: string;
  readonly intent: string;
  readonly a: Participant;
  readonly b: Participant;
  readonly createdAt: Date;
  readonly lastSeq: number;
}

export interface MessageRecord {
  readonly id: string;
  readonly sessionId: string;
  readonly seq: number;
  readonly senderProfileId: string;
  readonly content: string;
  readonly clientMessageId: string;
  readonly sentAt: Date;
  readonly delivered: boolean;
  readonly seen: boolean;
  /** When its sender last edited it; null when never. */
  readonly editedAt: Date | null;
  /** Deleted: a tombstone whose content is "" (erased in the store, not hidden). */
  readonly deleted: boolean;
}

export interface AppendMessage {
  readonly sessionId: string;
  readonly senderProfileId: string;
  readonly content: string;
  readonly clientMessageId: string;
  readonly sentAt: Date;
  /** Builds the outbox event once the message has its id and seq; written in the same transaction. */
  readonly toEvent: (message: MessageRecord) => BusEnvelope;
}

/** An edit or a delete of one message, asked by `requesterProfileId`. */
export interface ChangeMessage {
  readonly sessionId: string;
  readonly messageId: string;
  readonly requesterProfileId: string;
  readonly change: { readonly kind: 'edit'; readonly content: string } | { readonly kind: 'delete' };
  readonly at: Date;
  /** Builds the outbox event from the changed message; written in the same transaction. */
  readonly toEvent: (message: MessageRecord) => BusEnvelope;
}

/**
 * Where a change stands in the order sync returns changes in: the id of the transaction that made
 * it and a number from one sequence, both unsigned 64-bit integers as decimal strings.
 */
export interface ChangeStamp {
  readonly xid: string;
  readonly id: string;
}

/** One change sync returns: a message as it is now, or one side's read mark as it is now. */
export type StoredChange =
  | { readonly kind: 'message'; readonly stamp: ChangeStamp; readonly message: MessageRecord }
  | {
      readonly kind: 'readMark';
      readonly stamp: ChangeStamp;
      readonly sessionId: string;
      readonly readerProfileId: string;
      /** Every message of the other side up to this seq is seen (0: none). */
      readonly seenUpTo: number;
      /** The highest seq of the other side marked delivered (0: none). */
      readonly deliveredUpTo: number;
    };

export interface SessionSummary {
  readonly session: SessionRecord;
  readonly lastMessage: MessageRecord | undefined;
  /** Messages from the other participant the caller has not seen. */
  readonly unreadCount: number;
  /** The caller blocks the session (the other participant may block it too; that is not told). */
  readonly blockedByMe: boolean;
}

/** A stored report, as `report` returns it. */
export interface ReportRecord {
  readonly id: string;
  readonly sessionId: string;
  readonly reporterProfileId: string;
  readonly reporterEmail: string;
  readonly messageId: string | null;
  readonly reason: string;
  /** The reported message's content when the report was made; null without a message. */
  readonly content: string | null;
  readonly createdAt: Date;
}

export interface NewReport {
  readonly sessionId: string;
  readonly reporterProfileId: string;
  readonly reporterEmail: string;
  readonly messageId: string | null;
  readonly reason: string;
  /** Builds the outbox event once the report is stored; written in the same transaction. */
  readonly toEvent: (report: ReportRecord) => BusEnvelope;
}

export interface ReceiptUpdate {
  /** Ids and seqs of the messages whose flag changed; empty when nothing changed (then no event). */
  readonly messages: ReadonlyArray<{ id: string; seq: number }>;
}

/**
 * Persistence of sessions, messages and their outbox events. The source of truth.
 *
 * - `upsertSession` creates the session for (a, b, intent) or returns the existing one (also under
 *   concurrent calls), refreshing the participants' email/display-name snapshot.
 * - `appendMessage` stores a message and its outbox event in one transaction. `seq` is gapless per
 *   session (1, 2, 3, …) also under concurrent appends. Repeating (senderProfileId, clientMessageId)
 *   returns the stored message with `created: false` and writes nothing; a repeat whose session or
 *   content differ throws `ChatError('IDEMPOTENCY_KEY_REUSED')` (content is not compared once the
 *   message was edited or deleted: the repeat gets it as it is now). Unknown session →
 *   `ChatError('SESSION_NOT_FOUND')`; store unreachable → `ChatError('STORE_UNAVAILABLE')` with
 *   nothing written. Implementations may group-commit concurrent appends in one transaction.
 *   While either participant blocks the session, a new message (not a repeat) is refused with
 *   `ChatError('PEER_BLOCKED')`, decided in the append's own transaction, so a block committed by
 *   any instance refuses every append that commits after it (docs/adr/0016).
 * - `setBlocked` records (or lifts) the block of one participant; idempotent. Unknown session →
 *   `SESSION_NOT_FOUND`. `blockers` returns the profile ids of the participants blocking it now.
 * - `report` stores a report, with the content of `messageId` (which must be a message of the
 *   session, else `ChatError('MESSAGE_NOT_FOUND')`) as it is now, and the event `toEvent` builds in
 *   the same transaction.
 * - `listReports(limit, before)`: the most recent reports first, up to `limit`; with `before` (a
 *   report id), those made before that one (an unknown id: none).
 * - `unreadTotals(email)`: across every session of `email`, the messages from the other participant
 *   it has not seen, and how many sessions have any. A deleted message is not unread (here, in
 *   `unseen` and in `listSessions`' counts): there is nothing left to read.
 * - `history` returns up to `limit` messages ordered by seq descending: with `beforeSeq`, those just
 *   below it; with `afterSeq`, the `limit` lowest above it (still returned newest first).
 * - `markSeen` sets seen (and delivered) on the other participant's messages with seq ≤ upToSeq;
 *   `markDelivered` sets delivered on the listed messages of the other participant. When any
 *   flag changed, the event `toEvent` builds is written in the same transaction, and the reader's
 *   read mark (seen / delivered up to) is raised and re-stamped for sync.
 * - `changeMessage` edits (new content, `editedAt` = at) or deletes (content erased to "",
 *   `deleted`) one message in place, keeping id and seq, and writes the event `toEvent` builds in
 *   the same transaction, re-stamping the message for sync. A message id not in that session →
 *   `ChatError('MESSAGE_NOT_FOUND')`; a requester who is not its sender →
 *   `ChatError('NOT_MESSAGE_SENDER')`; editing a deleted message → `ChatError('MESSAGE_DELETED')`.
 *   Deleting a deleted message returns the tombstone with `changed: false` and writes nothing.
 * - `changesSince(email, after, limit)` returns, oldest first by stamp, up to `limit` changes of
 *   the sessions `email` takes part in whose stamp is above `after`: each message created or
 *   changed (as it is now, once even when it changed several times) and each read mark raised.
 *   It never returns a change while a transaction that could still commit one below it is
 *   running, so a later call from the last returned stamp never skips one (at least once:
 *   a change may come again). `horizon` is a stamp a caller who got fewer than `limit` changes may
 *   continue from instead (everything of theirs below it was returned).
 * - `changeHorizon()` is that horizon now: the starting point of a sync ("from now on").
 */
export interface MessageStore {
  upsertSession(input: { a: Participant; b: Participant; intent: string }): Promise<SessionRecord>;
  getSession(sessionId: string): Promise<SessionRecord | undefined>;
  appendMessage(cmd: AppendMessage): Promise<{ message: MessageRecord; created: boolean }>;
  setBlocked(sessionId: string, blockerProfileId: string, blocked: boolean): Promise<void>;
  blockers(sessionId: string): Promise<string[]>;
  report(input: NewReport): Promise<ReportRecord>;
  listReports(limit: number, before?: string): Promise<ReportRecord[]>;
  unreadTotals(email: string): Promise<{ total: number; sessions: number }>;
  history(sessionId: string, page: { limit: number; beforeSeq?: number; afterSeq?: number }): Promise<MessageRecord[]>;
  unseen(sessionId: string, readerProfileId: string, limit: number): Promise<{ count: number; messages: MessageRecord[] }>;
  markSeen(
    sessionId: string,
    readerProfileId: string,
    upToSeq: number,
    toEvent: (update: ReceiptUpdate) => BusEnvelope,
  ): Promise<ReceiptUpdate>;
  markDelivered(
    sessionId: string,
    readerProfileId: string,
    messageIds: readonly string[],
    toEvent: (update: ReceiptUpdate) => BusEnvelope,
  ): Promise<ReceiptUpdate>;
  listSessions(email: string, limit: number): Promise<SessionSummary[]>;
  changeMessage(cmd: ChangeMessage): Promise<{ message: MessageRecord; changed: boolean }>;
  changesSince(email: string, after: ChangeStamp, limit: number): Promise<{ changes: StoredChange[]; horizon: ChangeStamp }>;
  changeHorizon(): Promise<ChangeStamp>;
}

/** A webhook row as a dispatcher holds it under a lease. */
export interface LeasedWebhookRow {
  readonly id: string;
  /** The id receivers de-duplicate by: the same on every attempt. */
  readonly eventId: string;
  readonly sessionId: string;
  /** The webhook type (`message.created`, …) the row was written as. */
  readonly type: string;
  /** The chat event's envelope as stored; rows written by another version may differ, so check it. */
  readonly payload: BusEnvelope;
  readonly createdAt: Date;
  /** Failed attempts so far. */
  readonly attempts: number;
  /** The claim that holds the row: opaque, compared exactly. */
  readonly lease: string;
}

/** A failed delivery of one leased row, as the dispatcher records it. */
export interface WebhookFailure {
  readonly id: string;
  readonly lease: string;
  /** Due again this long from now, unless this failure makes it dead. */
  readonly delayMs: number;
  readonly error: string;
}

/**
 * The webhook outbox as dispatchers work it: rows the MessageStore writes in the same transaction as
 * the chat event they announce (only while webhooks are configured), each POSTed at least once, in
 * id order per session.
 *
 * - A row is pending while neither delivered nor dead. It is claimable when it is pending, its due
 *   time has come (the database's clock) and no row of its session with a lower id is pending:
 *   so a session's rows go one at a time, a later one never before an earlier one was delivered or
 *   died, and a claimed row blocks its session until it is settled.
 * - `claim(limit, leaseMs)` takes, atomically, up to `limit` claimable rows, lowest id first,
 *   skipping (never waiting for) rows another transaction has locked, so concurrent claims never
 *   return the same row; each is not due again for `leaseMs` (a dispatcher that dies holding it
 *   lets it be claimed again then). Rows come back sorted by id, at most one per session.
 * - `markDelivered(ids)` marks pending rows delivered, whatever lease holds them now.
 * - `markFailed(failures, maxAttempts)` records each failure only while the lease it names still
 *   holds: attempts + 1, due again after `delayMs`, the error kept, dead once attempts reach
 *   `maxAttempts`. Returns the rows it updated with their attempts and whether they died.
 * - `release(rows)` makes each row due now, without counting an attempt, while the lease it names
 *   still holds (a dispatcher stopping with requests unanswered hands them on at once).
 * - `counts()`: pending and dead rows. `prune(olderThanMs, limit)` deletes up to `limit` rows
 *   delivered more than `olderThanMs` ago; pending and dead rows stay.
 * Empty arrays are accepted everywhere and touch nothing.
 */
export interface WebhookStore {
  claim(limit: number, leaseMs: number): Promise<LeasedWebhookRow[]>;
  markDelivered(ids: readonly string[]): Promise<void>;
  markFailed(failures: readonly WebhookFailure[], maxAttempts: number): Promise<Array<{ id: string; attempts: number; dead: boolean }>>;
  release(rows: ReadonlyArray<{ id: string; lease: string }>): Promise<void>;
  counts(): Promise<{ pending: number; dead: number }>;
  prune(olderThanMs: number, limit: number): Promise<number>;
}

/** A user's presence as the cluster knows it. */
export interface PresenceState {
  readonly online: boolean;
  /** When their last connection closed; null while online, and for someone never seen. */
  readonly lastSeenAt: Date | null;
}

/** A user whose presence changed, as a transition reports it. */
export interface PresenceChange {
  readonly email: string;
  readonly online: boolean;
  readonly lastSeenAt: Date | null;
}

/** An instance as its liveness row says, for operators. */
export interface InstanceRecord {
  readonly instanceId: string;
  readonly startedAt: Date;
  readonly aliveAt: Date;
  /** Not alive for `deadAfterMs`: swept, or about to be. */
  readonly alive: boolean;
  readonly connections: number;
  readonly users: number;
}

/**
 * Who is online across the cluster (docs/adr/0018): each instance records its users' online and
 * offline transitions (not each connection) and a liveness heart-beat of its own (one row per
 * instance, not per user). Emails are in comparison form. Times are the database's.
 *
 * - An instance is alive while its last `heartbeat` is younger than `deadAfterMs` (passed to every
 *   call that needs it). Only presence rows of live instances count.
 * - `heartbeat` records the instance alive now with its connection and user counts; `registered` is
 *   true when its row did not exist (first start, or swept as dead while it could not reach the
 *   database: then its users must be recorded online again).
 * - `online(email, instance)` records the user online on that instance (idempotent). `firstOnline` is
 *   true iff no live instance had them online before: the cluster-wide offline→online transition.
 * - `offline(email, instance, at)` removes that record and sets their last-seen time to `at` (never
 *   moving it backwards). `lastOffline` is true iff no live instance has them online after it.
 *   Transitions of one user are serialised, so of two instances going offline at once exactly one
 *   reports `lastOffline`, and of two going online at once at least one reports `firstOnline`.
 * - `sweep(deadAfterMs)` removes instances not alive for `deadAfterMs` and their presence rows
 *   (the users' last-seen time becomes the dead instance's last heart-beat) and returns the users
 *   it left offline everywhere. Concurrent sweeps never sweep one instance twice.
 * - `leave(instance)` is `sweep` for one instance that is stopping, with last-seen = now.
 * - `presenceOf(emails)` returns a state for every email asked (offline, null, when never seen).
 * - `peersOf(email)` lists everyone who shares a session with them, once each, with one such session.
 * - `instances` lists every instance row; `onlineUsers` counts users online on a live instance.
 */
export interface PresenceStore {
  heartbeat(instanceId: string, counts: { connections: number; users: number }): Promise<{ registered: boolean }>;
  online(email: string, instanceId: string, deadAfterMs: number): Promise<{ firstOnline: boolean }>;
  offline(email: string, instanceId: string, at: Date, deadAfterMs: number): Promise<{ lastOffline: boolean; lastSeenAt: Date }>;
  sweep(deadAfterMs: number): Promise<PresenceChange[]>;
  leave(instanceId: string, deadAfterMs: number): Promise<PresenceChange[]>;
  presenceOf(emails: readonly string[], deadAfterMs: number): Promise<Map<string, PresenceState>>;
  peersOf(email: string): Promise<Array<{ email: string; sessionId: string }>>;
  instances(deadAfterMs: number): Promise<InstanceRecord[]>;
  onlineUsers(deadAfterMs: number): Promise<number>;
}
