/**
 * ChatClient: the chat service's real-time client for browsers and Node (README "Real time",
 * docs/architecture.md). It coordinates three parts and routes the service's frames between them:
 *
 * - `StompLink` (stomp-link.ts): the connection — a fresh token per attempt, reconnects with
 *   backoff, the user queues and open sessions' topics subscribed again on every connection.
 * - `PendingSends` (pending-sends.ts): each send re-SENT with its clientMessageId until the service
 *   acknowledges or refuses it.
 * - `SessionRecovery` (session-recovery.ts): messages per session in seq order, each once, edits
 *   and deletes applied in place, with what the connection missed fetched by one sync sequence
 *   (history for a first start).
 *
 * Lifecycle: `connect()` → connecting → connected ⇄ reconnecting → `close()` → disconnected; three
 * refusals of the token in a row (or an ERROR the service marks `reconnect: false`) end in
 * `disconnected` too. Deliveries on /user/queue/messages are ACKed (client-individual), which marks
 * them delivered.
 */
import type { IMessage } from '@stomp/stompjs';
import { ChatApi, type HistoryQuery } from './chat-api.js';
import { ChatClientError } from './chat-client-error.js';
import type { ChatMessage, HistoryPage, PeerPresence, Presence, Problem, Receipt, SessionInfo, SessionSummary, SyncPage, TypingSignal, UnreadMessages, UnreadTotals } from './chat-types.js';
import { backoffDelay, type BackoffOptions } from './backoff.js';
import { PendingSends, type OutgoingMessage } from './pending-sends.js';
import { SessionRecovery } from './session-recovery.js';
import { StompLink, type ConnectionState, type ConnectionStateDetail, type LinkSubscription } from './stomp-link.js';
import type { ChatTransport, WebSocketFactory } from './stomp-transport.js';
import { TypedEmitter } from './typed-emitter.js';

export type { ConnectionState, ConnectionStateDetail } from './stomp-link.js';
export { newClientMessageId, type OutgoingMessage } from './pending-sends.js';

export interface ChatClientEvents {
  /** A message of a tracked session, in seq order per session, each once (mine included). */
  message: (message: ChatMessage) => void;
  /**
   * A message handed out before was edited or deleted (by its sender, maybe me): the message as it
   * is now, to render in its place (same `messageId` and `seq`); `deleted` is a tombstone.
   */
  change: (message: ChatMessage) => void;
  /** The service stored one of my sends (from this or another of my connections). */
  ack: (message: ChatMessage) => void;
  /**
   * The peer's client received (`delivered`) or read (`seen`) my messages; or I read messages, on
   * this device or another of mine (`readerEmail` is mine): clear what they counted as unread. From
   * a sync, `messageIds` is empty: every message of the other side up to `upToSeq`.
   */
  receipt: (receipt: Receipt) => void;
  /** The peer started or stopped typing in an open session. */
  typing: (signal: TypingSignal) => void;
  /** Someone I share a session with came online or went offline (anywhere in the cluster). */
  presence: (presence: Presence) => void;
  /** A refused send, subscription or frame, a STOMP ERROR, or a failed recovery. */
  error: (error: ChatClientError) => void;
  state: (state: ConnectionState, detail: ConnectionStateDetail) => void;
}

export interface ChatClientOptions {
  /** The service's base URL, e.g. http://localhost:8080 (the page uses its own origin). */
  baseUrl: string;
  /** Called for every connection attempt (and when REST gets a 401); resolve to a JWT. */
  tokenProvider: () => Promise<string>;
  /** Default 'websocket'. */
  transport?: ChatTransport;
  /** For 'websocket' where there is no global WebSocket (Node 20): `(url, protocols) => new WebSocket(url, protocols)` from `ws`. */
  webSocketFactory?: WebSocketFactory;
  fetch?: typeof fetch;
  /** Reconnect backoff; default 500 ms doubling up to 30 s. */
  reconnect?: Partial<BackoffOptions>;
  /** Re-SEND an unacknowledged send after this long on a live connection; default 10 s. */
  resendAfterMs?: number;
  /** Give up on an attempt that has not reached CONNECTED in this long; default 15 s. */
  connectTimeoutMs?: number;
  /** STOMP heart-beats both ways; 0 turns them off; default 10 s. */
  heartbeatMs?: number;
  /** How long a gap in a session's seqs may last before history fills it; default 1 s. */
  gapFillDelayMs?: number;
  /** A sync token kept from an earlier client (`syncToken`): its first connection syncs from there. */
  syncToken?: string;
  /** Consecutive token refusals at CONNECT before giving up; default 3. */
  maxAuthFailures?: number;
  /**
   * How long before the connection's token expires to ask `tokenProvider` for a fresher one and
   * hand it to the open connection (no reconnect); at most a fifth of the token's remaining life.
   * Default 60 s.
   */
  tokenRefreshLeadMs?: number;
  /** STOMP debug lines. */
  debug?: (line: string) => void;
}

