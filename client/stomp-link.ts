/**
 * StompLink: one STOMP session with the service that outlives its sockets, on @stomp/stompjs over a
 * raw WebSocket or SockJS (README "Real time").
 *
 * Lifecycle: `start()` → connecting → connected ⇄ reconnecting → `close()` (or giving up) →
 * disconnected. Each attempt asks `tokenProvider` for a token (so an expired one is replaced), opens
 * a new socket, sends it in CONNECT, makes every standing subscription again and is `connected`
 * (`up`) only once a RECEIPT proves they are live. A lost connection is retried with exponential
 * backoff and jitter; whether a STOMP ERROR ends the link is decided by `stompErrorOutcome` alone.
 * Shortly before the connection's token expires (its `exp`, read without verifying: the service
 * verifies), the link asks `tokenProvider` again and hands a fresher token to the open connection
 * (SEND /app/auth.refresh), so a long-lived connection is not cut at every expiry; when the
 * provider has nothing fresher, the connection ends with TOKEN_EXPIRED and reconnects as before.
 *
 * Must never happen: a callback of an old socket acting on the current one (every callback checks
 * that its attempt is still the current one).
 */
import { Client, type IFrame, type IMessage, type StompHeaders, type StompSubscription } from '@stomp/stompjs';
import { backoffDelay, type BackoffOptions } from './backoff.js';
import { ChatClientError } from './chat-client-error.js';
import { CONNECTION_CODES, isTerminal } from './connection-codes.js';
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

/**
 * What a STOMP ERROR means for the link: `end` it, `reconnect`, or reconnect as a `token-refused`
 * attempt, which counts towards `maxAuthFailures` so a token that will never do is not retried forever.
 */
export type StompErrorOutcome = 'end' | 'reconnect' | 'token-refused';

/**
 * The one place that decides whether a STOMP ERROR is terminal. The service knows best and says so
 * in the `reconnect` header (with the error's `code` header); a service that does not send it gets
 * the old rule: a token refused at CONNECT counts towards `maxAuthFailures`, anything else is retried.
 */
export function stompErrorOutcome(headers: Readonly<Record<string, string | undefined>>, code: string, connected: boolean): StompErrorOutcome {
  // The token provider may hand out a fresh token on the next attempt: a few tries, then the end.
  if (code === 'UNAUTHENTICATED' && !connected) return 'token-refused';
  // The code decides (the catalogue this SDK ships); the header only for codes newer than it.
  if (code in CONNECTION_CODES) return isTerminal(code) ? 'end' : 'reconnect';
  return headers.reconnect?.trim().toLowerCase() === 'false' ? 'end' : 'reconnect';
}

export interface StompLinkOptions {
  baseUrl: string;
  /** Called for every connection attempt; resolve to a JWT. */
  tokenProvider: () => Promise<string>;
  transport: ChatTransport;
  webSocketFactory?: WebSocketFactory;
  backoff: BackoffOptions;
  /** Give up on an attempt (or a RECEIPT) that has not come in this long. */
  connectTimeoutMs: number;
  /** STOMP heart-beats both ways; 0 turns them off. */
  heartbeatMs: number;
  /** Consecutive token refusals at CONNECT before giving up. */
  maxAuthFailures: number;
  /** How long before the token's expiry to refresh it (at most a fifth of its remaining life). */
  tokenRefreshLeadMs: number;
  debug?: (line: string) => void;
}

export interface StompLinkEvents {
  state: (state: ConnectionState, detail: ConnectionStateDetail) => void;
  /** Connected and every standing subscription confirmed: what waited can be sent now. */
  up: () => void;
  /** The connection that was up ended. */
  down: () => void;
  /** A STOMP ERROR frame, or no token to connect with. */
  error: (error: ChatClientError) => void;
  /** The link stopped for good (the service said not to come back, or refused the token too often). */
  gaveUp: (error: ChatClientError) => void;
  /** The open connection took a fresher token (the service answered the refresh). */
  tokenRefreshed: (token: string) => void;
}

