/**
 * ChatClient: the chat service's real-time client for browsers and Node, on @stomp/stompjs over a
 * raw WebSocket or SockJS (README "Real time", docs/architecture.md).
 *
 * Lifecycle: `connect()` → connecting → connected ⇄ reconnecting → `close()` → disconnected. Each
 * connection attempt asks `tokenProvider` for a token (so an expired one is replaced), opens a new
 * socket, sends it in CONNECT, subscribes the user queues and the open sessions' topics, waits for
 * the RECEIPT that proves those subscriptions are live, then re-sends unacknowledged sends and
 * recovers from history what the gap between connections hid. A lost connection is retried with
 * exponential backoff and jitter; three refusals of the token in a row end in `disconnected`.
 *
 * Guarantees to the application:
 * - `message` events come per session in `seq` order, each seq once: live deliveries, acks of my
 *   own sends, topic copies and history pages all go through one SessionSequencer per session.
 * - A send is re-SENT with the same clientMessageId until the service acknowledges it; the service
 *   stores a (sender, clientMessageId) once, so a retry never duplicates. A refusal (4xx) rejects it.
 * - Deliveries on /user/queue/messages are ACKed (client-individual), which marks them delivered.
 *
 * Must never happen: a callback from an old connection acting on the new one (every callback checks
 * that its connection is still the current one), or a message handed out twice.
 */
import { Client, type IFrame, type IMessage, type StompSubscription } from '@stomp/stompjs';
import { ChatApi, type HistoryQuery } from './chat-api.js';
import { ChatClientError } from './chat-client-error.js';
import type { ChatMessage, HistoryPage, Problem, Receipt, SessionInfo, SessionSummary, TypingSignal, UnreadMessages } from './chat-types.js';
import { backoffDelay, type BackoffOptions } from './backoff.js';
import { SessionSequencer } from './session-sequencer.js';
import { openStompSocket, type ChatTransport, type WebSocketFactory } from './stomp-transport.js';
import { TypedEmitter } from './typed-emitter.js';

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

export interface ConnectionStateDetail {
  /** Failed attempts since the last successful connection. */
  attempt: number;
  /** When a retry is scheduled: how long until it starts. */
  delayMs?: number;
  /** Why the connection ended or the attempt failed, when known. */
  error?: ChatClientError;
}

export interface ChatClientEvents {
  /** A message of a tracked session, in seq order per session, each once (mine included). */
  message: (message: ChatMessage) => void;
  /** The service stored one of my sends (from this or another of my connections). */
  ack: (message: ChatMessage) => void;
  /** The peer's client received (`delivered`) or read (`seen`) my messages; or I read on another device. */
  receipt: (receipt: Receipt) => void;
  /** The peer started or stopped typing in an open session. */
  typing: (signal: TypingSignal) => void;
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
  /** Consecutive token refusals at CONNECT before giving up; default 3. */
  maxAuthFailures?: number;
  /** STOMP debug lines. */
  debug?: (line: string) => void;
}

/** A send in flight: `acked` resolves with the stored message, or rejects when the service refuses it. */
export interface OutgoingMessage {
  clientMessageId: string;
  sessionId: string;
  content: string;
  acked: Promise<ChatMessage>;
}

interface PendingSend {
  sessionId: string;
  content: string;
  clientMessageId: string;
  attempts: number;
  timer?: ReturnType<typeof setTimeout>;
  resolve(message: ChatMessage): void;
  reject(error: ChatClientError): void;
}

interface TrackedSession {
  sequencer: SessionSequencer<ChatMessage>;
  /** Open: its topic is subscribed (typing, receipts) on every connection. */
  watched: boolean;
  gapTimer?: ReturnType<typeof setTimeout>;
  catchingUp?: Promise<void>;
  catchUpAgain?: boolean;
}

interface Connection {
  readonly stomp: Client;
  ready: boolean;
  readonly topics: Map<string, StompSubscription>;
  /** Cancels what waits on this connection (receipts, retries) when it ends. */
  readonly cleanups: Set<() => void>;
  refusal?: ChatClientError;
}

