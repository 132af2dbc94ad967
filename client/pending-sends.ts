/**
 * Sends not yet acknowledged, keyed by clientMessageId: each is SENT when connected and again with
 * the same id — on every new connection, and after `resendAfterMs` on a live one — until it settles:
 * acknowledged (a stored copy came back), refused (a 4xx on /user/queue/error), or the client closed.
 * The service stores a (sender, clientMessageId) once, so a repeat never duplicates.
 *
 * Must never happen: a send settled twice, or a resend timer outliving the connection it was set on.
 */
import { ChatClientError } from './chat-client-error.js';
import type { ChatMessage } from './chat-types.js';

/** A send in flight: `acked` resolves with the stored message, or rejects when the service refuses it. */
export interface OutgoingMessage {
  clientMessageId: string;
  sessionId: string;
  content: string;
  acked: Promise<ChatMessage>;
}

/** The body of a `/app/chat.send` frame. */
export interface SendRequest {
  sessionId: string;
  content: string;
  clientMessageId: string;
}

export interface PendingSendsOptions {
  /** SENDs one request; false when it could not go out (the next connection sends it). */
  transmit(request: SendRequest): boolean;
  resendAfterMs: number;
}

interface PendingSend extends SendRequest {
  timer?: ReturnType<typeof setTimeout>;
  resolve(message: ChatMessage): void;
  reject(error: ChatClientError): void;
}

const noop = (): void => undefined;

export class PendingSends {
  private readonly pending = new Map<string, PendingSend>();
  private online = false;
  private closed = false;

  constructor(private readonly options: PendingSendsOptions) {}

  get size(): number {
    return this.pending.size;
  }

  /** A new send with a new clientMessageId: SENT at once when online, else on the next connection. */
  add(sessionId: string, content: string): OutgoingMessage {
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
    const send: PendingSend = { sessionId, content, clientMessageId, resolve, reject };
    this.pending.set(clientMessageId, send);
    if (this.online) this.transmit(send);
    return { clientMessageId, sessionId, content, acked };
  }

  /** A connection is up: SEND everything pending on it. */
  resume(): void {
    this.online = true;
    for (const send of this.pending.values()) this.transmit(send);
  }

  /** The connection is gone: what it carried may never be answered, so wait for the next one. */
  pause(): void {
    this.online = false;
    for (const send of this.pending.values()) clearTimeout(send.timer);
  }

  /** A stored message from any source: when it is the copy of a pending send, that send is acknowledged. */
  settle(message: ChatMessage): void {
    const send = this.pending.get(message.clientMessageId);
    if (!send || send.sessionId !== message.sessionId) return;
    this.forget(send);
    send.resolve(message);
  }

  /**
   * A refusal from /user/queue/error. One that repeating cannot fix rejects its send; a retryable one
   * (5xx, rate limits) leaves it to the next resend. Returns the error, with the send's session.
   */
  refused(error: ChatClientError): ChatClientError {
    const send = error.details.clientMessageId ? this.pending.get(error.details.clientMessageId) : undefined;
    if (!send) return error;
    const own = new ChatClientError(error.code, error.message, error.status, { ...error.details, sessionId: send.sessionId });
    if (!own.retryable) {
      this.forget(send);
      send.reject(own);
    }
    return own;
  }

  /** Rejects every pending send and refuses later ones. */
  close(errorFor: (request: SendRequest) => ChatClientError): void {
    this.closed = true;
    this.online = false;
    const sends = [...this.pending.values()];
    this.pending.clear();
    for (const send of sends) {
      clearTimeout(send.timer);
      send.reject(errorFor(send));
    }
  }

  private forget(send: PendingSend): void {
    clearTimeout(send.timer);
    this.pending.delete(send.clientMessageId);
  }

  private transmit(send: PendingSend): void {
    clearTimeout(send.timer);
    if (!this.options.transmit({ sessionId: send.sessionId, content: send.content, clientMessageId: send.clientMessageId })) return;
    send.timer = setTimeout(() => {
      if (this.pending.get(send.clientMessageId) === send && this.online) this.transmit(send);
    }, this.options.resendAfterMs);
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
