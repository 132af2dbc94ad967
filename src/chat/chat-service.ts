/**
 * The use cases of the chat: who may do what, and what each action emits. No I/O of its own: it
 * reads and writes through the ports, and transports (HTTP, STOMP) call it with the caller's
 * verified identity.
 */
import type { Caller } from './caller.js';
import { ChatError } from './chat-errors.js';
import { type ChatMessageView, type Destination, type ReportView, sessionTopic } from './chat-events.js';
import { toProblem } from './problem.js';
import type { BusEnvelope, ChangeStamp, Clock, EventBus, MessageRecord, MessageStore, Participant, ProfileDirectory, ReportRecord, SessionRecord } from './ports.js';
import { compareStamps, decodeSyncToken, encodeSyncToken } from './sync-token.js';
import { normalizeEmail, requireContent, requireEmail, requireIntent, requireSeq, requireUuid } from './validation.js';

export interface SendMessageInput {
  sessionId: unknown;
  content: unknown;
  clientMessageId: unknown;
  senderEmail?: unknown;
  intent?: unknown;
}

export interface SessionView {
  sessionId: string;
  intent: string;
  me: ParticipantView;
  peer: ParticipantView;
  createdAt: string;
}

export interface ParticipantView {
  profileId: string;
  email: string;
  displayName: string;
}

export interface HistoryPage {
  sessionId: string;
  messages: ChatMessageView[];
  /** Pass as `before` (paging back) or `after` (catching up) to get the next page; null at the end. */
  nextCursor: number | null;
}

export interface SessionListItem extends SessionView {
  lastSeq: number;
  lastMessage: ChatMessageView | null;
  unreadCount: number;
  blockedByMe: boolean;
}

/** A receipt as sync tells it: how far one side has read (or received) the other's messages. */
export interface SyncReceipt {
  sessionId: string;
  readerEmail: string;
  upToSeq: number;
  status: 'seen' | 'delivered';
}

/**
 * One change sync returns. A message comes as it is now, typed by its state (deleted: 'delete',
 * edited: 'edit', else 'message'), so an edit or delete may be the first a client hears of it.
 */
export type SyncEvent =
  | { type: 'message' | 'edit' | 'delete'; sessionId: string; message: ChatMessageView }
  | { type: 'receipt'; sessionId: string; receipt: SyncReceipt };

export interface SyncPage {
  /** Oldest first. */
  events: SyncEvent[];
  /** The token to pass as `since` next time. */
  next: string;
  /** More changes are waiting: call again with `next` now. */
  hasMore: boolean;
}

const MAX_PAGE = 200;
const MAX_REASON_CHARS = 1000;
export const MAX_SYNC_PAGE = 500;
const SESSION_CACHE_MAX = 10_000;

export interface ChatServiceDeps {
  store: MessageStore;
  profiles: ProfileDirectory;
  /** Carries ephemeral events (typing) that are not worth a database write. */
  bus: EventBus;
  clock: Clock;
  maxContentChars: number;
}

export class ChatService {
  /** Sessions never change participants, so an authorisation check needs the database once per session. */
  private readonly sessions = new Map<string, SessionRecord>();

  constructor(private readonly deps: ChatServiceDeps) {}

  async initSession(caller: Caller, input: { fromEmail?: unknown; toEmail: unknown; intent: unknown }): Promise<SessionView> {
    const from = input.fromEmail === undefined ? caller.email : requireEmail('fromEmail', input.fromEmail);
    assertSameIdentity(caller, from, 'fromEmail');
    const to = requireEmail('toEmail', input.toEmail);
    const intent = requireIntent('intent', input.intent);
    if (to === caller.email) throw new ChatError('SELF_CHAT', 'fromEmail and toEmail must differ');

    const [me, peer] = await Promise.all([
      this.deps.profiles.resolve(caller.email, intent, { displayName: caller.displayName }),
      this.deps.profiles.resolve(to, intent),
    ]);
    if (me.id === peer.id) throw new ChatError('SELF_CHAT', 'both emails resolve to the same profile');
    const mine: Participant = { profileId: me.id, email: normalizeEmail(me.email), displayName: me.displayName };
    const theirs: Participant = { profileId: peer.id, email: normalizeEmail(peer.email), displayName: peer.displayName };
    const [a, b] = mine.profileId < theirs.profileId ? [mine, theirs] : [theirs, mine];
    const session = await this.deps.store.upsertSession({ a, b, intent });
    this.remember(session);
    return sessionView(session, caller.email);
  }

