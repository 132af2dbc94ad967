/**
 * One client's STOMP 1.2 session over any byte transport (raw WebSocket or SockJS).
 *
 * Lifecycle: created on accept → CONNECT within `connectTimeoutMs` (else ERROR + close) →
 * CONNECTED with negotiated heart-beats → frames until DISCONNECT, an ERROR, a transport close, a
 * missed heart-beat, an expired token or a slow consumer → `closed` (terminal, idempotent).
 *
 * Invariants:
 * - Client frames are handled strictly one after another in arrival order (a chain of promises),
 *   so a SEND's seq order follows the client's send order and a RECEIPT means every earlier frame
 *   is done. Nothing a client sends can throw out of this class: protocol violations become an
 *   ERROR frame and a close; application refusals become what the handler decides.
 * - Header lookups go through `header()` only, so the first of repeated headers wins everywhere.
 * - After close nothing is written and no handler is called except `disconnected`, once.
 *
 * Spec: https://stomp.github.io/stomp-specification-1.2.html
 */
import { ChatError } from '../../chat/chat-errors.js';
import { encodeFrame, HEARTBEAT_EOL } from './frame-encoder.js';
import { type StompFrameDecoderLimits, StompFrameDecoder } from './frame-decoder.js';
import { header, type StompFrame } from './stomp-frame.js';

export interface StompTransport {
  /** Writes one encoded frame or heart-beat. */
  send(data: Buffer): void;
  /** Bytes accepted by send() but not yet handed to the network. */
  bufferedBytes(): number;
  /** Closes after flushing what was sent. */
  close(): void;
}

export type AckMode = 'auto' | 'client' | 'client-individual';

export interface Subscription {
  readonly id: string;
  readonly destination: string;
  readonly ack: AckMode;
}

export interface Principal {
  readonly email: string;
  readonly displayName?: string;
  readonly expiresAt: Date;
}

/** What the application does with a connection's frames. Errors it throws are ChatErrors. */
export interface StompHandler {
  /** Verifies the CONNECT credentials (a bearer token). */
  authenticate(token: string | undefined): Promise<Principal>;
  /** Called once after CONNECTED is written; the connection is now routable. */
  connected(conn: StompConnection): Promise<void>;
  /** Authorises and registers a subscription; throwing refuses it. */
  subscribe(conn: StompConnection, sub: Subscription): Promise<void>;
  unsubscribe(conn: StompConnection, sub: Subscription): void;
  /** Handles a SEND; resolves when done. Throwing reports the error to the client. */
  send(conn: StompConnection, destination: string, frame: StompFrame): Promise<void>;
  /** Messages the client acknowledged (ACK), with the tokens given to `deliver`. */
  acked(conn: StompConnection, sub: Subscription, tokens: readonly unknown[]): Promise<void>;
  /** Reports a refused frame to the client if it listens for errors; false means "use an ERROR frame". */
  reportError(conn: StompConnection, err: ChatError, context: { clientMessageId?: string; receipt?: string }): boolean;
  disconnected(conn: StompConnection): void;
}

export interface StompConnectionOptions {
  limits?: Partial<StompFrameDecoderLimits>;
  maxSubscriptions: number;
  connectTimeoutMs: number;
  /** What we offer in CONNECTED's heart-beat header: how often we can send, how often we want to hear. */
  heartbeatSendMs: number;
  heartbeatReceiveMs: number;
  /** Outgoing bytes allowed to queue before the client counts as a slow consumer and is dropped. */
  maxBufferedBytes: number;
  /** Unacknowledged messages remembered per client-ack subscription. */
  maxPendingAcks: number;
  /** Counts frames for metrics. */
  stats?: { frameIn(command: string): void; frameOut(command: string): void };
  /** Told about failures that are our bug, not the client's (the client only sees "internal error"). */
  onInternalError?: (err: unknown) => void;
}

export const DEFAULT_STOMP_OPTIONS: StompConnectionOptions = {
  maxSubscriptions: 100,
  connectTimeoutMs: 10_000,
  heartbeatSendMs: 10_000,
  heartbeatReceiveMs: 10_000,
  maxBufferedBytes: 4 * 1024 * 1024,
  maxPendingAcks: 1000,
};

const SUPPORTED_VERSIONS = ['1.2', '1.1'];
let connectionCounter = 0;

