/**
 * The application behind every STOMP connection: authenticates CONNECT, authorises and registers
 * subscriptions, turns SENDs into chat use cases, and delivers bus events to the local
 * subscriptions they address (docs/architecture.md, "Real time").
 *
 * Routing state is local to this instance: which connections each user has (at most
 * `maxConnectionsPerUser`, so one token cannot hold an instance's sockets), and which
 * subscriptions listen on each destination. Each open connection holds one bus interest in its
 * user, so the bus brings this instance every event of its users; session-topic subscribers are
 * participants, so their user interest already covers the topic.
 */
import type { Logger } from 'pino';
import { ChatError } from '../chat/chat-errors.js';
import { toProblem } from '../chat/problem.js';
import type { ChatService, SendMessageInput } from '../chat/chat-service.js';
import type { SendPath } from '../chat/send-path.js';
import { type ChatEvent, type Destination, sessionTopic } from '../chat/chat-events.js';
import { findMalformedText, isWellFormedText } from '../chat/text-rules.js';
import { isUuid } from '../chat/validation.js';
import type { BusEnvelope, EventBus } from '../chat/ports.js';
import type { Metrics } from '../observability/metrics.js';
import type { TokenVerifier, VerifiedToken } from '../auth/token-verifier.js';
import type { UserRateLimiter } from '../limits/user-rate-limiter.js';
import type { StompConnection, StompHandler, Subscription } from './stomp/stomp-connection.js';
import { header, type StompFrame } from './stomp/stomp-frame.js';
import { encodeMessagePart, type MessagePart } from './stomp/frame-encoder.js';
import { contextFrom, inSpan, tracer } from '../observability/tracing.js';

const TOPIC_PREFIX = '/topic/session.';
/** The seeds' name for a session topic: the same topic under another name. */
const CHAT_TOPIC_PREFIX = '/topic/chat/';
const USER_QUEUES = ['messages', 'ack', 'error', 'receipts', 'presence'] as const;
type UserQueue = (typeof USER_QUEUES)[number];
/** Other names a client may subscribe to a user queue by (the seeds' names). */
const USER_QUEUE_ALIASES: Readonly<Record<string, UserQueue>> = { notifications: 'messages' };

/** What a client ACK on /user/queue/messages refers to. */
interface DeliveryToken {
  sessionId: string;
  messageId: string;
}

interface Listener {
  conn: StompConnection;
  sub: Subscription;
}

export interface RealtimeGatewayDeps {
  chat: ChatService;
  bus: EventBus;
  verifier: TokenVerifier;
  metrics: Metrics;
  logger: Logger;
  /** Where sends are stored (or queued, when they cannot be stored yet). */
  sends: SendPath;
  /** Each SEND to /app/chat.send takes one unit of its sender's send budget (shared with REST sends). */
  sendLimiter: UserRateLimiter;
  /** Open STOMP connections one user may hold on this instance; a CONNECT beyond it is refused. */
  maxConnectionsPerUser: number;
  /** Told of each registered connection opening and closing (presence counts them). */
  presence?: ConnectionObserver;
}

/** What presence needs from the gateway: each registered connection's opening and closing, by user. */
export interface ConnectionObserver {
  userConnected(email: string): void;
  userDisconnected(email: string): void;
}

export class RealtimeGateway implements StompHandler {
  /** Per user, connections that are registered or registering: a slot is taken before the first await, so concurrent CONNECTs count. */
  private readonly connectionsByUser = new Map<string, Set<StompConnection>>();
  private readonly topicListeners = new Map<string, Set<Listener>>();
  private readonly queueListeners = new Map<StompConnection, Map<UserQueue, Set<Subscription>>>();
  private readonly interestHeld = new Set<StompConnection>();

  constructor(private readonly deps: RealtimeGatewayDeps) {
    deps.bus.onEvent((envelope) => this.dispatch(envelope));
  }

  /** Whether the user has an open, connected STOMP connection on this instance (registering ones do not count). */
  hasConnection(email: string): boolean {
    for (const conn of this.connectionsByUser.get(email) ?? []) if (this.interestHeld.has(conn) && conn.isOpen) return true;
    return false;
  }