/** A subscription the link keeps: made on every connection until unsubscribed. */
export interface LinkSubscription {
  /**
   * Settles once the service confirmed it on the current connection (at once while offline: the
   * next connection makes it); rejects when that connection ends first.
   */
  readonly live: Promise<void>;
  unsubscribe(): void;
}

interface Standing {
  readonly destination: string;
  readonly headers: StompHeaders;
  readonly onMessage: (message: IMessage) => void;
  live: Promise<void>;
}

/** One socket and its STOMP session. */
interface Attempt {
  readonly stomp: Client;
  /** The token the connection is authenticated with now. */
  token: string;
  /** CONNECTED arrived: frames can go out. */
  connected: boolean;
  /** And the standing subscriptions are confirmed. */
  ready: boolean;
  readonly subscriptions: Map<Standing, StompSubscription>;
  /** Cancels what waits on this attempt (receipts) when it ends. */
  readonly cleanups: Set<() => void>;
  error?: { outcome: StompErrorOutcome; error: ChatClientError };
}

const noop = (): void => undefined;

export class StompLink extends TypedEmitter<StompLinkEvents> {
  private currentState: ConnectionState = 'idle';
  private current: Attempt | undefined;
  private readonly standing = new Set<Standing>();
  private generation = 0;
  private attempt = 0;
  private authFailures = 0;
  private everConnected = false;
  private closed = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private receiptCounter = 0;
  private user: string | undefined;