const noop = (): void => undefined;

export class ChatClient extends TypedEmitter<ChatClientEvents> {
  /** REST helpers: sessions, history, unread, init. */
  readonly api: ChatApi;
  private readonly chosenTransport: ChatTransport;
  private readonly link: StompLink;
  private readonly sends: PendingSends;
  private readonly recovery: SessionRecovery;
  /** Open sessions: their topics, subscribed on every connection. */
  private readonly topics = new Map<string, LinkSubscription>();
  private closed = false;

  constructor(options: ChatClientOptions) {
    super();
    const transport = options.transport ?? 'websocket';
    if (transport === 'websocket' && !options.webSocketFactory && typeof (globalThis as { WebSocket?: unknown }).WebSocket !== 'function') {
      throw new Error('ChatClient: no global WebSocket here; pass webSocketFactory (e.g. from the ws package) or use a SockJS transport');
    }
    this.chosenTransport = transport;
    const backoff: BackoffOptions = { initialMs: options.reconnect?.initialMs ?? 500, maxMs: options.reconnect?.maxMs ?? 30_000 };
    this.api = new ChatApi({ baseUrl: options.baseUrl, tokenProvider: options.tokenProvider, fetch: options.fetch });

    this.link = new StompLink({
      baseUrl: options.baseUrl,
      // The token of each connection also serves REST, saving a provider call.
      tokenProvider: async () => {
        const token = await options.tokenProvider();
        this.api.useToken(token);
        return token;
      },
      transport,
      webSocketFactory: options.webSocketFactory,
      backoff,
      connectTimeoutMs: options.connectTimeoutMs ?? 15_000,
      heartbeatMs: options.heartbeatMs ?? 10_000,
      maxAuthFailures: options.maxAuthFailures ?? 3,
      tokenRefreshLeadMs: options.tokenRefreshLeadMs ?? 60_000,
      debug: options.debug,
    });
    this.sends = new PendingSends({
      transmit: (request) => this.link.publish('/app/chat.send', request),
      resendAfterMs: options.resendAfterMs ?? 10_000,
    });
    this.recovery = new SessionRecovery({
      history: (sessionId, query) => this.api.history(sessionId, query),
      listSessions: () => this.api.listSessions(),
      arrived: (message) => this.sends.settle(message),
      deliver: (message) => this.emit('message', message),
      changed: (message) => this.emit('change', message),
      sync: (since) => this.api.sync(since),
      syncedReceipt: (receipt) => this.emit('receipt', { ...receipt, messageIds: [] }),
      syncToken: options.syncToken,
      error: (error) => this.emit('error', error),
      gapFillDelayMs: options.gapFillDelayMs ?? 1000,
      retryDelayMs: () => backoffDelay(2, backoff),
    });

    this.link.subscribe('/user/queue/error', (m) => this.onErrorFrame(m));
    this.link.subscribe('/user/queue/ack', (m) => this.onAckFrame(m));
    this.link.subscribe('/user/queue/receipts', (m) => this.onReceiptFrame(m));
    this.link.subscribe('/user/queue/presence', (m) => this.onPresenceFrame(m));
    this.link.subscribe('/user/queue/messages', (m) => this.onDeliveryFrame(m), { ack: 'client-individual' });
    this.link.on('state', (state, detail) => this.emit('state', state, detail));
    this.link.on('error', (error) => this.emit('error', error));
    this.link.on('up', () => {
      this.sends.resume();
      this.recovery.connected();
    });
    this.link.on('down', () => {
      this.sends.pause();
      this.recovery.disconnected();
    });
    this.link.on('tokenRefreshed', (token) => this.api.useToken(token));
    this.link.on('gaveUp', (error) => {
      this.closed = true;
      this.recovery.close();
      this.sends.close(() => error);
    });
  }

