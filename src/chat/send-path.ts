/**
 * The one way a send is stored, whatever carried it: REST, STOMP on one instance, STOMP in a
 * cluster. The outcome policy lives here, once (docs/adr/0010):
 *
 * - Direct commit first: the instance that took the send stores it through its own group commit.
 * - stored: the outbox event acks the sender (every connection) and delivers to the recipient.
 * - repeat (the clientMessageId was stored before): the original comes back for the transport to
 *   ack at once; a repeat writes no event.
 * - refused (a ChatError that is the request's fault): thrown, keyed by its clientMessageId.
 * - outage (a 503: the store unreachable) or an unexpected failure: a transport that can accept a
 *   send before it is stored (STOMP: RECEIPT now, ack when stored) passes the connection it came
 *   on, and the send spills into the SendQueue ('queued'), to be stored when it can be. Without a
 *   connection (REST, which answers with the stored message) the error is thrown: the client
 *   retries with the same clientMessageId.
 *
 * Order: for one connection, seq order is send order, also across an outage. While a connection has
 * queued sends that are not settled, its later sends follow them through the queue. A queued send is
 * settled when it is stored, refused or dead here, or when its ack or error event reaches this
 * instance through the bus (the sender's connection holds their interest, so it does), or when the
 * connection goes (its order no longer matters).
 */
import { ChatError } from './chat-errors.js';
import type { ChatMessageView } from './chat-events.js';
import type { Caller } from './caller.js';
import type { SendMessageInput } from './chat-service.js';
import type { BusEnvelope, EventBus, QueuedSend, SendQueue } from './ports.js';

/** The use cases the send path needs; ChatService has them. */
export interface SendUseCases {
  checkSend(caller: Caller, input: SendMessageInput): Promise<void>;
  sendMessage(caller: Caller, input: SendMessageInput): Promise<{ message: ChatMessageView; created: boolean }>;
  repeatAckEnvelope(caller: Caller, message: ChatMessageView): BusEnvelope;
  sendFailedEnvelope(caller: Caller, input: SendMessageInput, err: ChatError): BusEnvelope;
}

export type SendOutcome = { kind: 'stored'; message: ChatMessageView } | { kind: 'repeat'; message: ChatMessageView } | { kind: 'queued' };

export type SendTransport = 'http' | 'stomp';

export interface SendOptions {
  transport: SendTransport;
  /** The connection the send came on, when the transport can accept a send before it is stored. */
  connection?: string;
}

export interface SendPathDeps {
  chat: SendUseCases;
  queue: SendQueue;
  /** Carries the outcomes of queued sends that write no outbox row: repeat acks and refusals. */
  bus: EventBus;
  /** Counts each send once, by how it ended: created, repeat or queued. */
  onOutcome?: (transport: SendTransport, result: 'created' | 'repeat' | 'queued') => void;
  /** Told about failures that are ours, not the client's (the send is queued and retried). */
  onUnexpected?: (err: unknown) => void;
  /** Told of every message stored (not repeats), directly or from the queue. */
  onStored?: (message: ChatMessageView, via: SendTransport | 'queue') => void;
}

export class SendPath {
  /** Per connection: the queued sends not settled yet, by `sender|clientMessageId`. */
  private readonly unsettled = new Map<string, Set<string>>();
  /** `sender|clientMessageId` → the connection it holds back. */
  private readonly connectionOf = new Map<string, string>();

  constructor(private readonly deps: SendPathDeps) {
    deps.queue.consume({ store: (send) => this.storeQueued(send), dead: (send) => this.reportDead(send) });
    deps.bus.onEvent((envelope) => this.observe(envelope));
  }

  async send(caller: Caller, input: SendMessageInput, options: SendOptions): Promise<SendOutcome> {
    const { connection } = options;
    if (connection !== undefined && this.unsettled.has(connection)) {
      // Behind queued sends of this connection: stored after them, so its seq comes after theirs.
      await this.check(caller, input);
      return this.spill(caller, input, connection, options.transport);
    }
    let outcome: { message: ChatMessageView; created: boolean };
    try {
      outcome = await this.deps.chat.sendMessage(caller, input);
    } catch (err) {
      const refused = err instanceof ChatError && err.status < 500;
      if (refused || connection === undefined) throw withClientMessageId(err, input.clientMessageId);
      if (!(err instanceof ChatError)) this.deps.onUnexpected?.(err);
      return this.spill(caller, input, connection, options.transport);
    }
    this.deps.onOutcome?.(options.transport, outcome.created ? 'created' : 'repeat');
    if (outcome.created) this.deps.onStored?.(outcome.message, options.transport);
    return outcome.created ? { kind: 'stored', message: outcome.message } : { kind: 'repeat', message: outcome.message };
  }

  /** The connection is gone: its later sends, if any, are somebody else's order. */
  forget(connection: string): void {
    const keys = this.unsettled.get(connection);
    if (!keys) return;
    for (const key of keys) this.connectionOf.delete(key);
    this.unsettled.delete(connection);
  }