  async authenticate(token: string | undefined): Promise<VerifiedToken> {
    if (!token) throw new ChatError('UNAUTHENTICATED', 'CONNECT needs an Authorization: Bearer <token> header or the token as passcode');
    return this.deps.verifier.verify(token);
  }

  async connected(conn: StompConnection): Promise<void> {
    const email = conn.caller!.email;
    let set = this.connectionsByUser.get(email);
    if (set && set.size >= this.deps.maxConnectionsPerUser) {
      throw new ChatError('TOO_MANY_CONNECTIONS', `at most ${this.deps.maxConnectionsPerUser} connections per user; close one first`);
    }
    if (!set) this.connectionsByUser.set(email, (set = new Set()));
    set.add(conn);
    // Interest first: once CONNECTED is written, every event for this user must reach us.
    try {
      await this.deps.bus.addInterest(email);
    } catch (err) {
      this.releaseSlot(email, conn);
      throw new ChatError('BUS_UNAVAILABLE', 'real-time delivery is unavailable right now; reconnect shortly', undefined, { cause: err });
    }
    if (!conn.isOpen) {
      this.releaseSlot(email, conn);
      this.deps.bus.removeInterest(email);
      return;
    }
    this.interestHeld.add(conn);
    this.queueListeners.set(conn, new Map());
    this.deps.metrics.realtimeConnections.inc({ transport: conn.transportKind });
    this.deps.presence?.userConnected(email);
  }

  disconnected(conn: StompConnection): void {
    const email = conn.caller?.email;
    if (!email) return;
    this.releaseSlot(email, conn);
    this.deps.sends.forget(conn.id);
    if (!this.interestHeld.delete(conn)) return;
    this.queueListeners.delete(conn);
    this.deps.bus.removeInterest(email);
    this.deps.metrics.realtimeConnections.dec({ transport: conn.transportKind });
    this.deps.presence?.userDisconnected(email);
  }

  async subscribe(conn: StompConnection, sub: Subscription): Promise<void> {
    const caller = conn.caller!;
    const sessionId = topicSessionOf(sub.destination);
    if (sessionId !== undefined) {
      // Lower case only: events are delivered to the topic of the canonical (lower-case) id.
      if (!isUuid(sessionId) || sessionId !== sessionId.toLowerCase()) throw new ChatError('UNKNOWN_DESTINATION', `no such destination ${sub.destination}`);
      await this.deps.chat.participantSession(caller, sessionId);
      // Listed under the canonical topic whatever name it was subscribed by; frames still name the subscription's.
      const topic = sessionTopic(sessionId);
      let set = this.topicListeners.get(topic);
      if (!set) this.topicListeners.set(topic, (set = new Set()));
      set.add({ conn, sub });
    } else {
      const queue = userQueueOf(sub.destination);
      if (!queue) throw new ChatError('UNKNOWN_DESTINATION', `cannot subscribe to ${sub.destination}`);
      const byQueue = this.queueListeners.get(conn);
      if (!byQueue) return;
      let set = byQueue.get(queue);
      if (!set) byQueue.set(queue, (set = new Set()));
      set.add(sub);
    }
    this.deps.metrics.realtimeSubscriptions.inc();
  }

  unsubscribe(conn: StompConnection, sub: Subscription): void {
    const sessionId = topicSessionOf(sub.destination);
    if (sessionId !== undefined) {
      const topic = sessionTopic(sessionId);
      const set = this.topicListeners.get(topic);
      if (set) {
        for (const listener of set) if (listener.sub === sub) set.delete(listener);
        if (set.size === 0) this.topicListeners.delete(topic);
      }
    } else {
      const queue = userQueueOf(sub.destination);
      if (queue) this.queueListeners.get(conn)?.get(queue)?.delete(sub);
    }
    this.deps.metrics.realtimeSubscriptions.dec();
  }