  constructor(private readonly options: StompLinkOptions) {
    super();
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** Connected with every standing subscription live. */
  get ready(): boolean {
    return this.current?.ready === true;
  }

  /** The `user-name` of the last CONNECTED frame. */
  get userName(): string | undefined {
    return this.user;
  }

  /** Starts connecting (and reconnecting) until `close()`; does nothing once started. */
  start(): void {
    if (this.closed || this.currentState !== 'idle') return;
    void this.open();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    clearTimeout(this.retryTimer);
    const attempt = this.current;
    this.current = undefined;
    if (attempt) {
      const wasReady = attempt.ready;
      endAttempt(attempt);
      if (wasReady) this.emit('down');
      await closeStomp(attempt.stomp);
    }
    this.setState('disconnected', { attempt: this.attempt });
  }

  /** SENDs a JSON body; false when not connected (the caller decides whether that matters). */
  publish(destination: string, body: unknown): boolean {
    const attempt = this.current;
    if (!attempt?.ready) return false;
    try {
      attempt.stomp.publish({ destination, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
      return true;
    } catch {
      return false; // the socket just closed
    }
  }

  /** Subscribes now if connected, and again on every later connection, until unsubscribed. */
  subscribe(destination: string, onMessage: (message: IMessage) => void, headers: StompHeaders = {}): LinkSubscription {
    const sub: Standing = { destination, headers, onMessage, live: Promise.resolve() };
    this.standing.add(sub);
    const attempt = this.current;
    if (attempt?.connected) this.setLive(sub, this.withReceipt(attempt, (receipt) => this.place(attempt, sub, receipt)));
    return {
      get live() {
        return sub.live;
      },
      unsubscribe: () => this.unsubscribe(sub),
    };
  }

  private unsubscribe(sub: Standing): void {
    this.standing.delete(sub);
    const attempt = this.current;
    const made = attempt?.subscriptions.get(sub);
    if (!attempt || !made) return;
    attempt.subscriptions.delete(sub);
    try {
      made.unsubscribe();
    } catch {
      // the connection is gone, and the subscription with it
    }
  }

  private place(attempt: Attempt, sub: Standing, receipt?: string): void {
    const onMessage = (message: IMessage): void => {
      if (attempt === this.current) sub.onMessage(message);
    };
    attempt.subscriptions.set(sub, attempt.stomp.subscribe(sub.destination, onMessage, receipt ? { ...sub.headers, receipt } : sub.headers));
  }

  private setLive(sub: Standing, live: Promise<void>): void {
    live.catch(noop); // nobody may be waiting; the next connection subscribes again
    sub.live = live;
  }

  private async open(): Promise<void> {
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
    const { baseUrl, transport, webSocketFactory, connectTimeoutMs, heartbeatMs, debug } = this.options;
    const stomp = new Client({
      webSocketFactory: () => openStompSocket(baseUrl, transport, webSocketFactory),
      connectHeaders: { Authorization: `Bearer ${token}` },
      reconnectDelay: 0, // reconnecting is ours: a fresh token and recovery each time
      connectionTimeout: connectTimeoutMs,
      heartbeatIncoming: heartbeatMs,
      heartbeatOutgoing: heartbeatMs,
      discardWebsocketOnCommFailure: true,
      debug: debug ?? noop,
    });
    const attempt: Attempt = { stomp, token, connected: false, ready: false, subscriptions: new Map(), cleanups: new Set() };
    this.current = attempt;
    stomp.onConnect = (frame) => void this.onConnected(attempt, frame);
    stomp.onStompError = (frame) => this.onStompError(attempt, frame);
    stomp.onWebSocketClose = () => this.onSocketClosed(attempt);
    stomp.activate();
  }

  private async onConnected(attempt: Attempt, frame: IFrame): Promise<void> {
    if (attempt !== this.current) return;
    attempt.connected = true;
    this.user = frame.headers['user-name'] ?? this.user;
    const subs = [...this.standing];
    const last = subs.pop();
    if (last) {
      try {
        for (const sub of subs) this.place(attempt, sub);
        // Frames are handled in order, so the RECEIPT of the last SUBSCRIBE proves them all live.
        const confirmed = this.withReceipt(attempt, (receipt) => this.place(attempt, last, receipt));
        for (const sub of [...subs, last]) this.setLive(sub, confirmed);
        await confirmed;
      } catch {
        if (attempt === this.current) attempt.stomp.forceDisconnect();
        return;
      }
    }
    if (attempt !== this.current) return;
    attempt.ready = true;
    this.attempt = 0;
    this.authFailures = 0;
    this.everConnected = true;
    this.setState('connected', { attempt: 0 });
    this.emit('up');
    this.scheduleTokenRefresh(attempt);
  }

  private scheduleTokenRefresh(attempt: Attempt): void {
    const expiresAt = tokenExpiry(attempt.token);
    if (expiresAt === undefined) return;
    const remaining = expiresAt - Date.now();
    if (remaining <= 0) return;
    const lead = Math.min(this.options.tokenRefreshLeadMs, remaining / 5);
    // setTimeout takes at most ~24.8 days; a token living longer is refreshed on a later connection.
    if (remaining - lead >= 2 ** 31 - 1) return;
    const timer = setTimeout(() => void this.refreshToken(attempt, expiresAt), remaining - lead);
    attempt.cleanups.add(() => clearTimeout(timer));
  }

  private async refreshToken(attempt: Attempt, expiresAt: number): Promise<void> {
    if (attempt !== this.current || !attempt.ready) return;
    let token: string;
    try {
      token = await this.options.tokenProvider();
    } catch {
      return; // the connection ends at expiry and the reconnect asks again
    }
    const fresher = tokenExpiry(token);
    if (attempt !== this.current || fresher === undefined || fresher <= expiresAt) return;
    try {
      await this.withReceipt(attempt, (receipt) =>
        attempt.stomp.publish({ destination: '/app/auth.refresh', headers: { authorization: `Bearer ${token}`, receipt } }),
      );
    } catch {
      return; // the connection closed meanwhile: the next one connects with a fresh token
    }
    if (attempt !== this.current) return;
    attempt.token = token;
    this.emit('tokenRefreshed', token);
    this.scheduleTokenRefresh(attempt);
  }

  private onStompError(attempt: Attempt, frame: IFrame): void {
    if (attempt !== this.current) return;
    const error = errorOfFrame(frame);
    attempt.error = { outcome: stompErrorOutcome(frame.headers, error.code, attempt.ready), error };
    this.emit('error', error);
  }

  private onSocketClosed(attempt: Attempt): void {
    if (attempt !== this.current) return;
    this.current = undefined;
    const wasReady = attempt.ready;
    endAttempt(attempt);
    void closeStomp(attempt.stomp);
    if (wasReady) this.emit('down');
    if (this.closed) return;
    const failure = attempt.error;
    if (failure?.outcome === 'end' || (failure?.outcome === 'token-refused' && ++this.authFailures >= this.options.maxAuthFailures)) {
      this.giveUp(failure.error);
      return;
    }
    // The state says why it reconnects (SERVER_SHUTDOWN, TOKEN_EXPIRED, …) when the server said.
    this.scheduleReconnect(failure?.error);
  }

  private giveUp(error: ChatClientError): void {
    this.closed = true;
    this.emit('gaveUp', error);
    this.setState('disconnected', { attempt: this.attempt, error });
  }

  private scheduleReconnect(error?: ChatClientError): void {
    if (this.closed) return;
    const delayMs = backoffDelay(this.attempt++, this.options.backoff);
    this.setState(this.everConnected ? 'reconnecting' : 'connecting', { attempt: this.attempt, delayMs, ...(error ? { error } : {}) });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.open(), delayMs);
  }

  private setState(state: ConnectionState, detail: ConnectionStateDetail): void {
    this.currentState = state;
    this.emit('state', state, detail);
  }

  /** Runs `frame(receiptId)` and resolves when the service's RECEIPT for it arrives. */
  private withReceipt(attempt: Attempt, frame: (receipt: string) => void): Promise<void> {
    const receipt = `chat-client-${++this.receiptCounter}`;
    return new Promise<void>((resolve, reject) => {
      const settle = (error?: Error): void => {
        clearTimeout(timer);
        attempt.cleanups.delete(cancel);
        if (error) reject(error);
        else resolve();
      };
      const cancel = (): void => settle(new ChatClientError('CONNECTION_LOST', 'the connection closed before the RECEIPT'));
      const timer = setTimeout(() => settle(new ChatClientError('TIMEOUT', 'no RECEIPT from the service')), this.options.connectTimeoutMs);
      attempt.cleanups.add(cancel);
      try {
        attempt.stomp.watchForReceipt(receipt, () => settle());
        frame(receipt);
      } catch (err) {
        settle(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }
}

/** A JWT's `exp` in epoch milliseconds, undefined when it has none or is not a JWT. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (!payload) return undefined;
  try {
    const base64 = payload.replaceAll('-', '+').replaceAll('_', '/');
    const json: unknown = JSON.parse(decodeBase64(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')));
    const exp = (json as { exp?: unknown } | null)?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** UTF-8 text of base64, in browsers and Node alike. */
function decodeBase64(base64: string): string {
  const binary = atob(base64);
  return new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
}

/** The service's `code` header when it sends one, else the code in front of "CODE: detail". */
function errorOfFrame(frame: IFrame): ChatClientError {
  // Before CONNECTED no version is agreed, so the colon may still arrive escaped as \c.
  const text = (frame.headers.message ?? 'STOMP ERROR').replaceAll('\\c', ':');
  const match = /^([A-Z_]+):\s*(.*)$/s.exec(text);
  return new ChatClientError(frame.headers.code || match?.[1] || 'STOMP_ERROR', match?.[2] || text);
}

function endAttempt(attempt: Attempt): void {
  attempt.connected = false;
  attempt.ready = false;
  for (const cleanup of [...attempt.cleanups]) cleanup();
  attempt.cleanups.clear();
}

async function closeStomp(stomp: Client): Promise<void> {
  // A polite DISCONNECT, but never wait long for a peer that is gone.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const gaveUp = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), 2000)));
  const outcome = await Promise.race([stomp.deactivate().then(() => 'done' as const, () => 'done' as const), gaveUp]);
  clearTimeout(timer);
  if (outcome === 'timeout') await stomp.deactivate({ force: true }).catch(noop);
}
