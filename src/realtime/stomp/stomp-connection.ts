/**
 * One client's STOMP 1.2 session over any byte transport (raw WebSocket or SockJS).
 *
 * Lifecycle: created on accept → CONNECT within `connectTimeoutMs` (else ERROR + close) →
 * CONNECTED with negotiated heart-beats → frames until DISCONNECT, an ERROR, a transport close, a
 * missed heart-beat (or, with none agreed, `idleTimeoutMs` of silence), an expired token, a slow
 * consumer or a client that sends too much → `closed` (terminal, idempotent).
 *
 * Invariants:
 * - Client frames are handled strictly one after another in arrival order (one queue, drained by
 *   one loop), so a SEND's seq order follows the client's send order and a RECEIPT means every
 *   earlier frame is done. Nothing a client sends can throw out of this class: protocol violations
 *   become an ERROR frame and a close; application refusals become what the handler decides.
 * - What a client can make us hold is bounded. Frames waiting to be handled are counted (frames
 *   and bytes): past the backlog's pause mark we stop reading from the transport, so TCP pushes
 *   back on the client; past its hard maximum (a transport that cannot pause) the client is
 *   dropped with TOO_MANY_FRAMES. After CONNECT every frame but DISCONNECT spends the connection's
 *   frame budget; over it the frame is refused, and a client that keeps sending while refused is
 *   dropped with TOO_MANY_FRAMES.
 * - Frames that complete synchronously (UNSUBSCRIBE, NACK, refusals, most ACKs) cost no promise:
 *   this is the path of every frame, so the drain loop only awaits work that is really async.
 * - Header lookups go through `header()` only, so the first of repeated headers wins everywhere.
 * - After close nothing is written and no handler is called except `disconnected`, once.
 *
 * Spec: https://stomp.github.io/stomp-specification-1.2.html
 */
import type { Caller } from '../../chat/caller.js';
import { ChatError } from '../../chat/chat-errors.js';
import { toProblem } from '../../chat/problem.js';
import { FrameBudget, type FrameBudgetVerdict } from '../../limits/frame-budget.js';
import { InboundBacklog, type InboundBacklogLimits } from '../../limits/inbound-backlog.js';
import { reconnectAfter } from './connection-codes.js';
import { encodeFrame, encodeMessage, HEARTBEAT_EOL, type MessagePart } from './frame-encoder.js';
import { type StompFrameDecoderLimits, StompFrameDecoder } from './frame-decoder.js';
import { header, type StompFrame } from './stomp-frame.js';

export interface StompTransport {
  /** Writes one encoded frame or heart-beat. */
  send(data: Buffer): void;
  /** Bytes accepted by send() but not yet handed to the network. */
  bufferedBytes(): number;
  /** Closes after flushing what was sent. */
  close(): void;
  /** Stops reading from the client until resume(); absent when the transport cannot (SockJS over HTTP). */
  pause?(): void;
  resume?(): void;
}

export type AckMode = 'auto' | 'client' | 'client-individual';

export interface Subscription {
  readonly id: string;
  readonly destination: string;
  readonly ack: AckMode;
}

/** What the application does with a connection's frames. Errors it throws are ChatErrors. */
export interface StompHandler {
  /** Verifies the CONNECT credentials (a bearer token): whom they name, and until when. */
  authenticate(token: string | undefined): Promise<{ readonly caller: Caller; readonly expiresAt: Date }>;
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
  /** Received frames not yet handled: when to stop reading, and when to drop the client. */
  backlog: InboundBacklogLimits;
  /** Sustained frames per second after CONNECT (DISCONNECT is free); 0 turns the budget off. */
  framesPerSecond: number;
  /** Frames a connection may send at once above its sustained rate. */
  frameBurst: number;
  /** With no client heart-beat agreed, a connection that sends nothing for this long is closed; 0 never. */
  idleTimeoutMs: number;
  /** Counts frames for metrics. */
  stats?: {
    frameIn(command: string): void;
    frameOut(command: string): void;
    /** How long a frame took from the start of its handling until it was answered, in seconds. */
    frameHandled?(command: string, seconds: number): void;
  };
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
  // Our clients send one frame at a time and wait for its outcome; 32 waiting is already a flood.
  backlog: { pauseFrames: 32, pauseBytes: 256 * 1024, maxFrames: 1024, maxBytes: 1024 * 1024 },
  // 4× what one benchmark connection sends (1,000 sends/s over 8 connections, plus acks).
  framesPerSecond: 500,
  frameBurst: 1000,
  idleTimeoutMs: 120_000,
};