const HISTORY_PAGE = 200;
const RECOVERY_CONCURRENCY = 4;
const noop = (): void => undefined;

export class ChatClient extends TypedEmitter<ChatClientEvents> {
  /** REST helpers: sessions, history, unread, init. */
  readonly api: ChatApi;
  private readonly options: Required<Pick<ChatClientOptions, 'transport' | 'resendAfterMs' | 'connectTimeoutMs' | 'heartbeatMs' | 'gapFillDelayMs' | 'maxAuthFailures'>> & ChatClientOptions;
  private readonly backoff: BackoffOptions;
  private currentState: ConnectionState = 'idle';
  private conn: Connection | undefined;
  private generation = 0;
  private attempt = 0;
  private authFailures = 0;
  private everConnected = false;
  private closed = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private receiptCounter = 0;
  private email: string | undefined;
  private readonly sessions = new Map<string, TrackedSession>();
  private readonly pending = new Map<string, PendingSend>();

  constructor(options: ChatClientOptions) {
    super();
    this.options = {
      transport: 'websocket',
      resendAfterMs: 10_000,
      connectTimeoutMs: 15_000,
      heartbeatMs: 10_000,
      gapFillDelayMs: 1000,
      maxAuthFailures: 3,
      ...options,
    };
    this.backoff = { initialMs: options.reconnect?.initialMs ?? 500, maxMs: options.reconnect?.maxMs ?? 30_000 };
    if (this.options.transport === 'websocket' && !options.webSocketFactory && typeof (globalThis as { WebSocket?: unknown }).WebSocket !== 'function') {
      throw new Error('ChatClient: no global WebSocket here; pass webSocketFactory (e.g. from the ws package) or use a SockJS transport');
    }
    this.api = new ChatApi({ baseUrl: options.baseUrl, tokenProvider: options.tokenProvider, fetch: options.fetch });
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** The signed-in user's email, as the service reported it in CONNECTED. */
  get userEmail(): string | undefined {
    return this.email;
  }

  get transport(): ChatTransport {
    return this.options.transport;
  }

  /** Sends not yet acknowledged by the service. */
  get pendingSends(): number {
    return this.pending.size;
  }

  /** Starts connecting (and reconnecting) until `close()`. */
  connect(): void {
    if (this.closed) throw new Error('ChatClient: closed; create a new one');
    if (this.currentState !== 'idle') return;
    void this.openConnection();
  }

  /** Ends the connection, stops reconnecting, and rejects the sends still pending. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    clearTimeout(this.retryTimer);
    for (const session of this.sessions.values()) clearTimeout(session.gapTimer);
    for (const send of this.pending.values()) {
      clearTimeout(send.timer);
      send.reject(new ChatClientError('CLIENT_CLOSED', 'the client was closed before the service acknowledged the message', undefined, { clientMessageId: send.clientMessageId, sessionId: send.sessionId }));
    }
    this.pending.clear();
    const conn = this.conn;
    this.conn = undefined;
    if (conn) {
      endConnection(conn);
      await closeStomp(conn.stomp);
    }
    this.setState('disconnected', { attempt: this.attempt });
  }

  // ---- sessions -------------------------------------------------------------------------------

  /**
   * Tracks a session from `lastSeq` (what the application already has): later messages arrive as
   * `message` events and are recovered after a reconnect. Never moves a session backwards.
   */
  trackSession(sessionId: string, lastSeq: number): void {
    const session = this.sessions.get(sessionId);
    if (!session) {
      this.sessions.set(sessionId, { sequencer: new SessionSequencer(Math.max(0, lastSeq)), watched: false });
      return;
    }
    this.deliver(session.sequencer.advanceTo(lastSeq));
    this.checkGap(sessionId, session);
  }

  /**
   * Opens a session: tracks it (from `lastSeq`, default 0 = its whole history, unless already
   * tracked), subscribes its topic for typing and receipts, and catches up from history. Resolves
   * once caught up (at once when offline: the next connection does it).
   */
  async openSession(sessionId: string, options: { lastSeq?: number } = {}): Promise<void> {
    if (!this.sessions.has(sessionId) || options.lastSeq !== undefined) this.trackSession(sessionId, options.lastSeq ?? 0);
    const session = this.sessions.get(sessionId)!;
    session.watched = true;
    const conn = this.conn;
    if (!conn?.ready) return;
    await this.subscribeTopic(conn, sessionId);
    try {
      await this.catchUp(sessionId);
    } catch (err) {
      // Lost with the connection: the next one recovers it. Otherwise say so and try again soon.
      if (conn !== this.conn) return;
      this.emit('error', asClientError(err, 'RECOVERY_FAILED'));
      this.later(conn, backoffDelay(2, this.backoff), () => void this.catchUp(sessionId).catch(noop));
    }
  }

  /** Stops watching a session's topic; its messages still arrive and are still recovered. */
  closeSession(sessionId: string): void {
    const session = this.sessions.get(sessionId);
    if (session) session.watched = false;
    const sub = this.conn?.topics.get(sessionId);
    if (!sub) return;
    this.conn!.topics.delete(sessionId);
    try {
      sub.unsubscribe();
    } catch {
      // the connection is gone, and the subscription with it
    }
  }

  /** The highest seq handed out for a session (undefined when not tracked). */
  lastSeq(sessionId: string): number | undefined {
    return this.sessions.get(sessionId)?.sequencer.lastSeq;
  }

  // ---- actions --------------------------------------------------------------------------------

  /**
   * Sends a message with a new clientMessageId, now if connected or on the next connection, and
   * again with the same id until the service acknowledges it.
   */
  send(sessionId: string, content: string): OutgoingMessage {
    const clientMessageId = newClientMessageId();
    let resolve!: (message: ChatMessage) => void;
    let reject!: (error: ChatClientError) => void;
    const acked = new Promise<ChatMessage>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    acked.catch(noop); // the application may ignore the outcome; errors are also emitted
    if (this.closed) {
      reject(new ChatClientError('CLIENT_CLOSED', 'the client is closed', undefined, { clientMessageId, sessionId }));
      return { clientMessageId, sessionId, content, acked };
    }
    const send: PendingSend = { sessionId, content, clientMessageId, attempts: 0, resolve, reject };
    this.pending.set(clientMessageId, send);
    if (this.conn?.ready) this.transmit(this.conn, send);
    return { clientMessageId, sessionId, content, acked };
  }

  /** Marks the peer's messages up to `upToSeq` seen (over STOMP, or REST while disconnected). */
  async markSeen(sessionId: string, upToSeq: number): Promise<void> {
    const conn = this.conn;
    if (conn?.ready && this.publish(conn, '/app/chat.seen', { sessionId, upToSeq })) return;
    await this.api.markSeen(sessionId, upToSeq);
  }

  /** Tells the peer I am (not) typing; dropped while disconnected, as typing is ephemeral. */
  typing(sessionId: string, typing: boolean): void {
    const conn = this.conn;
    if (conn?.ready) this.publish(conn, '/app/chat.typing', { sessionId, typing });
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

  // ---- connection -----------------------------------------------------------------------------

  private async openConnection(): Promise<void> {
    const generation = ++this.generation;
    this.setState(this.everConnected ? 'reconnecting' : 'connecting', { attempt: this.attempt });
    let token: string;
    try {
      token = await this.options.tokenProvider();
    } catch (err) {
      if (generation !== this.generation) return;
      const error = new ChatClientError('TOKEN_UNAVAILABLE', `could not get a token: ${err instanceof Error ? err.message : String(err)}`);
      this.emit('error', error);
      this.scheduleReconnect(error);
      return;
    }
    if (generation !== this.generation) return;
    this.api.useToken(token);
    const stomp = new Client({
      webSocketFactory: () => openStompSocket(this.options.baseUrl, this.options.transport, this.options.webSocketFactory),
      connectHeaders: { Authorization: `Bearer ${token}` },
      reconnectDelay: 0, // reconnecting is ours: a fresh token and recovery each time
      connectionTimeout: this.options.connectTimeoutMs,
      heartbeatIncoming: this.options.heartbeatMs,
      heartbeatOutgoing: this.options.heartbeatMs,
      discardWebsocketOnCommFailure: true,
      debug: this.options.debug ?? noop,
    });
    const conn: Connection = { stomp, ready: false, topics: new Map(), cleanups: new Set() };
    this.conn = conn;
    stomp.onConnect = (frame) => void this.onConnected(conn, frame);
    stomp.onStompError = (frame) => this.onStompError(conn, frame);
    stomp.onWebSocketClose = () => this.onSocketClosed(conn);
    stomp.activate();
  }

  private async onConnected(conn: Connection, frame: IFrame): Promise<void> {
    if (conn !== this.conn) return;
    this.email = frame.headers['user-name'] ?? this.email;
    try {
      const { stomp } = conn;
      stomp.subscribe('/user/queue/error', (m) => this.onErrorFrame(m));
      stomp.subscribe('/user/queue/ack', (m) => this.onAckFrame(m));
      stomp.subscribe('/user/queue/receipts', (m) => this.onReceiptFrame(m));
      const watched = [...this.sessions].filter(([, s]) => s.watched).map(([id]) => id);
      for (const id of watched) conn.topics.set(id, stomp.subscribe(`/topic/session.${id}`, (m) => this.onTopicFrame(m)));
      // Frames are handled in order, so this RECEIPT proves every subscription above is live.
      await this.withReceipt(conn, (receipt) => stomp.subscribe('/user/queue/messages', (m) => this.onDeliveryFrame(m), { ack: 'client-individual', receipt }));
    } catch {
      if (conn === this.conn) conn.stomp.forceDisconnect();
      return;
    }
    if (conn !== this.conn) return;
    conn.ready = true;
    this.attempt = 0;
    this.authFailures = 0;
    this.everConnected = true;
    this.setState('connected', { attempt: 0 });
    for (const send of this.pending.values()) this.transmit(conn, send);
    void this.recover(conn);
  }

  private onStompError(conn: Connection, frame: IFrame): void {
    if (conn !== this.conn) return;
    // "CODE: detail"; before CONNECTED no version is agreed, so the colon may still arrive escaped as \c.
    const text = (frame.headers.message ?? 'STOMP ERROR').replaceAll('\\c', ':');
    const match = /^([A-Z_]+):\s*(.*)$/s.exec(text);
    const error = new ChatClientError(match?.[1] ?? 'STOMP_ERROR', match?.[2] || text);
    const code = error.code;
    if (!conn.ready && code === 'UNAUTHENTICATED') conn.refusal = error;
    this.emit('error', error);
  }

  private onSocketClosed(conn: Connection): void {
    if (conn !== this.conn) return;
    this.conn = undefined;
    endConnection(conn);
    void closeStomp(conn.stomp);
    for (const send of this.pending.values()) clearTimeout(send.timer);
    if (this.closed) return;
    if (conn.refusal && ++this.authFailures >= this.options.maxAuthFailures) {
      this.closed = true;
      for (const send of this.pending.values()) send.reject(conn.refusal);
      this.pending.clear();
      this.setState('disconnected', { attempt: this.attempt, error: conn.refusal });
      return;
    }
    this.scheduleReconnect(conn.refusal);
  }

  private scheduleReconnect(error?: ChatClientError): void {
    if (this.closed) return;
    const delayMs = backoffDelay(this.attempt++, this.backoff);
    this.setState(this.everConnected ? 'reconnecting' : 'connecting', { attempt: this.attempt, delayMs, ...(error ? { error } : {}) });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.openConnection(), delayMs);
  }

  private setState(state: ConnectionState, detail: ConnectionStateDetail): void {
    this.currentState = state;
    this.emit('state', state, detail);
  }

  // ---- incoming -------------------------------------------------------------------------------

  private onDeliveryFrame(frame: IMessage): void {
    const message = parseMessage(frame.body);
    if (message) this.accept(message);
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
    this.accept(message);
  }

  private onReceiptFrame(frame: IMessage): void {
    const receipt = parseJson<Receipt>(frame.body);
    if (receipt && typeof receipt.sessionId === 'string') this.emit('receipt', receipt);
  }

  private onTopicFrame(frame: IMessage): void {
    switch (frame.headers['event-type']) {
      case 'message': {
        const message = parseMessage(frame.body);
        if (message) this.accept(message);
        return;
      }
      case 'typing': {
        const signal = parseJson<TypingSignal>(frame.body);
        if (signal && signal.email !== this.email) this.emit('typing', signal);
        return;
      }
      case 'receipt': {
        // The author gets receipts on /user/queue/receipts; from the topic only my own reads count
        // (made on another device), so nothing is reported twice.
        const receipt = parseJson<Receipt>(frame.body);
        if (receipt && receipt.readerEmail === this.email) this.emit('receipt', receipt);
        return;
      }
      default:
        return;
    }
  }

  private onErrorFrame(frame: IMessage): void {
    const problem = parseJson<Problem>(frame.body) ?? {};
    const error = ChatClientError.fromProblem(problem, undefined, undefined);
    const send = error.details.clientMessageId ? this.pending.get(error.details.clientMessageId) : undefined;
    if (send && !error.retryable) {
      clearTimeout(send.timer);
      this.pending.delete(send.clientMessageId);
      send.reject(new ChatClientError(error.code, error.message, error.status, { ...error.details, sessionId: send.sessionId }));
    }
    this.emit('error', send ? new ChatClientError(error.code, error.message, error.status, { ...error.details, sessionId: send.sessionId }) : error);
  }

  /** Every message, from any source, goes through here: settles my send, orders, de-duplicates. */
  private accept(message: ChatMessage): void {
    const send = this.pending.get(message.clientMessageId);
    if (send && send.sessionId === message.sessionId) {
      clearTimeout(send.timer);
      this.pending.delete(message.clientMessageId);
      send.resolve(message);
    }
    let session = this.sessions.get(message.sessionId);
    if (!session) {
      // A session we did not know (a new conversation): start tracking at this message.
      session = { sequencer: new SessionSequencer(message.seq - 1), watched: false };
      this.sessions.set(message.sessionId, session);
    }
    this.deliver(session.sequencer.offer(message));
    this.checkGap(message.sessionId, session);
  }

  private deliver(messages: ChatMessage[]): void {
    for (const message of messages) this.emit('message', message);
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
      if (session.sequencer.hasGap && this.conn?.ready) this.catchUp(sessionId).catch((err: unknown) => this.emit('error', asClientError(err, 'RECOVERY_FAILED')));
    }, this.options.gapFillDelayMs);
  }

  // ---- recovery -------------------------------------------------------------------------------

  /** After (re)connecting: pages through history after each tracked session's last seq. */
  private async recover(conn: Connection): Promise<void> {
    if (this.sessions.size === 0) return;
    let latest: Map<string, number> | undefined;
    try {
      latest = new Map((await this.api.listSessions()).map((s) => [s.sessionId, s.lastSeq]));
    } catch {
      latest = undefined; // then look at every tracked session
    }
    const behind = [...this.sessions].filter(([id, s]) => {
      const last = latest?.get(id);
      return last === undefined || last > s.sequencer.lastSeq || s.sequencer.hasGap;
    });
    let failed: unknown;
    const queue = behind.map(([id]) => id);
    const worker = async (): Promise<void> => {
      for (let id = queue.shift(); id !== undefined && conn === this.conn; id = queue.shift()) {
        try {
          await this.catchUp(id);
        } catch (err) {
          failed = err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(RECOVERY_CONCURRENCY, queue.length) }, worker));
    if (failed !== undefined && conn === this.conn) {
      this.emit('error', asClientError(failed, 'RECOVERY_FAILED'));
      this.later(conn, backoffDelay(2, this.backoff), () => void this.recover(conn));
    }
  }

  /** Runs `task` after `delayMs` if `conn` is still the current connection then. */
  private later(conn: Connection, delayMs: number, task: () => void): void {
    const timer = setTimeout(() => {
      conn.cleanups.delete(cancel);
      if (conn === this.conn) task();
    }, delayMs);
    const cancel = (): void => clearTimeout(timer);
    conn.cleanups.add(cancel);
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
            const page: HistoryPage = await this.api.history(sessionId, { after, limit: HISTORY_PAGE });
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

  // ---- outgoing -------------------------------------------------------------------------------

  private transmit(conn: Connection, send: PendingSend): void {
    clearTimeout(send.timer);
    if (!this.publish(conn, '/app/chat.send', { sessionId: send.sessionId, content: send.content, clientMessageId: send.clientMessageId })) return;
    send.attempts++;
    send.timer = setTimeout(() => {
      if (this.pending.get(send.clientMessageId) === send && conn === this.conn && conn.ready) this.transmit(conn, send);
    }, this.options.resendAfterMs);
  }

  private publish(conn: Connection, destination: string, body: unknown): boolean {
    try {
      conn.stomp.publish({ destination, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
      return true;
    } catch {
      return false; // the socket just closed; the next connection re-sends what matters
    }
  }

  private async subscribeTopic(conn: Connection, sessionId: string): Promise<void> {
    if (conn.topics.has(sessionId)) return;
    try {
      await this.withReceipt(conn, (receipt) => {
        const sub = conn.stomp.subscribe(`/topic/session.${sessionId}`, (m) => this.onTopicFrame(m), { receipt });
        conn.topics.set(sessionId, sub);
      });
    } catch {
      // a closed connection: the next one subscribes the open sessions again
    }
  }

  /** Runs `frame(receiptId)` and resolves when the service's RECEIPT for it arrives. */
  private withReceipt(conn: Connection, frame: (receipt: string) => void): Promise<void> {
    const receipt = `chat-client-${++this.receiptCounter}`;
    return new Promise<void>((resolve, reject) => {
      const settle = (error?: Error): void => {
        clearTimeout(timer);
        conn.cleanups.delete(cancel);
        if (error) reject(error);
        else resolve();
      };
      const cancel = (): void => settle(new ChatClientError('CONNECTION_LOST', 'the connection closed before the RECEIPT'));
      const timer = setTimeout(() => settle(new ChatClientError('TIMEOUT', 'no RECEIPT from the service')), this.options.connectTimeoutMs);
      conn.cleanups.add(cancel);
      try {
        conn.stomp.watchForReceipt(receipt, () => settle());
        frame(receipt);
      } catch (err) {
        settle(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }
}

/** A UUID v4; crypto.randomUUID exists only in secure contexts, getRandomValues everywhere. */
export function newClientMessageId(): string {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === 'function') return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function endConnection(conn: Connection): void {
  conn.ready = false;
  for (const cleanup of [...conn.cleanups]) cleanup();
  conn.cleanups.clear();
}

async function closeStomp(stomp: Client): Promise<void> {
  // A polite DISCONNECT, but never wait long for a peer that is gone.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const gaveUp = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), 2000)));
  const outcome = await Promise.race([stomp.deactivate().then(() => 'done' as const, () => 'done' as const), gaveUp]);
  clearTimeout(timer);
  if (outcome === 'timeout') await stomp.deactivate({ force: true }).catch(noop);
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

function asClientError(err: unknown, code: string): ChatClientError {
  if (err instanceof ChatClientError) return err;
  return new ChatClientError(code, err instanceof Error ? err.message : String(err));
}