  async sendMessage(caller: Caller, input: SendMessageInput): Promise<{ message: ChatMessageView; created: boolean }> {
    const { session, sessionId, clientMessageId, content } = await this.validateSend(caller, input);
    const { me, peer } = sides(session, caller.email);
    const { message, created } = await this.deps.store.appendMessage({
      sessionId,
      senderProfileId: me.profileId,
      content,
      clientMessageId,
      sentAt: this.deps.clock.now(),
      toEvent: (stored) => messageEnvelope(session, me, peer, stored),
    });
    return { message: messageView(session, message), created };
  }

  /**
   * The checks of sendMessage that need no write: shape, identity, participation. A send taken in
   * through a durable queue is checked here first, so a bad one is refused at once, not later.
   */
  async checkSend(caller: Caller, input: SendMessageInput): Promise<void> {
    await this.validateSend(caller, input);
  }

  private async validateSend(caller: Caller, input: SendMessageInput): Promise<{ session: SessionRecord; sessionId: string; clientMessageId: string; content: string }> {
    const sessionId = requireUuid('sessionId', input.sessionId);
    const clientMessageId = requireUuid('clientMessageId', input.clientMessageId);
    if (input.senderEmail !== undefined && input.senderEmail !== null) assertSameIdentity(caller, requireEmail('senderEmail', input.senderEmail), 'senderEmail');
    const content = requireContent(input.content, this.deps.maxContentChars);
    const session = await this.participantSession(caller, sessionId);
    if (input.intent !== undefined && input.intent !== null && input.intent !== session.intent) {
      throw new ChatError('INTENT_MISMATCH', `intent must be "${session.intent}" for this session`, { field: 'intent' });
    }
    return { session, sessionId, clientMessageId, content };
  }

  /** The envelope that tells a sender about a send that failed after it was queued. */
  sendFailedEnvelope(caller: Caller, input: SendMessageInput, err: ChatError): BusEnvelope {
    const sessionId = typeof input.sessionId === 'string' ? input.sessionId : '';
    const clientMessageId = typeof input.clientMessageId === 'string' ? input.clientMessageId : undefined;
    return {
      recipients: [caller.email],
      event: {
        type: 'error',
        sessionId,
        destinations: [{ user: caller.email, queue: 'error' }],
        error: { ...toProblem(err), ...(clientMessageId ? { clientMessageId } : {}) },
      },
    };
  }

  /** The envelope that acks a repeated send to its sender (a repeat writes no outbox event of its own). */
  repeatAckEnvelope(caller: Caller, message: ChatMessageView): BusEnvelope {
    return {
      recipients: [caller.email],
      event: { type: 'message', sessionId: message.sessionId, destinations: [{ user: caller.email, queue: 'ack' }], message },
    };
  }