/**
 * What a queued frame costs us beyond its bytes: the frame object, its header array and each
 * [name, value] pair with its strings. Rough, on purpose: a backlog limit needs the order of
 * magnitude, and packing many tiny frames must not look free.
 */
const FRAME_OVERHEAD_BYTES = 96;
const HEADER_OVERHEAD_BYTES = 64;

const SUPPORTED_VERSIONS = ['1.2', '1.1'];
let connectionCounter = 0;

export class StompConnection {
  readonly id = `c${(++connectionCounter).toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  /** Whom the connection acts for, from CONNECT on. */
  caller: Caller | undefined;
  private state: 'awaiting-connect' | 'connected' | 'closed' = 'awaiting-connect';
  private readonly decoder: StompFrameDecoder;
  private readonly subscriptions = new Map<string, Subscription>();
  /** Per client-ack subscription: ack id → token, in delivery order (for cumulative `client` ACKs). */
  private readonly pendingAcks = new Map<string, Map<string, unknown>>();
  private readonly ackOwner = new Map<string, string>();
  private readonly backlog: InboundBacklog<StompFrame>;
  private draining = false;
  private paused = false;
  private budget: FrameBudget | undefined;
  private messageCounter = 0;
  private lastReceivedAt = Date.now();
  private lastSentAt = Date.now();
  private timers: NodeJS.Timeout[] = [];
  /** Ends the connection when its token expires; replaced by `reauthenticated`. */
  private expiryTimer: NodeJS.Timeout | undefined;
  private onClosedCallbacks: Array<() => void> = [];

  constructor(
    private readonly transport: StompTransport,
    private readonly handler: StompHandler,
    private readonly options: StompConnectionOptions = DEFAULT_STOMP_OPTIONS,
    readonly transportKind: 'websocket' | 'sockjs' = 'websocket',
  ) {
    this.decoder = new StompFrameDecoder(options.limits ?? {});
    this.backlog = new InboundBacklog(options.backlog);
    this.addTimer(setTimeout(() => {
      if (this.state === 'awaiting-connect') this.fail(new ChatError('CONNECT_TIMEOUT', 'no CONNECT frame within the connect timeout'));
    }, options.connectTimeoutMs));
  }

  get isOpen(): boolean {
    return this.state !== 'closed';
  }

  onClosed(callback: () => void): void {
    this.onClosedCallbacks.push(callback);
  }

  /** Feeds bytes from the transport. */
  receive(data: Buffer | string): void {
    if (this.state === 'closed') return;
    this.lastReceivedAt = Date.now();
    const events = this.decoder.push(data);
    for (let i = 0; i < events.length; i++) {
      const event = events[i]!;
      if (event.kind === 'heartbeat') continue;
      if (event.kind === 'error') {
        this.fail(new ChatError(event.code, event.message));
        return;
      }
      const frame = event.frame;
      this.options.stats?.frameIn(frame.command);
      this.backlog.push(frame, frameCost(frame));
      if (this.backlog.overflowing) {
        const { maxFrames, maxBytes } = this.options.backlog;
        this.fail(new ChatError('TOO_MANY_FRAMES', `more than ${maxFrames} frames or ${maxBytes} bytes sent ahead of their handling`));
        return;
      }
    }
    if (!this.paused && this.transport.pause && this.backlog.abovePauseMark) {
      this.paused = true;
      this.transport.pause();
    }
    if (!this.draining && this.backlog.length > 0) void this.drain();
  }

  /** The transport closed underneath us. */
  transportClosed(): void {
    this.terminate();
  }

  /** Writes a MESSAGE for a subscription; `token` comes back in `acked` when the client ACKs it. */
  deliver(sub: Subscription, message: MessagePart, token?: unknown): void {
    if (this.state !== 'connected' || this.subscriptions.get(sub.id) !== sub) return;
    const messageId = `${this.id}-${++this.messageCounter}`;
    const own: Array<readonly [string, string]> = [
      ['subscription', sub.id],
      ['message-id', messageId],
      ['destination', sub.destination],
    ];
    if (sub.ack !== 'auto') {
      own.push(['ack', messageId]);
      const pending = this.pendingAcks.get(sub.id)!;
      if (pending.size >= this.options.maxPendingAcks) {
        const oldest = pending.keys().next().value!;
        pending.delete(oldest);
        this.ackOwner.delete(oldest);
      }
      pending.set(messageId, token);
      this.ackOwner.set(messageId, sub.id);
    }
    this.write(encodeMessage(own, message), false, 'MESSAGE');
  }

  /**
   * Sends an ERROR frame and closes: the end of a connection, as STOMP requires after ERROR. Its
   * `code` and `reconnect` headers tell the client what to do (connection-codes.ts); the body is
   * the error's problem. Anything but a ChatError is our bug, told to `onInternalError` and shown
   * to the client as INTERNAL only.
   */
  fail(err: unknown, receipt?: string): void {
    if (this.state === 'closed') return;
    const problem = toProblem(err);
    if (problem.code === 'INTERNAL') this.options.onInternalError?.(err instanceof ChatError && err.cause !== undefined ? err.cause : err);
    const headers: Array<readonly [string, string]> = [
      ['message', `${problem.code}: ${problem.detail}`],
      ['code', problem.code],
      ['reconnect', String(reconnectAfter(problem.code))],
      ['content-type', 'application/json'],
    ];
    if (receipt) headers.push(['receipt-id', receipt]);
    // `message` repeats the detail for clients of the first body shape, `{code, message}`.
    const body = Buffer.from(JSON.stringify({ ...problem, message: problem.detail }));
    this.write(encodeFrame({ command: 'ERROR', headers, body }), true, 'ERROR');
    this.terminate();
  }

  /**
   * The one consumer of the backlog: handles frames in arrival order, awaiting only work that is
   * really async. A frame is taken off the backlog before it is handled, so the backlog counts
   * what is waiting, and reading resumes as soon as enough of it is done.
   */
  private async drain(): Promise<void> {
    this.draining = true;
    try {
      for (let frame = this.backlog.shift(); frame !== undefined && this.state !== 'closed'; frame = this.backlog.shift()) {
        if (this.paused && this.backlog.belowResumeMark) this.resumeReading();
        if (this.state === 'awaiting-connect') {
          if (frame.command === 'CONNECT' || frame.command === 'STOMP') await this.connect(frame);
          else this.fail(new ChatError('NOT_CONNECTED', 'the first frame must be CONNECT'), header(frame, 'receipt'));
          continue;
        }
        const started = performance.now();
        const pending = this.handle(frame);
        if (pending === undefined) {
          this.options.stats?.frameHandled?.(frame.command, (performance.now() - started) / 1000);
          continue;
        }
        let failed = false;
        let failure: unknown;
        try {
          await pending;
        } catch (err) {
          failed = true;
          failure = err;
        }
        this.settle(frame, failed, failure);
        this.options.stats?.frameHandled?.(frame.command, (performance.now() - started) / 1000);
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.draining = false;
    }
  }

  /** Handles one frame after CONNECT: returns the work still running, or undefined once the frame is answered. */
  private handle(frame: StompFrame): Promise<void> | undefined {
    if (this.budget !== undefined && frame.command !== 'DISCONNECT') {
      const verdict = this.budget.take(performance.now());
      if (verdict !== 'ok') {
        this.refuseOverBudget(frame, verdict);
        return undefined;
      }
    }
    let pending: Promise<void> | undefined;
    try {
      switch (frame.command) {
        case 'CONNECT':
        case 'STOMP':
          this.fail(new ChatError('ALREADY_CONNECTED', 'already connected'), header(frame, 'receipt'));
          return undefined;
        case 'SUBSCRIBE':
          pending = this.subscribe(frame);
          break;
        case 'UNSUBSCRIBE':
          this.unsubscribe(frame);
          break;
        case 'SEND':
          pending = this.send(frame);
          break;
        case 'ACK':
        case 'NACK':
          pending = this.ack(frame);
          break;
        case 'DISCONNECT': {
          const receipt = header(frame, 'receipt');
          if (receipt) this.writeReceipt(receipt);
          this.terminate();
          return undefined;
        }
        case 'BEGIN':
        case 'COMMIT':
        case 'ABORT':
          this.fail(new ChatError('UNSUPPORTED', 'transactions are not supported'), header(frame, 'receipt'));
          return undefined;
        default:
          this.fail(new ChatError('UNKNOWN_COMMAND', `unexpected ${frame.command} frame`), header(frame, 'receipt'));
          return undefined;
      }
    } catch (err) {
      this.settle(frame, true, err);
      return undefined;
    }
    if (pending !== undefined) return pending;
    this.settle(frame, false, undefined);
    return undefined;
  }

  /** Answers a handled frame: its RECEIPT, or its refusal. A failure that is not a ChatError is our bug and propagates. */
  private settle(frame: StompFrame, failed: boolean, err: unknown): void {
    const receipt = header(frame, 'receipt');
    if (!failed) {
      if (receipt && this.isOpen) this.writeReceipt(receipt);
      return;
    }
    if (!(err instanceof ChatError)) throw err;
    const clientMessageId = err.extra?.clientMessageId as string | undefined;
    if (this.handler.reportError(this, err, { clientMessageId, receipt })) {
      // The error went to /user/queue/error; a RECEIPT still confirms the frame was processed.
      if (receipt && this.isOpen) this.writeReceipt(receipt);
    } else {
      this.fail(err, receipt);
    }
  }

  private refuseOverBudget(frame: StompFrame, verdict: Exclude<FrameBudgetVerdict, 'ok'>): void {
    const budget = this.budget!;
    if (verdict === 'exhausted') {
      this.fail(new ChatError('TOO_MANY_FRAMES', `kept sending over the budget of ${budget.perSecond} frames per second`), header(frame, 'receipt'));
      return;
    }
    const retryAfterSeconds = budget.secondsUntilAvailable();
    // The body is the handler's to parse; a header is all a refusal may cheaply look at.
    const clientMessageId = frame.command === 'SEND' ? header(frame, 'client-message-id') : undefined;
    const detail = `at most ${budget.perSecond} frames per second (bursts of ${budget.burst}) per connection; retry in ${retryAfterSeconds} s`;
    this.settle(frame, true, new ChatError('RATE_LIMITED', detail, clientMessageId ? { retryAfterSeconds, clientMessageId } : { retryAfterSeconds }));
  }

  private resumeReading(): void {
    this.paused = false;
    // We stopped listening, the client did not stop talking: its silence clock starts now.
    this.lastReceivedAt = Date.now();
    this.transport.resume?.();
  }

  /** Frames we hold or are handling: the client is not silent even if we have not read it lately. */
  private get busy(): boolean {
    return this.draining || this.backlog.length > 0;
  }

  private async connect(frame: StompFrame): Promise<void> {
    const receipt = header(frame, 'receipt');
    const accepted = (header(frame, 'accept-version') ?? '1.0').split(',').map((v) => v.trim());
    const version = SUPPORTED_VERSIONS.find((v) => accepted.includes(v));
    if (!version) {
      this.fail(new ChatError('UNSUPPORTED_VERSION', `supported versions are ${SUPPORTED_VERSIONS.join(',')}`), receipt);
      return;
    }
    const authorization = header(frame, 'Authorization') ?? header(frame, 'authorization');
    const bearer = authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization)?.[1] : undefined;
    const token = bearer ?? header(frame, 'passcode');
    let verified: { readonly caller: Caller; readonly expiresAt: Date };
    try {
      verified = await this.handler.authenticate(token);
    } catch (err) {
      // Whatever went wrong, the client learns only that its credentials did not get it in.
      this.fail(new ChatError('UNAUTHENTICATED', err instanceof ChatError ? err.message : 'authentication failed', undefined, { cause: err }), receipt);
      return;
    }
    if (this.state === 'closed') return;
    this.caller = verified.caller;

    const [clientSends, clientWants] = parseHeartBeat(header(frame, 'heart-beat'));
    const sendEvery = clientWants > 0 && this.options.heartbeatSendMs > 0 ? Math.max(clientWants, this.options.heartbeatSendMs) : 0;
    const expectEvery = clientSends > 0 && this.options.heartbeatReceiveMs > 0 ? Math.max(clientSends, this.options.heartbeatReceiveMs) : 0;

    try {
      await this.handler.connected(this);
    } catch (err) {
      this.fail(err instanceof ChatError ? err : new ChatError('INTERNAL', 'could not register the connection', undefined, { cause: err }), receipt);
      return;
    }
    if (!this.isOpen) return;
    this.state = 'connected';
    this.clearTimers();
    if (this.options.framesPerSecond > 0) this.budget = new FrameBudget(this.options.framesPerSecond, this.options.frameBurst, performance.now());
    this.write(
      encodeFrame({
        command: 'CONNECTED',
        headers: [
          ['version', version],
          ['heart-beat', `${this.options.heartbeatSendMs},${this.options.heartbeatReceiveMs}`],
          ['server', 'chat-service/1'],
          ['session', this.id],
          ['user-name', verified.caller.email],
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
        if (!this.busy && Date.now() - this.lastReceivedAt > deadline) this.fail(new ChatError('HEARTBEAT_TIMEOUT', 'no data or heart-beat from the client in time'));
      }, Math.max(50, Math.floor(expectEvery / 2))));
    } else if (this.options.idleTimeoutMs > 0) {
      // heart-beat:0,… means "I will not prove I am alive": without this, a silent client holds its socket forever.
      const idle = this.options.idleTimeoutMs;
      this.addTimer(setInterval(() => {
        if (!this.busy && Date.now() - this.lastReceivedAt > idle) {
          this.fail(new ChatError('IDLE_TIMEOUT', `nothing received for ${idle} ms and no heart-beats agreed; send heart-beats or reconnect`));
        }
      }, Math.max(50, Math.floor(idle / 4))));
    }
    this.expireAt(verified.expiresAt);
  }

  /**
   * A fresh token for the same user (SEND /app/auth.refresh): the connection now lives until it
   * expires instead. The handler has verified it and checked that it names `caller`'s user.
   */
  reauthenticated(caller: Caller, expiresAt: Date): void {
    if (this.state !== 'connected') return;
    this.caller = caller;
    this.expireAt(expiresAt);
  }

  private expireAt(expiresAt: Date): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    const ttl = expiresAt.getTime() - Date.now();
    // setTimeout takes at most ~24.8 days; a longer token simply outlives the timer's reach.
    if (ttl >= 2 ** 31 - 1) return;
    this.expiryTimer = setTimeout(() => this.fail(new ChatError('TOKEN_EXPIRED', 'the token has expired; refresh it (SEND /app/auth.refresh) before it does, or reconnect with a fresh one')), Math.max(0, ttl));
    this.expiryTimer.unref();
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

  private send(frame: StompFrame): Promise<void> {
    const destination = header(frame, 'destination');
    if (!destination) throw new ChatError('VALIDATION_FAILED', 'SEND needs a destination header');
    return this.handler.send(this, destination, frame);
  }

  private ack(frame: StompFrame): Promise<void> | undefined {
    const id = header(frame, 'id') ?? header(frame, 'message-id');
    if (!id) throw new ChatError('VALIDATION_FAILED', `${frame.command} needs an id header`);
    const subId = this.ackOwner.get(id);
    if (subId === undefined) return undefined; // already acknowledged (cumulatively) or forgotten: nothing to do
    const sub = this.subscriptions.get(subId);
    const pending = this.pendingAcks.get(subId);
    if (!sub || !pending) return undefined;
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
    return frame.command === 'ACK' ? this.handler.acked(this, sub, tokens.filter((t) => t !== undefined)) : undefined;
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
      this.fail(new ChatError('SLOW_CONSUMER', 'the client is not reading fast enough'));
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
    this.backlog.clear();
    // A paused transport would never read the client's close frame, and linger until the close timeout.
    if (this.paused) this.resumeReading();
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
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
  }
}

function frameCost(frame: StompFrame): number {
  let bytes = FRAME_OVERHEAD_BYTES + frame.command.length + frame.body.length;
  const headers = frame.headers;
  for (let i = 0; i < headers.length; i++) bytes += HEADER_OVERHEAD_BYTES + headers[i]![0].length + headers[i]![1].length;
  return bytes;
}

function parseHeartBeat(value: string | undefined): [number, number] {
  const match = value ? /^\s*(\d{1,9})\s*,\s*(\d{1,9})\s*$/.exec(value) : null;
  return match ? [Number(match[1]), Number(match[2])] : [0, 0];
}