  get state(): ConnectionState {
    return this.link.state;
  }

  /** The signed-in user's email, as the service reported it in CONNECTED. */
  get userEmail(): string | undefined {
    return this.link.userName;
  }

  get transport(): ChatTransport {
    return this.chosenTransport;
  }

  /** Where sync stands; keep it (with each session's lastSeq) to start a later client from here. */
  get syncToken(): string | undefined {
    return this.recovery.syncToken;
  }

  /** Sends not yet acknowledged by the service. */
  get pendingSends(): number {
    return this.sends.size;
  }

  /** Starts connecting (and reconnecting) until `close()`. */
  connect(): void {
    if (this.closed) throw new Error('ChatClient: closed; create a new one');
    this.link.start();
  }

  /** Ends the connection, stops reconnecting, and rejects the sends still pending. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.recovery.close();
    this.sends.close(
      ({ clientMessageId, sessionId }) =>
        new ChatClientError('CLIENT_CLOSED', 'the client was closed before the service acknowledged the message', undefined, { clientMessageId, sessionId }),
    );
    await this.link.close();
  }

  // ---- sessions -------------------------------------------------------------------------------

  /**
   * Tracks a session from `lastSeq` (what the application already has): later messages arrive as
   * `message` events and are recovered after a reconnect. Never moves a session backwards.
   */
  trackSession(sessionId: string, lastSeq: number): void {
    this.recovery.track(sessionId, lastSeq);
  }

  /**
   * Opens a session: tracks it (from `lastSeq`, default 0 = its whole history, unless already
   * tracked), subscribes its topic for typing and receipts, and catches up from history. Resolves
   * once caught up (at once when offline: the next connection does it).
   */
  async openSession(sessionId: string, options: { lastSeq?: number } = {}): Promise<void> {
    if (!this.recovery.isTracking(sessionId) || options.lastSeq !== undefined) this.trackSession(sessionId, options.lastSeq ?? 0);
    let topic = this.topics.get(sessionId);
    if (!topic) {
      topic = this.link.subscribe(`/topic/session.${sessionId}`, (m) => this.onTopicFrame(m));
      this.topics.set(sessionId, topic);
    }
    if (!this.link.ready) return;
    await topic.live.catch(noop); // a closed connection: the next one subscribes it again
    await this.recovery.catchUpOrRetry(sessionId);
  }

  /** Stops watching a session's topic; its messages still arrive and are still recovered. */
  closeSession(sessionId: string): void {
    this.topics.get(sessionId)?.unsubscribe();
    this.topics.delete(sessionId);
  }

  /** The highest seq handed out for a session (undefined when not tracked). */
  lastSeq(sessionId: string): number | undefined {
    return this.recovery.lastSeq(sessionId);
  }

  // ---- actions --------------------------------------------------------------------------------

  /**
   * Sends a message with a new clientMessageId, now if connected or on the next connection, and
   * again with the same id until the service acknowledges it.
   */
  send(sessionId: string, content: string): OutgoingMessage {
    return this.sends.add(sessionId, content);
  }

  /** Marks the peer's messages up to `upToSeq` seen (over STOMP, or REST while disconnected). */
  async markSeen(sessionId: string, upToSeq: number): Promise<void> {
    if (this.link.publish('/app/chat.seen', { sessionId, upToSeq })) return;
    await this.api.markSeen(sessionId, upToSeq);
  }

  /** Edits my own message; it is applied here at once (a `change` event) and reaches the peer live. */
  async editMessage(sessionId: string, messageId: string, content: string): Promise<ChatMessage> {
    const message = await this.api.editMessage(sessionId, messageId, content);
    this.recovery.change(message);
    return message;
  }

  /** Deletes my own message (again: the same tombstone); applied here at once, like an edit. */
  async deleteMessage(sessionId: string, messageId: string): Promise<ChatMessage> {
    const message = await this.api.deleteMessage(sessionId, messageId);
    this.recovery.change(message);
    return message;
  }

  /**
   * Catches every session up now with one sync sequence (history on a first start), as a reconnect
   * does; resolves when done.
   */
  sync(): Promise<void> {
    return this.recovery.syncNow();
  }

  /** One raw page of `GET /api/chat/sync` (the client's own token is not moved). */
  syncPage(since?: string, limit?: number): Promise<SyncPage> {
    return this.api.sync(since, limit);
  }