  async send(conn: StompConnection, destination: string, frame: StompFrame): Promise<void> {
    const caller = conn.caller!;
    if (!destination.startsWith('/app/')) throw new ChatError('DESTINATION_FORBIDDEN', 'clients may SEND only to /app/** destinations');
    if (destination === '/app/auth.refresh') return this.refresh(conn, frame);
    const body = parseJsonBody(frame);
    switch (destination) {
      case '/app/chat.send': {
        // Only the request's own fields: a client-set senderId, seq or sentAt never reaches the store.
        const request: SendMessageInput = {
          sessionId: body.sessionId,
          content: body.content,
          clientMessageId: body.clientMessageId ?? header(frame, 'client-message-id'),
          senderEmail: body.senderEmail,
          intent: body.intent,
        };
        try {
          await this.deps.sendLimiter.take(caller.email);
        } catch (err) {
          throw withClientMessageId(err, request.clientMessageId);
        }
        // Stored: the outbox acks it; queued: the outbox acks it once stored (the RECEIPT says accepted).
        const outcome = await inSpan('chat.send', { 'chat.transport': 'stomp' }, () => this.deps.sends.send(caller, request, { transport: 'stomp', connection: conn.id }));
        // A repeat writes no new event, so its ack comes from here rather than through the outbox.
        if (outcome.kind === 'repeat') this.deliverToConnection(conn, 'ack', outcome.message);
        return;
      }
      case '/app/chat.edit':
        await this.deps.sendLimiter.take(caller.email);
        await this.deps.chat.editMessage(caller, { sessionId: body.sessionId, messageId: body.messageId, content: body.content });
        return;
      case '/app/chat.delete':
        await this.deps.sendLimiter.take(caller.email);
        await this.deps.chat.deleteMessage(caller, { sessionId: body.sessionId, messageId: body.messageId });
        return;
      case '/app/chat.seen':
        await this.deps.chat.markSeen(caller, body.sessionId, body.upToSeq);
        return;
      case '/app/chat.typing':
        await this.deps.chat.typing(caller, body.sessionId, body.typing ?? true);
        return;
      default:
        throw new ChatError('UNKNOWN_DESTINATION', `no such destination ${destination}`);
    }
  }