  /** Shape, identity and participation, so a bad send is refused now rather than after the queue. */
  private async check(caller: Caller, input: SendMessageInput): Promise<void> {
    try {
      await this.deps.chat.checkSend(caller, input);
    } catch (err) {
      // During an outage the session cannot be looked up: the queue's store checks everything again.
      if (err instanceof ChatError && err.status === 503) return;
      throw withClientMessageId(err, input.clientMessageId);
    }
  }

  private async spill(caller: Caller, input: SendMessageInput, connection: string, transport: SendTransport): Promise<{ kind: 'queued' }> {
    const send: QueuedSend = {
      caller: { email: caller.email, ...(caller.displayName !== undefined ? { displayName: caller.displayName } : {}) },
      request: {
        sessionId: input.sessionId,
        content: input.content,
        clientMessageId: input.clientMessageId,
        ...(input.senderEmail !== undefined ? { senderEmail: input.senderEmail } : {}),
        ...(input.intent !== undefined ? { intent: input.intent } : {}),
      },
    };
    const key = settleKey(caller.email, input.clientMessageId);
    // Held back before the enqueue: the send's event may come through the bus before it returns.
    let keys = this.unsettled.get(connection);
    if (!keys) this.unsettled.set(connection, (keys = new Set()));
    keys.add(key);
    this.connectionOf.set(key, connection);
    try {
      await this.deps.queue.enqueue(send);
    } catch (err) {
      this.settle(key);
      throw new ChatError('STORE_UNAVAILABLE', 'the send can be neither stored nor queued right now; retry it with the same clientMessageId', withId(input.clientMessageId), { cause: err });
    }
    this.deps.onOutcome?.(transport, 'queued');
    return { kind: 'queued' };
  }

  /** The queue's handler: stores a queued send, or tells its sender why it never will be. */
  private async storeQueued(send: QueuedSend): Promise<void> {
    const caller = send.caller;
    const input = send.request as SendMessageInput;
    let outcome: { message: ChatMessageView; created: boolean };
    try {
      outcome = await this.deps.chat.sendMessage(caller, input);
    } catch (err) {
      // An outage keeps it in the queue; an unexpected failure counts as an attempt.
      if (!(err instanceof ChatError) || err.status >= 500) throw err;
      await this.tell(this.deps.chat.sendFailedEnvelope(caller, input, err));
      this.settle(settleKey(caller.email, input.clientMessageId));
      return;
    }
    // A repeat writes no outbox row: its ack goes out from here.
    if (outcome.created) this.deps.onStored?.(outcome.message, 'queue');
    else await this.tell(this.deps.chat.repeatAckEnvelope(caller, outcome.message));
    this.settle(settleKey(caller.email, input.clientMessageId));
  }

  /** The sender hears that the send will not be stored (the queue keeps it, and its error, for operators). */
  private async reportDead(send: QueuedSend): Promise<void> {
    const input = send.request as SendMessageInput;
    const failure = new ChatError('INTERNAL', 'the send could not be stored and was set aside for an operator', { deadLetter: true });
    this.settle(settleKey(send.caller.email, input.clientMessageId));
    await this.tell(this.deps.chat.sendFailedEnvelope(send.caller, input, failure));
  }

  /**
   * Publishes an outcome to the sender. Without the broker only this instance's connections hear
   * it, and the send stays queued (a 503) so the sender's other connections hear it too, later.
   */
  private async tell(envelope: BusEnvelope): Promise<void> {
    try {
      await this.deps.bus.publish(envelope);
    } catch (err) {
      this.deps.bus.deliverLocally(envelope);
      throw new ChatError('BUS_UNAVAILABLE', 'the outcome of a queued send could not be published', undefined, { cause: err });
    }
  }

  private observe(envelope: BusEnvelope): void {
    if (this.connectionOf.size === 0) return;
    const { event } = envelope;
    if (event.type === 'message') this.settle(settleKey(event.message.senderEmail, event.message.clientMessageId));
    else if (event.type === 'error' && event.error.clientMessageId) for (const user of envelope.recipients) this.settle(settleKey(user, event.error.clientMessageId));
  }

  private settle(key: string): void {
    const connection = this.connectionOf.get(key);
    if (connection === undefined) return;
    this.connectionOf.delete(key);
    const keys = this.unsettled.get(connection);
    keys?.delete(key);
    if (keys?.size === 0) this.unsettled.delete(connection);
  }
}

const settleKey = (sender: string, clientMessageId: unknown): string => `${sender}|${typeof clientMessageId === 'string' ? clientMessageId.toLowerCase() : ''}`;

const withId = (clientMessageId: unknown): Record<string, unknown> | undefined => (typeof clientMessageId === 'string' ? { clientMessageId } : undefined);

/** The error as the sender hears it: keyed by the clientMessageId it refers to. */
function withClientMessageId(err: unknown, clientMessageId: unknown): unknown {
  if (!(err instanceof ChatError) || typeof clientMessageId !== 'string' || err.extra?.clientMessageId !== undefined) return err;
  return new ChatError(err.code, err.message, { ...(err.extra ?? {}), clientMessageId }, { cause: err });
}