  async history(caller: Caller, sessionIdInput: unknown, page: { limit?: number; before?: number; after?: number }): Promise<HistoryPage> {
    const sessionId = requireUuid('sessionId', sessionIdInput);
    const limit = page.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) throw new ChatError('VALIDATION_FAILED', `limit must be 1..${MAX_PAGE}`, { field: 'limit' });
    if (page.before !== undefined && page.after !== undefined) throw new ChatError('VALIDATION_FAILED', 'use either before or after, not both', { field: 'before' });
    const beforeSeq = page.before === undefined ? undefined : requireSeq('before', page.before);
    const afterSeq = page.after === undefined ? undefined : requireSeq('after', page.after);
    const session = await this.participantSession(caller, sessionId);
    // One extra row tells whether another page exists without a count query.
    const rows = await this.deps.store.history(sessionId, { limit: limit + 1, beforeSeq, afterSeq });
    const hasMore = rows.length > limit;
    // For `after` the store returns the lowest seqs above the cursor (newest first), so the extra row
    // to drop is the newest one; for `before` it is the oldest one.
    const pageRows = hasMore ? (afterSeq !== undefined ? rows.slice(1) : rows.slice(0, limit)) : rows;
    let nextCursor: number | null = null;
    if (hasMore && pageRows.length > 0) nextCursor = afterSeq !== undefined ? pageRows[0]!.seq : pageRows.at(-1)!.seq;
    return { sessionId, messages: pageRows.map((m) => messageView(session, m)), nextCursor };
  }

  /**
   * The high-level design's page/size history (page 1 = newest). Seqs are gapless, so a page maps
   * exactly onto a `before` cursor computed from the session's current last seq.
   */
  async historyByPage(caller: Caller, sessionIdInput: unknown, page: number, size: number): Promise<HistoryPage> {
    const sessionId = requireUuid('chatId', sessionIdInput);
    await this.participantSession(caller, sessionId);
    const current = await this.deps.store.getSession(sessionId);
    if (!current) throw new ChatError('SESSION_NOT_FOUND', `session ${sessionId} does not exist`);
    const before = current.lastSeq - (page - 1) * size + 1;
    if (before <= 1) return { sessionId, messages: [], nextCursor: null };
    return this.history(caller, sessionId, { limit: size, before });
  }

  async unread(caller: Caller, sessionIdInput: unknown, query: { readerEmail?: unknown; intent?: unknown }): Promise<{ sessionId: string; count: number; messages: ChatMessageView[] }> {
    const sessionId = requireUuid('sessionId', sessionIdInput);
    if (query.readerEmail !== undefined) assertSameIdentity(caller, requireEmail('readerEmail', query.readerEmail), 'readerEmail');
    const session = await this.participantSession(caller, sessionId);
    if (query.intent !== undefined && query.intent !== session.intent) throw new ChatError('INTENT_MISMATCH', `intent must be "${session.intent}" for this session`, { field: 'intent' });
    const { me } = sides(session, caller.email);
    const { count, messages } = await this.deps.store.unseen(sessionId, me.profileId, MAX_PAGE);
    return { sessionId, count, messages: messages.map((m) => messageView(session, m)) };
  }

  async markSeen(caller: Caller, sessionIdInput: unknown, upToSeqInput: unknown): Promise<{ sessionId: string; upToSeq: number; updated: number }> {
    const sessionId = requireUuid('sessionId', sessionIdInput);
    const upToSeq = requireSeq('upToSeq', upToSeqInput);
    const session = await this.participantSession(caller, sessionId);
    const { me, peer } = sides(session, caller.email);
    const update = await this.deps.store.markSeen(sessionId, me.profileId, upToSeq, (u) => receiptEnvelope(session, me, peer, 'seen', u.messages));
    return { sessionId, upToSeq, updated: update.messages.length };
  }

  /** Called when a recipient's client acknowledges messages it received. */
  async markDelivered(caller: Caller, sessionIdInput: unknown, messageIds: readonly string[]): Promise<number> {
    const sessionId = requireUuid('sessionId', sessionIdInput);
    const ids = messageIds.map((id) => requireUuid('messageId', id));
    const session = await this.participantSession(caller, sessionId);
    const { me, peer } = sides(session, caller.email);
    const update = await this.deps.store.markDelivered(sessionId, me.profileId, ids, (u) => receiptEnvelope(session, me, peer, 'delivered', u.messages));
    return update.messages.length;
  }

  async editMessage(caller: Caller, input: { sessionId: unknown; messageId: unknown; content: unknown }): Promise<ChatMessageView> {
    const sessionId = requireUuid('sessionId', input.sessionId);
    const messageId = requireUuid('messageId', input.messageId);
    const content = requireContent(input.content, this.deps.maxContentChars);
    return this.changeMessage(caller, sessionId, messageId, { kind: 'edit', content });
  }

  /** Deleting a deleted message answers its tombstone again and emits nothing. */
  async deleteMessage(caller: Caller, input: { sessionId: unknown; messageId: unknown }): Promise<ChatMessageView> {
    const sessionId = requireUuid('sessionId', input.sessionId);
    const messageId = requireUuid('messageId', input.messageId);
    return this.changeMessage(caller, sessionId, messageId, { kind: 'delete' });
  }

  private async changeMessage(
    caller: Caller,
    sessionId: string,
    messageId: string,
    change: { kind: 'edit'; content: string } | { kind: 'delete' },
  ): Promise<ChatMessageView> {
    const session = await this.participantSession(caller, sessionId);
    const { me } = sides(session, caller.email);
    const { message } = await this.deps.store.changeMessage({
      sessionId,
      messageId,
      requesterProfileId: me.profileId,
      change,
      at: this.deps.clock.now(),
      toEvent: (changed) => changeEnvelope(session, change.kind, changed),
    });
    return messageView(session, message);
  }

  /**
   * Every change in the caller's sessions after `since` (ADR 0017). Without `since`, no events and
   * a token for "from now on": a client loads history first, then syncs from there.
   */
  async sync(caller: Caller, query: { since?: unknown; limit?: unknown }): Promise<SyncPage> {
    const limit = query.limit ?? MAX_SYNC_PAGE;
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_SYNC_PAGE) {
      throw new ChatError('VALIDATION_FAILED', `limit must be 1..${MAX_SYNC_PAGE}`, { field: 'limit' });
    }
    if (query.since === undefined) return { events: [], next: encodeSyncToken(await this.deps.store.changeHorizon()), hasMore: false };
    const since = decodeSyncToken(query.since);
    // One extra change tells whether another page waits.
    const { changes, horizon } = await this.deps.store.changesSince(caller.email, since, limit + 1);
    const hasMore = changes.length > limit;
    const page = hasMore ? changes.slice(0, limit) : changes;
    const events: SyncEvent[] = [];
    for (const change of page) {
      const session = await this.participantSession(caller, change.kind === 'message' ? change.message.sessionId : change.sessionId);
      if (change.kind === 'message') {
        const message = messageView(session, change.message);
        events.push({ type: message.deleted ? 'delete' : message.editedAt ? 'edit' : 'message', sessionId: session.id, message });
        continue;
      }
      const reader = change.readerProfileId === session.a.profileId ? session.a : session.b;
      const receipt = (status: 'seen' | 'delivered', upToSeq: number): SyncEvent => ({
        type: 'receipt',
        sessionId: session.id,
        receipt: { sessionId: session.id, readerEmail: reader.email, upToSeq, status },
      });
      if (change.deliveredUpTo > change.seenUpTo) events.push(receipt('delivered', change.deliveredUpTo));
      if (change.seenUpTo > 0) events.push(receipt('seen', change.seenUpTo));
    }
    // A full page continues from its last change; a short one skips ahead to the horizon, below
    // which it returned everything of the caller's. Never backwards: the token only moves on.
    const candidates: ChangeStamp[] = [since, ...(hasMore ? [] : [horizon]), ...(page.length > 0 ? [page.at(-1)!.stamp] : [])];
    const next = candidates.reduce((max, stamp) => (compareStamps(stamp, max) > 0 ? stamp : max));
    return { events, next: encodeSyncToken(next), hasMore };
  }

  /** Typing signals are ephemeral: published straight to the bus, never stored, lost if nobody listens. */
  async typing(caller: Caller, sessionIdInput: unknown, typingInput: unknown): Promise<void> {
    const sessionId = requireUuid('sessionId', sessionIdInput);
    if (typeof typingInput !== 'boolean') throw new ChatError('VALIDATION_FAILED', 'typing must be true or false', { field: 'typing' });
    const session = await this.participantSession(caller, sessionId);
    const { me, peer } = sides(session, caller.email);
    // A blocked session carries no typing either way. Read from the store, not the session cache: a
    // block made through another instance must hold here at once. Without the store the block cannot
    // be ruled out, and a typing signal is not worth an error: it is dropped.
    let blockers: string[];
    try {
      blockers = await this.deps.store.blockers(sessionId);
    } catch (err) {
      if (err instanceof ChatError && err.status === 503) return;
      throw err;
    }
    if (blockers.length > 0) return;
    const envelope: BusEnvelope = {
      recipients: [me.email, peer.email],
      event: {
        type: 'typing',
        sessionId,
        destinations: [{ topic: sessionTopic(sessionId) }],
        typing: { sessionId, email: me.email, typing: typingInput },
      },
    };
    try {
      await this.deps.bus.publish(envelope);
    } catch {
      // Ephemeral: without the broker, the participants connected here still see it.
      this.deps.bus.deliverLocally(envelope);
    }
  }

  async listSessions(caller: Caller, limit = MAX_PAGE): Promise<SessionListItem[]> {
    const summaries = await this.deps.store.listSessions(caller.email, limit);
    return summaries.map(({ session, lastMessage, unreadCount, blockedByMe }) => {
      this.remember(session);
      return {
        ...sessionView(session, caller.email),
        lastSeq: session.lastSeq,
        lastMessage: lastMessage ? messageView(session, lastMessage) : null,
        unreadCount,
        blockedByMe,
      };
    });
  }

  /**
   * Blocks (or unblocks) the session for the caller; idempotent. While either participant blocks
   * it, neither can send into it (the store refuses in the send's own transaction) and no typing
   * crosses it; both can still read its history and mark it seen (docs/adr/0016).
   */
  async setBlocked(caller: Caller, sessionIdInput: unknown, blocked: boolean): Promise<{ blocked: boolean }> {
    const sessionId = requireUuid('sessionId', sessionIdInput);
    const session = await this.participantSession(caller, sessionId);
    const { me } = sides(session, caller.email);
    await this.deps.store.setBlocked(sessionId, me.profileId, blocked);
    return { blocked };
  }

  /** Stores a participant's report, with the reported message's content as it is now, and its event for moderation. */
  async report(caller: Caller, sessionIdInput: unknown, input: { messageId?: unknown; reason: unknown }): Promise<{ reportId: string }> {
    const sessionId = requireUuid('sessionId', sessionIdInput);
    const messageId = input.messageId === undefined || input.messageId === null ? null : requireUuid('messageId', input.messageId);
    const reason = requireContent(input.reason, MAX_REASON_CHARS, 'reason');
    const session = await this.participantSession(caller, sessionId);
    const { me } = sides(session, caller.email);
    const report = await this.deps.store.report({
      sessionId,
      reporterProfileId: me.profileId,
      reporterEmail: me.email,
      messageId,
      reason,
      toEvent: (stored) => ({ recipients: [], event: { type: 'report', sessionId, destinations: [], report: reportView(stored) } }),
    });
    return { reportId: report.id };
  }

  /** Messages from others the caller has not seen, over all its sessions, and how many sessions have any. */
  async unreadCount(caller: Caller): Promise<{ total: number; sessions: number }> {
    return this.deps.store.unreadTotals(caller.email);
  }

  /**
   * The session if the caller takes part in it. SESSION_NOT_FOUND and NOT_A_PARTICIPANT are told
   * apart on purpose: ids are random UUIDs, so the difference reveals nothing guessable.
   */
  async participantSession(caller: Caller, sessionId: string): Promise<SessionRecord> {
    let session = this.sessions.get(sessionId);
    if (!session) {
      session = await this.deps.store.getSession(sessionId);
      if (!session) throw new ChatError('SESSION_NOT_FOUND', `session ${sessionId} does not exist`);
      this.remember(session);
    }
    if (session.a.email !== caller.email && session.b.email !== caller.email) {
      throw new ChatError('NOT_A_PARTICIPANT', 'you are not a participant of this session');
    }
    return session;
  }

  private remember(session: SessionRecord): void {
    if (this.sessions.size >= SESSION_CACHE_MAX) {
      const oldest = this.sessions.keys().next().value;
      if (oldest !== undefined) this.sessions.delete(oldest);
    }
    this.sessions.set(session.id, session);
  }
}