export class StompConnection {
  readonly id = `c${(++connectionCounter).toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  principal: Principal | undefined;
  private state: 'awaiting-connect' | 'connected' | 'closed' = 'awaiting-connect';
  private readonly decoder: StompFrameDecoder;
  private readonly subscriptions = new Map<string, Subscription>();
  /** Per client-ack subscription: ack id → token, in delivery order (for cumulative `client` ACKs). */
  private readonly pendingAcks = new Map<string, Map<string, unknown>>();
  private readonly ackOwner = new Map<string, string>();
  private chain: Promise<void> = Promise.resolve();
  private messageCounter = 0;
  private lastReceivedAt = Date.now();
  private lastSentAt = Date.now();
  private timers: NodeJS.Timeout[] = [];
  private onClosedCallbacks: Array<() => void> = [];

  constructor(
    private readonly transport: StompTransport,
    private readonly handler: StompHandler,
    private readonly options: StompConnectionOptions = DEFAULT_STOMP_OPTIONS,
    readonly transportKind: 'websocket' | 'sockjs' = 'websocket',
  ) {
    this.decoder = new StompFrameDecoder(options.limits ?? {});
    this.addTimer(setTimeout(() => {
      if (this.state === 'awaiting-connect') this.fail('CONNECT_TIMEOUT', 'no CONNECT frame within the connect timeout');
    }, options.connectTimeoutMs));
  }

  get isOpen(): boolean {
    return this.state !== 'closed';
  }

  get subscriptionCount(): number {
    return this.subscriptions.size;
  }

  onClosed(callback: () => void): void {
    this.onClosedCallbacks.push(callback);
  }

  /** Feeds bytes from the transport. */
  receive(data: Buffer | string): void {
    if (this.state === 'closed') return;
    this.lastReceivedAt = Date.now();
    for (const event of this.decoder.push(data)) {
      if (event.kind === 'heartbeat') continue;
      if (event.kind === 'error') {
        this.fail(event.code, event.message);
        return;
      }
      const frame = event.frame;
      this.options.stats?.frameIn(frame.command);
      this.chain = this.chain.then(() => this.handle(frame)).catch((err: unknown) => this.fail('INTERNAL', 'internal error', undefined, err));
    }
  }

  /** The transport closed underneath us. */
  transportClosed(): void {
    this.terminate();
  }

  /** Writes a MESSAGE for a subscription; `token` comes back in `acked` when the client ACKs it. */
  deliver(sub: Subscription, headers: ReadonlyArray<readonly [string, string]>, body: Buffer, token?: unknown): void {
    if (this.state !== 'connected' || this.subscriptions.get(sub.id) !== sub) return;
    const messageId = `${this.id}-${++this.messageCounter}`;
    const frameHeaders: Array<readonly [string, string]> = [
      ['subscription', sub.id],
      ['message-id', messageId],
      ['destination', sub.destination],
      ...headers,
    ];
    if (sub.ack !== 'auto') {
      frameHeaders.push(['ack', messageId]);
      const pending = this.pendingAcks.get(sub.id)!;
      if (pending.size >= this.options.maxPendingAcks) {
        const oldest = pending.keys().next().value!;
        pending.delete(oldest);
        this.ackOwner.delete(oldest);
      }
      pending.set(messageId, token);
      this.ackOwner.set(messageId, sub.id);
    }
    this.write(encodeFrame({ command: 'MESSAGE', headers: frameHeaders, body }), false, 'MESSAGE');
  }

  /** Sends an ERROR frame and closes: the end of a connection, as STOMP requires after ERROR. */
  fail(code: string, message: string, receipt?: string, cause?: unknown): void {
    if (this.state === 'closed') return;
    if (code === 'INTERNAL') this.options.onInternalError?.(cause);
    const headers: Array<readonly [string, string]> = [
      ['message', `${code}: ${message}`],
      ['content-type', 'application/json'],
    ];
    if (receipt) headers.push(['receipt-id', receipt]);
    this.write(encodeFrame({ command: 'ERROR', headers, body: Buffer.from(JSON.stringify({ code, message })) }), true, 'ERROR');
    this.terminate();
  }

  private async handle(frame: StompFrame): Promise<void> {
    if (this.state === 'closed') return;
    const receipt = header(frame, 'receipt');
    if (this.state === 'awaiting-connect') {
      if (frame.command !== 'CONNECT' && frame.command !== 'STOMP') {
        this.fail('NOT_CONNECTED', 'the first frame must be CONNECT', receipt);
        return;
      }
      await this.connect(frame);
      return;
    }
    try {
      switch (frame.command) {
        case 'CONNECT':
        case 'STOMP':
          this.fail('ALREADY_CONNECTED', 'already connected', receipt);
          return;
        case 'SUBSCRIBE':
          await this.subscribe(frame);
          break;
        case 'UNSUBSCRIBE':
          this.unsubscribe(frame);
          break;
        case 'SEND':
          await this.send(frame);
          break;
        case 'ACK':
        case 'NACK':
          await this.ack(frame);
          break;
        case 'DISCONNECT':
          if (receipt) this.writeReceipt(receipt);
          this.terminate();
          return;
        case 'BEGIN':
        case 'COMMIT':
        case 'ABORT':
          this.fail('UNSUPPORTED', 'transactions are not supported', receipt);
          return;
        default:
          this.fail('UNKNOWN_COMMAND', `unexpected ${frame.command} frame`, receipt);
          return;
      }
      if (receipt && this.isOpen) this.writeReceipt(receipt);
    } catch (err) {
      if (!(err instanceof ChatError)) throw err;
      const clientMessageId = err.extra?.clientMessageId as string | undefined;
      if (this.handler.reportError(this, err, { clientMessageId, receipt })) {
        // The error went to /user/queue/error; a RECEIPT still confirms the frame was processed.
        if (receipt && this.isOpen) this.writeReceipt(receipt);
      } else {
        this.fail(err.code, err.message, receipt);
      }
    }
  }

  private async connect(frame: StompFrame): Promise<void> {
    const receipt = header(frame, 'receipt');
    const accepted = (header(frame, 'accept-version') ?? '1.0').split(',').map((v) => v.trim());
    const version = SUPPORTED_VERSIONS.find((v) => accepted.includes(v));
    if (!version) {
      this.fail('UNSUPPORTED_VERSION', `supported versions are ${SUPPORTED_VERSIONS.join(',')}`, receipt);
      return;
    }
    const authorization = header(frame, 'Authorization') ?? header(frame, 'authorization');
    const bearer = authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization)?.[1] : undefined;
    const token = bearer ?? header(frame, 'passcode');
    let principal: Principal;
    try {
      principal = await this.handler.authenticate(token);
    } catch (err) {
      const message = err instanceof ChatError ? err.message : 'authentication failed';
      this.fail('UNAUTHENTICATED', message, receipt);
      return;
    }
    if (this.state === 'closed') return;
    this.principal = principal;

    const [clientSends, clientWants] = parseHeartBeat(header(frame, 'heart-beat'));
    const sendEvery = clientWants > 0 && this.options.heartbeatSendMs > 0 ? Math.max(clientWants, this.options.heartbeatSendMs) : 0;
    const expectEvery = clientSends > 0 && this.options.heartbeatReceiveMs > 0 ? Math.max(clientSends, this.options.heartbeatReceiveMs) : 0;

    try {
      await this.handler.connected(this);
    } catch (err) {
      this.fail(err instanceof ChatError ? err.code : 'INTERNAL', err instanceof ChatError ? err.message : 'could not register the connection', receipt, err);
      return;
    }
    if (!this.isOpen) return;
    this.state = 'connected';
    this.clearTimers();
    this.write(
      encodeFrame({
        command: 'CONNECTED',
        headers: [
          ['version', version],
          ['heart-beat', `${this.options.heartbeatSendMs},${this.options.heartbeatReceiveMs}`],
          ['server', 'chat-service/1'],
          ['session', this.id],
          ['user-name', principal.email],
        ],
        body: Buffer.alloc(0),
      }),
      false,
      'CONNECTED',
    );
    if (receipt) this.writeReceipt(receipt);

    if (sendEvery > 0) {
      this.addTimer(setInterval(() => {
        if (Date.now() - this.lastSentAt >= sendEvery * 0.9) this.write(HEARTBEAT_EOL);
      }, Math.max(50, Math.floor(sendEvery / 2))));
    }
    if (expectEvery > 0) {
      // Twice the agreed interval: the spec allows for network timing error, and one lost beat is no proof of death.
      const deadline = expectEvery * 2;
      this.addTimer(setInterval(() => {
        if (Date.now() - this.lastReceivedAt > deadline) this.fail('HEARTBEAT_TIMEOUT', 'no data or heart-beat from the client in time');
      }, Math.max(50, Math.floor(expectEvery / 2))));
    }
    const ttl = principal.expiresAt.getTime() - Date.now();
    // setTimeout takes at most ~24.8 days; a longer token simply outlives the timer's reach.
    if (ttl < 2 ** 31 - 1) this.addTimer(setTimeout(() => this.fail('TOKEN_EXPIRED', 'the token has expired; reconnect with a fresh one'), Math.max(0, ttl)));
  }

  private async subscribe(frame: StompFrame): Promise<void> {
    const id = header(frame, 'id');
    const destination = header(frame, 'destination');
    if (!id || !destination) throw new ChatError('VALIDATION_FAILED', 'SUBSCRIBE needs id and destination headers');
    if (this.subscriptions.has(id)) throw new ChatError('VALIDATION_FAILED', `subscription id ${id} is already in use`);
    if (this.subscriptions.size >= this.options.maxSubscriptions) {
      throw new ChatError('VALIDATION_FAILED', `at most ${this.options.maxSubscriptions} subscriptions per connection`);
    }
    const ackHeader = header(frame, 'ack') ?? 'auto';
    if (ackHeader !== 'auto' && ackHeader !== 'client' && ackHeader !== 'client-individual') {
      throw new ChatError('VALIDATION_FAILED', 'ack must be auto, client or client-individual');
    }
    const sub: Subscription = { id, destination, ack: ackHeader };
    await this.handler.subscribe(this, sub);
    if (!this.isOpen) return;
    this.subscriptions.set(id, sub);
    if (sub.ack !== 'auto') this.pendingAcks.set(id, new Map());
  }

  private unsubscribe(frame: StompFrame): void {
    const id = header(frame, 'id');
    if (!id) throw new ChatError('VALIDATION_FAILED', 'UNSUBSCRIBE needs an id header');
    const sub = this.subscriptions.get(id);
    if (!sub) return;
    this.dropSubscription(sub);
  }

  private async send(frame: StompFrame): Promise<void> {
    const destination = header(frame, 'destination');
    if (!destination) throw new ChatError('VALIDATION_FAILED', 'SEND needs a destination header');
    await this.handler.send(this, destination, frame);
  }

  private async ack(frame: StompFrame): Promise<void> {
    const id = header(frame, 'id') ?? header(frame, 'message-id');
    if (!id) throw new ChatError('VALIDATION_FAILED', `${frame.command} needs an id header`);
    const subId = this.ackOwner.get(id);
    if (subId === undefined) return; // already acknowledged (cumulatively) or forgotten: nothing to do
    const sub = this.subscriptions.get(subId);
    const pending = this.pendingAcks.get(subId);
    if (!sub || !pending) return;
    const tokens: unknown[] = [];
    if (sub.ack === 'client') {
      // Cumulative: this ACK covers every earlier message of the subscription too.
      for (const [ackId, token] of pending) {
        pending.delete(ackId);
        this.ackOwner.delete(ackId);
        tokens.push(token);
        if (ackId === id) break;
      }
    } else {
      tokens.push(pending.get(id));
      pending.delete(id);
      this.ackOwner.delete(id);
    }
    if (frame.command === 'ACK') await this.handler.acked(this, sub, tokens.filter((t) => t !== undefined));
  }

  private dropSubscription(sub: Subscription): void {
    this.subscriptions.delete(sub.id);
    const pending = this.pendingAcks.get(sub.id);
    if (pending) for (const ackId of pending.keys()) this.ackOwner.delete(ackId);
    this.pendingAcks.delete(sub.id);
    this.handler.unsubscribe(this, sub);
  }

  private writeReceipt(receipt: string): void {
    this.write(encodeFrame({ command: 'RECEIPT', headers: [['receipt-id', receipt]], body: Buffer.alloc(0) }), false, 'RECEIPT');
  }

  private write(data: Buffer, evenIfSlow = false, command?: string): void {
    if (this.state === 'closed') return;
    if (!evenIfSlow && this.transport.bufferedBytes() > this.options.maxBufferedBytes) {
      this.fail('SLOW_CONSUMER', 'the client is not reading fast enough');
      return;
    }
    this.lastSentAt = Date.now();
    if (command) this.options.stats?.frameOut(command);
    try {
      this.transport.send(data);
    } catch {
      this.terminate();
    }
  }

  private terminate(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.clearTimers();
    for (const sub of [...this.subscriptions.values()]) this.dropSubscription(sub);
    try {
      this.transport.close();
    } catch {
      // already closed
    }
    this.handler.disconnected(this);
    for (const callback of this.onClosedCallbacks) callback();
  }

  private addTimer(timer: NodeJS.Timeout): void {
    timer.unref();
    this.timers.push(timer);
  }

  private clearTimers(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers = [];
  }
}

function parseHeartBeat(value: string | undefined): [number, number] {
  const match = value ? /^\s*(\d{1,9})\s*,\s*(\d{1,9})\s*$/.exec(value) : null;
  return match ? [Number(match[1]), Number(match[2])] : [0, 0];
}