  /** Tells the peer I am (not) typing; dropped while disconnected, as typing is ephemeral. */
  typing(sessionId: string, typing: boolean): void {
    this.link.publish('/app/chat.typing', { sessionId, typing });
  }

  // ---- REST shortcuts -------------------------------------------------------------------------

  initSession(toEmail: string, intent: string): Promise<SessionInfo> {
    return this.api.initSession(toEmail, intent);
  }

  listSessions(): Promise<SessionSummary[]> {
    return this.api.listSessions();
  }

  history(sessionId: string, query: HistoryQuery = {}): Promise<HistoryPage> {
    return this.api.history(sessionId, query);
  }

  unread(sessionId: string): Promise<UnreadMessages> {
    return this.api.unread(sessionId);
  }

  /** Messages from others I have not seen, over all my sessions, and in how many sessions. */
  unreadCount(): Promise<UnreadTotals> {
    return this.api.unreadCount();
  }

  /** Blocks the session: neither side can send into it (PEER_BLOCKED), and the peer's typing stops. Idempotent. */
  block(sessionId: string): Promise<{ blocked: boolean }> {
    return this.api.block(sessionId);
  }

  unblock(sessionId: string): Promise<{ blocked: boolean }> {
    return this.api.unblock(sessionId);
  }

  /** Reports the session, or one of its messages, to moderation. */
  report(sessionId: string, reason: string, messageId?: string): Promise<{ reportId: string }> {
    return this.api.report(sessionId, reason, messageId);
  }

  /**
   * The other participant's presence now (REST); changes arrive as `presence` events. After a
   * reconnect, ask again: changes made while disconnected are not replayed.
   */
  presence(sessionId: string): Promise<PeerPresence> {
    return this.api.presence(sessionId);
  }

  // ---- incoming -------------------------------------------------------------------------------

  private onDeliveryFrame(frame: IMessage): void {
    const message = parseMessage(frame.body);
    if (message) this.take(frame, message);
    try {
      frame.ack(); // marks it delivered and tells the sender; a duplicate is acknowledged too
    } catch {
      // the connection closed: the service will not count it delivered, history still has it
    }
  }

  private onAckFrame(frame: IMessage): void {
    const message = parseMessage(frame.body);
    if (!message) return;
    this.emit('ack', message);
    this.recovery.accept(message);
  }

  private onReceiptFrame(frame: IMessage): void {
    const receipt = parseJson<Receipt>(frame.body);
    if (receipt && typeof receipt.sessionId === 'string') this.emit('receipt', receipt);
  }

  private onPresenceFrame(frame: IMessage): void {
    const presence = parseJson<Presence>(frame.body);
    if (presence && typeof presence.email === 'string' && typeof presence.online === 'boolean') this.emit('presence', presence);
  }

  private onTopicFrame(frame: IMessage): void {
    switch (frame.headers['event-type']) {
      case 'message':
      case 'edit':
      case 'delete': {
        const message = parseMessage(frame.body);
        if (message) this.take(frame, message);
        return;
      }
      case 'typing': {
        const signal = parseJson<TypingSignal>(frame.body);
        if (signal && signal.email !== this.userEmail) this.emit('typing', signal);
        return;
      }
      default:
        // Receipts come on /user/queue/receipts, mine (from any of my devices) included: the topic's
        // copies would only repeat them.
        return;
    }
  }

  private take(frame: IMessage, message: ChatMessage): void {
    const type = frame.headers['event-type'];
    if (type === 'edit' || type === 'delete') this.recovery.change(message);
    else this.recovery.accept(message);
  }

  private onErrorFrame(frame: IMessage): void {
    const problem = parseJson<Problem>(frame.body) ?? {};
    this.emit('error', this.sends.refused(ChatClientError.fromProblem(problem, undefined, undefined)));
  }
}

function parseJson<T>(body: string): T | undefined {
  try {
    const value: unknown = JSON.parse(body);
    return value && typeof value === 'object' ? (value as T) : undefined;
  } catch {
    return undefined;
  }
}

function parseMessage(body: string): ChatMessage | undefined {
  const message = parseJson<ChatMessage>(body);
  return message && typeof message.sessionId === 'string' && Number.isSafeInteger(message.seq) && typeof message.clientMessageId === 'string' ? message : undefined;
}