function assertSameIdentity(caller: Caller, claimed: string, field: string): void {
  if (normalizeEmail(claimed) !== caller.email) {
    throw new ChatError('IDENTITY_MISMATCH', `${field} must be the authenticated user's email`, { field });
  }
}

function sides(session: SessionRecord, email: string): { me: Participant; peer: Participant } {
  return session.a.email === email ? { me: session.a, peer: session.b } : { me: session.b, peer: session.a };
}

const participantView = (p: Participant): ParticipantView => ({ profileId: p.profileId, email: p.email, displayName: p.displayName });

function sessionView(session: SessionRecord, callerEmail: string): SessionView {
  const { me, peer } = sides(session, callerEmail);
  return { sessionId: session.id, intent: session.intent, me: participantView(me), peer: participantView(peer), createdAt: session.createdAt.toISOString() };
}

function messageView(session: SessionRecord, m: MessageRecord): ChatMessageView {
  const sender = m.senderProfileId === session.a.profileId ? session.a : session.b;
  return {
    messageId: m.id,
    sessionId: m.sessionId,
    seq: m.seq,
    senderId: m.senderProfileId,
    senderEmail: sender.email,
    senderDisplayName: sender.displayName,
    content: m.content,
    clientMessageId: m.clientMessageId,
    sentAt: m.sentAt.toISOString(),
    delivered: m.delivered,
    seen: m.seen,
    editedAt: m.editedAt ? m.editedAt.toISOString() : null,
    deleted: m.deleted,
  };
}