  /**
   * A fresh token on an open connection (the frame's `authorization: Bearer` header), so a client
   * keeps its connection past its old token's expiry. A token the verifier refuses changes nothing
   * (the old expiry stays) and is refused like any frame; one for another user ends the connection:
   * a connection is one user's from CONNECT to close, and its subscriptions were authorised for them.
   */
  private async refresh(conn: StompConnection, frame: StompFrame): Promise<void> {
    const authorization = header(frame, 'authorization') ?? header(frame, 'Authorization');
    // As at CONNECT: the bearer header, or the token as passcode.
    const token = (authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization)?.[1] : undefined) ?? header(frame, 'passcode');
    if (!token) throw new ChatError('UNAUTHENTICATED', 'auth.refresh needs an authorization: Bearer <token> header (or the token as passcode)');
    let verified: VerifiedToken;
    try {
      verified = await this.deps.verifier.verify(token);
    } catch (err) {
      throw new ChatError('UNAUTHENTICATED', `the new token was refused, the connection keeps its old one: ${err instanceof ChatError ? err.message : 'verification failed'}`, undefined, { cause: err });
    }
    // The verifier allows for clock skew; a token already past its `exp` would end the connection at once.
    if (verified.expiresAt.getTime() <= Date.now()) throw new ChatError('UNAUTHENTICATED', 'the new token has expired, the connection keeps its old one');
    if (verified.caller.email !== conn.caller!.email) {
      conn.fail(new ChatError('IDENTITY_CHANGED', 'the refreshed token names another user; connect again as that user'));
      return;
    }
    conn.reauthenticated(verified.caller, verified.expiresAt);
  }

  async acked(conn: StompConnection, _sub: Subscription, tokens: readonly unknown[]): Promise<void> {
    const bySession = new Map<string, string[]>();
    for (const token of tokens as DeliveryToken[]) {
      if (!token?.sessionId) continue;
      const ids = bySession.get(token.sessionId) ?? [];
      ids.push(token.messageId);
      bySession.set(token.sessionId, ids);
    }
    for (const [sessionId, ids] of bySession) await this.deps.chat.markDelivered(conn.caller!, sessionId, ids);
  }

  reportError(conn: StompConnection, err: ChatError, context: { clientMessageId?: string; receipt?: string }): boolean {
    const subs = this.queueListeners.get(conn)?.get('error');
    if (!subs || subs.size === 0) return false;
    const problem = { ...toProblem(err), ...(context.clientMessageId ? { clientMessageId: context.clientMessageId } : {}) };
    const headers: Array<readonly [string, string]> = [
      ['content-type', 'application/json'],
      ['event-type', 'error'],
      ['error-code', err.code],
    ];
    if (context.clientMessageId) headers.push(['client-message-id', context.clientMessageId]);
    if (context.receipt) headers.push(['receipt-id', context.receipt]);
    const message = encodeMessagePart(headers, Buffer.from(JSON.stringify(problem)));
    for (const sub of subs) conn.deliver(sub, message);
    return true;
  }

  private releaseSlot(email: string, conn: StompConnection): void {
    const set = this.connectionsByUser.get(email);
    set?.delete(conn);
    if (set?.size === 0) this.connectionsByUser.delete(email);
  }

  /** Delivers one bus event to every local subscription it addresses. */
  private dispatch(envelope: BusEnvelope): void {
    if (envelope.trace) {
      // Traced: the socket writes are this instance's part of the sender's trace.
      const span = tracer().startSpan('chat.deliver', { attributes: { 'chat.event': envelope.event.type } }, contextFrom(envelope.trace));
      try {
        this.writeEvent(envelope);
      } finally {
        span.end();
      }
      return;
    }
    this.writeEvent(envelope);
  }

  private writeEvent(envelope: BusEnvelope): void {
    const { event } = envelope;
    if (event.type === 'disconnect') {
      this.disconnectUser(event.disconnect.email, event.disconnect.by);
      return;
    }
    // Encoded once for every subscription it reaches here; framed per subscription.
    let message: MessagePart | undefined;
    const token: DeliveryToken | undefined = event.type === 'message' ? { sessionId: event.sessionId, messageId: event.message.messageId } : undefined;
    let messagesWritten = 0;
    for (const destination of event.destinations) {
      const toRecipient = isUserQueue(destination, 'messages');
      for (const { conn, sub } of this.listenersOf(destination)) {
        message ??= encodeMessagePart(headersOf(event), Buffer.from(JSON.stringify(bodyOf(event))));
        conn.deliver(sub, message, toRecipient ? token : undefined);
        if (toRecipient) messagesWritten++;
      }
    }
    if (messagesWritten > 0 && event.type === 'message') {
      this.deps.metrics.messagesDelivered.inc(messagesWritten);
      const sentAt = Date.parse(event.message.sentAt);
      if (Number.isFinite(sentAt)) this.deps.metrics.deliveryLatency.observe(Math.max(0, Date.now() - sentAt) / 1000);
    }
  }

  /** Ends every connection `email` holds here with DISCONNECTED_BY_ADMIN (the SDK does not reconnect). */
  private disconnectUser(email: string, by: string): void {
    const conns = [...(this.connectionsByUser.get(email) ?? [])];
    if (conns.length === 0) return;
    this.deps.logger.info({ user: email, admin: by, connections: conns.length }, 'connections closed by an administrator');
    for (const conn of conns) conn.fail(new ChatError('DISCONNECTED_BY_ADMIN', 'an administrator closed this connection'));
  }

  /** A plain collection, not a generator: this runs for every destination of every event. */
  private listenersOf(destination: Destination): Iterable<Listener> {
    if ('topic' in destination) return this.topicListeners.get(destination.topic) ?? NO_LISTENERS;
    const listeners: Listener[] = [];
    for (const conn of this.connectionsByUser.get(destination.user) ?? []) {
      for (const sub of this.queueListeners.get(conn)?.get(destination.queue) ?? []) listeners.push({ conn, sub });
    }
    return listeners;
  }

  private deliverToConnection(conn: StompConnection, queue: UserQueue, payload: unknown): void {
    const message = payload as { sessionId?: string; seq?: number; clientMessageId?: string };
    const headers: Array<readonly [string, string]> = [
      ['content-type', 'application/json'],
      ['event-type', 'message'],
    ];
    if (message.clientMessageId) headers.push(['client-message-id', message.clientMessageId]);
    const encoded = encodeMessagePart(headers, Buffer.from(JSON.stringify(payload)));
    for (const sub of this.queueListeners.get(conn)?.get(queue) ?? []) conn.deliver(sub, encoded);
  }
}