function reportView(r: ReportRecord): ReportView {
  return {
    reportId: r.id,
    sessionId: r.sessionId,
    reporterEmail: r.reporterEmail,
    messageId: r.messageId,
    reason: r.reason,
    content: r.content,
    createdAt: r.createdAt.toISOString(),
  };
}

/** An edit or delete goes to both participants' connections: the topic and each one's messages queue. */
function changeEnvelope(session: SessionRecord, kind: 'edit' | 'delete', m: MessageRecord): BusEnvelope {
  const destinations: Destination[] = [
    { topic: sessionTopic(session.id) },
    { user: session.a.email, queue: 'messages' },
    { user: session.b.email, queue: 'messages' },
  ];
  return { recipients: [session.a.email, session.b.email], event: { type: kind, sessionId: session.id, destinations, message: messageView(session, m) } };
}

function messageEnvelope(session: SessionRecord, sender: Participant, receiver: Participant, m: MessageRecord): BusEnvelope {
  const destinations: Destination[] = [
    { topic: sessionTopic(session.id) },
    { user: receiver.email, queue: 'messages' },
    { user: sender.email, queue: 'ack' },
  ];
  return { recipients: [sender.email, receiver.email], event: { type: 'message', sessionId: session.id, destinations, message: messageView(session, m) } };
}

function receiptEnvelope(
  session: SessionRecord,
  reader: Participant,
  author: Participant,
  status: 'seen' | 'delivered',
  messages: ReadonlyArray<{ id: string; seq: number }>,
): BusEnvelope {
  const upToSeq = messages.reduce((max, m) => Math.max(max, m.seq), 0);
  const destinations: Destination[] = [{ topic: sessionTopic(session.id) }, { user: author.email, queue: 'receipts' }];
  // What one device read, every other device of the reader clears too.
  if (status === 'seen') destinations.push({ user: reader.email, queue: 'receipts' });
  return {
    recipients: [reader.email, author.email],
    event: {
      type: 'receipt',
      sessionId: session.id,
      destinations,
      receipt: { sessionId: session.id, readerEmail: reader.email, upToSeq, status, messageIds: messages.map((m) => m.id) },
    },
  };
}