function userQueueOf(destination: string): UserQueue | undefined {
  const name = destination.startsWith('/user/queue/') ? destination.slice('/user/queue/'.length) : undefined;
  if (name !== undefined && Object.hasOwn(USER_QUEUE_ALIASES, name)) return USER_QUEUE_ALIASES[name];
  return (USER_QUEUES as readonly string[]).includes(name ?? '') ? (name as UserQueue) : undefined;
}

/** The session id a session-topic destination names, by either name; undefined for any other destination. */
function topicSessionOf(destination: string): string | undefined {
  if (destination.startsWith(TOPIC_PREFIX)) return destination.slice(TOPIC_PREFIX.length);
  if (destination.startsWith(CHAT_TOPIC_PREFIX)) return destination.slice(CHAT_TOPIC_PREFIX.length);
  return undefined;
}

const NO_LISTENERS: readonly Listener[] = [];

const isUserQueue = (d: Destination, queue: UserQueue): boolean => 'queue' in d && d.queue === queue;

function bodyOf(event: ChatEvent): unknown {
  switch (event.type) {
    case 'message':
    case 'edit':
    case 'delete':
      return event.message;
    case 'receipt':
      return event.receipt;
    case 'typing':
      return event.typing;
    case 'error':
      return event.error;
    case 'report':
      return event.report;
    case 'presence':
      return event.presence;
    case 'disconnect':
      return null;
  }
}

function headersOf(event: ChatEvent): Array<readonly [string, string]> {
  const headers: Array<readonly [string, string]> = [
    ['content-type', 'application/json'],
    ['event-type', event.type],
    ['session-id', event.sessionId],
  ];
  if (event.type === 'message' || event.type === 'edit' || event.type === 'delete') {
    headers.push(['seq', String(event.message.seq)], ['client-message-id', event.message.clientMessageId]);
  }
  if (event.type === 'error') {
    headers.push(['error-code', event.error.code]);
    if (event.error.clientMessageId) headers.push(['client-message-id', event.error.clientMessageId]);
  }
  return headers;
}

function parseJsonBody(frame: StompFrame): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(frame.body.toString('utf8'));
  } catch {
    throw new ChatError('MALFORMED_JSON', 'the SEND body must be a JSON object');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ChatError('MALFORMED_JSON', 'the SEND body must be a JSON object');
  // JSON escapes can spell a lone surrogate or NUL that raw UTF-8 cannot: refuse them like REST does.
  const malformed = findMalformedText(parsed, '');
  if (malformed !== undefined) {
    // Keyed by its clientMessageId when that is usable, so the sender can settle the send it refused.
    const id = (parsed as Record<string, unknown>).clientMessageId ?? header(frame, 'client-message-id');
    const clientMessageId = typeof id === 'string' && isWellFormedText(id) ? id : undefined;
    throw new ChatError('INVALID_CONTENT', `${malformed || 'body'} must be well-formed Unicode text (no NUL, no lone surrogate)`, { field: malformed || undefined, ...(clientMessageId ? { clientMessageId } : {}) });
  }
  return parsed as Record<string, unknown>;
}

function withClientMessageId(err: unknown, clientMessageId: unknown): unknown {
  if (!(err instanceof ChatError) || typeof clientMessageId !== 'string') return err;
  return new ChatError(err.code, err.message, { ...(err.extra ?? {}), clientMessageId }, { cause: err });
}
