/**
 * SendQueue over RabbitMQ: the durable quorum queue `chat.send.queue` that holds the sends the send
 * path could not store when they were accepted (the store unreachable, or an unexpected failure),
 * until they can be stored, on any instance (docs/adr/0010).
 *
 * Topology (declared on start and on every channel set-up; declarations are idempotent):
 * - `chat.send.queue`: quorum, `x-delivery-limit` (default 10), dead-lettered at least once
 *   (`x-dead-letter-strategy: at-least-once`, which RabbitMQ accepts only with
 *   `x-overflow: reject-publish`) through the default exchange to `chat.send.dead`, and single
 *   active consumer (below);
 * - `chat.send.dead`: quorum, where sends end that can never be stored, with their error.
 *
 * Enqueueing: publish `{caller, request}` persistent, `mandatory` and confirmed. It resolves only on
 * the broker's confirm and only if the message was routed (an unroutable publish is confirmed too,
 * after a basic.return: that is an error here, never a silent success).
 *
 * Consuming (every instance subscribes; prefetch bounds the sends in flight):
 * - Order: a session's sends must be stored in the order they were queued. Competing consumers
 *   would commit neighbours concurrently and invert them, so the queue has a single active consumer
 *   (RabbitMQ fails over to another instance's consumer when it goes), which stores each session's
 *   sends one after another while group-committing across sessions. The queue carries only spilled
 *   sends, so one consumer is no throughput limit: normal sends never touch it.
 * - `handlers.store`, then ack only after it resolved. An outage rejection (a 503 ChatError) keeps
 *   the message unacked and retries in-process with capped backoff until it goes through. Never
 *   nack-requeue: quorum queues count every return toward the delivery limit, so an outage would
 *   dead-letter good sends.
 * - Any other rejection: retried `maxAttempts` times, then published to the dead-letter queue with
 *   the error in `x-chat-error*` headers, `handlers.dead` told, and acked; if even that publish
 *   fails, nack without requeue lets the broker dead-letter it (`x-death`, reason `rejected`). A
 *   send that kills its consumer every time is dead-lettered by the broker once the delivery limit
 *   is reached (`x-death` reason `delivery_limit`).
 * - A message is acked or nacked only on the channel it came on. When that channel goes (connection
 *   lost), its handlers give up at their next step and the broker redelivers: storing is
 *   idempotent, so a redelivery after a commit whose ack was lost stores nothing new.
 *
 * Lifecycle: construct (no I/O) → `consume(handlers)` → `start()` connects, declares, consumes
 * (rejects after `startTimeoutMs`, releasing everything) → `stop()` cancels the consumer, stops
 * retry loops, waits (bounded) for handlers in flight, closes the channels and the connection.
 * Unacked messages go back to the queue for the other instances. Idempotent.
 *
 * Must never happen: `enqueue` resolving for a send the broker did not take; an ack before the
 * store; a tight redelivery loop; a send lost because PostgreSQL or RabbitMQ was away for a while.
 */
import { randomUUID } from 'node:crypto';
import type { AsyncMessage, Channel, Connection, Publisher, ReturnedMessage, SyncMessage } from 'rabbitmq-client';
import { ChatError } from '../chat/chat-errors.js';
import type { DeadSendView, QueuedSend, SendQueue, SendQueueHandlers } from '../chat/ports.js';
import { closeAmqpConnection, openAmqpConnection, type AmqpConnectionOptions } from '../amqp/amqp-connection.js';
import { decodeJsonBody } from '../amqp/json-body.js';
import { silentLogger, type AdapterLogger } from '../common/adapter-logger.js';
import { backoffMs, type Backoff } from '../common/backoff.js';
import { withTimeout } from '../common/timeout.js';
import { isOutage, RetryPauses } from './send-queue-retry.js';

export interface RabbitMqSendQueueOptions extends Pick<AmqpConnectionOptions, 'url' | 'heartbeatSec' | 'connectionTimeoutMs'> {
  /** Names the AMQP connection `chat.send-queue.{instanceId}` (visible in rabbitmqctl). */
  instanceId?: string;
  /** The send queue. Default `chat.send.queue`; tests use their own. */
  queue?: string;
  /** The dead-letter queue. Default: see deadLetterQueueOf (`chat.send.dead`). */
  deadLetterQueue?: string;
  /** Deliveries after which the broker dead-letters a message. Default 10. */
  deliveryLimit?: number;
  /** Sends being stored at once by the active consumer (unacked deliveries). Default 64. */
  prefetch?: number;
  /** Attempts, per delivery, at a send that fails unexpectedly before it is dead-lettered. Default 3. */
  maxAttempts?: number;
  /** First and longest pause between in-process retries. Defaults 100 ms and 5 s. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** How long `enqueue` waits for the confirm. Default 5 s. */
  publishTimeoutMs?: number;
  /** How long `start` waits for the broker. Default 15 s. */
  startTimeoutMs?: number;
  /** How long `stop` waits for handlers in flight and a graceful close. Default 5 s. */
  closeTimeoutMs?: number;
  logger?: AdapterLogger;
}

/** `chat.send.queue` → `chat.send.dead` (README, `SEND_QUEUE`); any other name gets `.dead` appended. */
function deadLetterQueueOf(sendQueue: string): string {
  return sendQueue.endsWith('.queue') ? `${sendQueue.slice(0, -'.queue'.length)}.dead` : `${sendQueue}.dead`;
}

/** Between attempts at setting the consumer up while the connection is there but the set-up fails. */
const SETUP_BACKOFF: Backoff = { initialMs: 400, maxMs: 5_000 };

class QueueStoppedError extends Error {
  constructor() {
    super('RabbitMqSendQueue: stopped');
  }
}

export class RabbitMqSendQueue implements SendQueue {
  readonly queue: string;
  readonly deadLetterQueue: string;
  readonly connectionName: string;
  private readonly deps: RabbitMqSendQueueOptions;
  private handlers: SendQueueHandlers | undefined;
  private readonly log: AdapterLogger;
  private readonly deliveryLimit: number;
  private readonly prefetch: number;
  private readonly maxAttempts: number;
  private readonly retryBackoff: Backoff;
  private readonly publishTimeoutMs: number;
  private readonly startTimeoutMs: number;
  private readonly closeTimeoutMs: number;

  private connection: Connection | undefined;
  private publisher: Publisher | undefined;
  /** Publishes waiting for their confirm, by messageId: set when the broker returned them. */
  private readonly unconfirmed = new Map<string, { returned: boolean }>();
  private channel: Channel | undefined;
  private consumerTag: string | undefined;
  private consumerReady = false;
  private setupTimer: NodeJS.Timeout | undefined;
  private setupFailures = 0;
  private lastSetupError: unknown;
  private settingUp = false;
  /** Logged once per outage, not once per held message. */
  private waitingForOutage = false;
  private readonly inFlight = new Set<Promise<void>>();
  /** The last handling queued per session; see inSessionOrder. */
  private readonly sessionTails = new Map<string, Promise<void>>();
  private readonly pauses = new RetryPauses();
  private readyWaiters: Array<() => void> = [];
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(deps: RabbitMqSendQueueOptions) {
    this.deps = deps;
    this.log = deps.logger ?? silentLogger;
    this.queue = deps.queue ?? 'chat.send.queue';
    this.deadLetterQueue = deps.deadLetterQueue ?? deadLetterQueueOf(this.queue);
    this.connectionName = `chat.send-queue.${deps.instanceId ?? randomUUID()}`;
    this.deliveryLimit = deps.deliveryLimit ?? 10;
    this.prefetch = deps.prefetch ?? 64;
    this.maxAttempts = deps.maxAttempts ?? 3;
    this.retryBackoff = { initialMs: deps.retryMinMs ?? 100, maxMs: deps.retryMaxMs ?? 5_000 };
    this.publishTimeoutMs = deps.publishTimeoutMs ?? 5_000;
    this.startTimeoutMs = deps.startTimeoutMs ?? 15_000;
    this.closeTimeoutMs = deps.closeTimeoutMs ?? 5_000;
  }

  consume(handlers: SendQueueHandlers): void {
    this.handlers = handlers;
  }

  start(): Promise<void> {
    if (this.stopping) return Promise.reject(new QueueStoppedError());
    if (!this.handlers) return Promise.reject(new Error('RabbitMqSendQueue: consume() before start()'));
    this.starting ??= this.open();
    return this.starting;
  }

  stop(): Promise<void> {
    this.stopping ??= this.close();
    return this.stopping;
  }

  /** Connected, and consuming from the send queue. */
  isHealthy(): boolean {
    return !this.stopping && this.consumerReady && this.connection?.ready === true;
  }

  async depth(): Promise<number | undefined> {
    const connection = this.connection;
    if (!connection?.ready || this.stopping) return undefined;
    try {
      // Passive: asks about the queue without declaring it, so it cannot create or alter it.
      const ok = await withTimeout(connection.queueDeclare({ queue: this.queue, passive: true }), 2_000, () => new Error('queue depth: no answer'));
      return ok.messageCount;
    } catch {
      return undefined;
    }
  }

  /**
   * Looks at the dead letters with basic.get, unacknowledged, on a channel of its own, and closes
   * it: the broker puts them all back. Nothing is taken out.
   */
  async listDead(limit: number): Promise<DeadSendView[]> {
    const ch = await this.adminChannel();
    try {
      const views: DeadSendView[] = [];
      while (views.length < limit) {
        const msg = await ch.basicGet({ queue: this.deadLetterQueue, noAck: false });
        if (!msg) break;
        views.push(deadSendViewOf(msg));
      }
      return views;
    } finally {
      await ch.close().catch(() => undefined);
    }
  }

  /**
   * Takes dead letters one at a time and enqueues each again, acking it only after the broker
   * confirmed the new copy: a failure leaves it (and the rest) dead, at worst with a copy queued
   * too, which storing idempotently makes harmless.
   */
  async replayDead(limit: number): Promise<number> {
    const ch = await this.adminChannel();
    let moved = 0;
    try {
      while (moved < limit) {
        const msg = await ch.basicGet({ queue: this.deadLetterQueue, noAck: false });
        if (!msg) break;
        const headers = Object.fromEntries(Object.entries(msg.headers ?? {}).filter(([name]) => !name.startsWith('x-chat-') && name !== 'x-death'));
        await this.publish(this.queue, bodyBuffer(msg.body), { ...headers, 'x-chat-replayed-by': this.connectionName });
        ch.basicAck({ deliveryTag: msg.deliveryTag });
        moved += 1;
      }
      return moved;
    } finally {
      await ch.close().catch(() => undefined);
    }
  }

  private async adminChannel(): Promise<Channel> {
    const connection = this.connection;
    if (this.stopping || !connection?.ready) throw new ChatError('BUS_UNAVAILABLE', 'RabbitMQ is not connected');
    return connection.acquire();
  }

  /** Queues the send durably; resolves once the broker confirmed the routed message. */
  async enqueue(send: QueuedSend): Promise<void> {
    try {
      await this.publish(this.queue, Buffer.from(JSON.stringify(send), 'utf8'), { 'x-chat-accepted-by': this.connectionName });
    } catch (err) {
      this.log.warn({ err, queue: this.queue }, 'send could not be queued');
      throw err;
    }
  }

  // --- lifecycle ---------------------------------------------------------------------------------

  private async open(): Promise<void> {
    const { url, heartbeatSec, connectionTimeoutMs } = this.deps;
    const connection = openAmqpConnection({
      url,
      heartbeatSec,
      connectionTimeoutMs,
      connectionName: this.connectionName,
      logger: this.log,
      onConnection: () => {
        // The consumer channel died with the old connection; set it up again at once, not after a
        // backoff step that was scheduled while the broker was away.
        if (!this.consumerReady) {
          clearTimeout(this.setupTimer);
          this.setupTimer = undefined;
          this.scheduleSetup(0);
        }
      },
    });
    this.connection = connection;

    this.publisher = connection.createPublisher({ confirm: true, maxAttempts: 1, queues: this.declarations() });
    this.publisher.on('basic.return', (msg: ReturnedMessage) => {
      const pending = typeof msg.messageId === 'string' ? this.unconfirmed.get(msg.messageId) : undefined;
      if (pending) pending.returned = true;
    });

    const ready = new Promise<void>((resolve) => this.readyWaiters.push(resolve));
    this.scheduleSetup(0);
    try {
      await withTimeout(ready, this.startTimeoutMs, () => {
        const reason = this.lastSetupError instanceof Error ? `: ${this.lastSetupError.message}` : '';
        return new Error(`RabbitMQ send queue ${this.queue} not ready within ${this.startTimeoutMs} ms (AMQP_URL)${reason}`);
      });
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.log.info({ queue: this.queue, deadLetterQueue: this.deadLetterQueue, prefetch: this.prefetch }, 'rabbitmq send queue started');
  }

  private async close(): Promise<void> {
    clearTimeout(this.setupTimer);
    this.consumerReady = false;
    this.pauses.wakeAll();
    const { connection, channel, consumerTag, publisher } = this;
    if (!connection) return;
    const graceful = (async () => {
      // No new deliveries first; then let the handlers in flight finish (they stop retrying now),
      // so none is cut between its commit and its ack; then close what is left.
      if (channel?.active && consumerTag) await channel.basicCancel({ consumerTag }).catch(() => undefined);
      await Promise.allSettled([...this.inFlight]);
      await channel?.close();
      await publisher?.close();
      await connection.close();
    })();
    await closeAmqpConnection(connection, graceful, this.closeTimeoutMs, this.log);
    this.log.info({ queue: this.queue }, 'rabbitmq send queue stopped');
  }

  private declarations(): Array<{ queue: string; durable: boolean; arguments: Record<string, unknown> }> {
    return [
      { queue: this.deadLetterQueue, durable: true, arguments: { 'x-queue-type': 'quorum' } },
      {
        queue: this.queue,
        durable: true,
        arguments: {
          'x-queue-type': 'quorum',
          'x-delivery-limit': this.deliveryLimit,
          'x-dead-letter-exchange': '',
          'x-dead-letter-routing-key': this.deadLetterQueue,
          'x-dead-letter-strategy': 'at-least-once',
          'x-overflow': 'reject-publish',
          // One consumer at a time takes the queue (another takes over when it goes): sends leave
          // the queue in the order they were accepted, which per-session serialisation then keeps.
          'x-single-active-consumer': true,
        },
      },
    ];
  }

  private scheduleSetup(delayMs: number): void {
    if (this.stopping || this.setupTimer || this.settingUp) return;
    this.setupTimer = setTimeout(() => {
      this.setupTimer = undefined;
      void this.setupConsumer();
    }, delayMs);
  }

  /** Opens a channel, declares the topology and consumes; on failure, tries again with backoff. */
  private async setupConsumer(): Promise<void> {
    const connection = this.connection;
    if (!connection || this.stopping || this.consumerReady || this.settingUp) return;
    this.settingUp = true;
    let ch: Channel | undefined;
    try {
      ch = await connection.acquire({ emitErrorsFromChannel: true });
      const current = ch;
      ch.on('error', (err: unknown) => this.log.warn({ err, queue: this.queue }, 'rabbitmq send queue channel error'));
      ch.once('close', () => this.channelClosed(current));
      for (const declaration of this.declarations()) await ch.queueDeclare(declaration);
      await ch.basicQos({ prefetchCount: this.prefetch });
      const { consumerTag } = await ch.basicConsume({ queue: this.queue }, (msg) => this.track(this.inSessionOrder(current, msg)));
      // The server cancels the consumer when the queue is deleted: start over on a new channel.
      ch.once('basic.cancel', () => {
        this.log.warn({ queue: this.queue }, 'send queue consumer cancelled by the broker, setting up again');
        void current.close();
      });
      if (this.stopping) {
        await ch.close();
        return;
      }
      this.channel = ch;
      this.consumerTag = consumerTag;
      this.consumerReady = true;
      this.setupFailures = 0;
      this.lastSetupError = undefined;
      this.log.debug({ queue: this.queue }, 'send queue consumer ready');
      const waiters = this.readyWaiters;
      this.readyWaiters = [];
      for (const resolve of waiters) resolve();
    } catch (err) {
      this.setupFailures += 1;
      this.lastSetupError = err;
      if (this.setupFailures <= 1) this.log.warn({ err, queue: this.queue }, 'send queue consumer set-up failed, retrying');
      else this.log.debug({ err, queue: this.queue }, 'send queue consumer set-up failed again');
      await ch?.close().catch(() => undefined);
      this.settingUp = false;
      this.scheduleSetup(backoffMs(this.setupFailures, SETUP_BACKOFF));
    } finally {
      this.settingUp = false;
    }
  }

  private channelClosed(ch: Channel): void {
    if (this.channel !== ch) return;
    this.channel = undefined;
    this.consumerTag = undefined;
    this.consumerReady = false;
    // A closed channel on a live connection (server closed it, queue deleted) comes back here; a
    // lost connection comes back on its 'connection' event.
    if (this.connection?.ready) this.scheduleSetup(200);
  }

  /**
   * Handles a delivery after every earlier delivery of the same session: a session's messages are
   * stored (and get their seqs) in the order they were queued, also while one of them waits out an
   * outage. Different sessions proceed concurrently (and are group-committed together).
   */
  private inSessionOrder(ch: Channel, msg: AsyncMessage): Promise<void> {
    const send = parseQueuedSend(msg.body);
    const key = typeof send?.request.sessionId === 'string' ? send.request.sessionId : '';
    const previous = this.sessionTails.get(key);
    const handling = previous ? previous.then(() => this.handle(ch, msg, send)) : this.handle(ch, msg, send);
    const tail = handling.catch(() => undefined);
    this.sessionTails.set(key, tail);
    void tail.finally(() => {
      if (this.sessionTails.get(key) === tail) this.sessionTails.delete(key);
    });
    return handling;
  }

  private track(handling: Promise<void>): void {
    this.inFlight.add(handling);
    void handling.finally(() => this.inFlight.delete(handling));
  }

  // --- consuming ---------------------------------------------------------------------------------

  private async handle(ch: Channel, msg: AsyncMessage, send: QueuedSend | undefined): Promise<void> {
    if (!send) {
      await this.deadLetter(ch, msg, new Error('malformed send: expected a JSON {caller, request}'), 1, undefined);
      return;
    }
    const handlers = this.handlers!;
    const clientMessageId = typeof send.request.clientMessageId === 'string' ? send.request.clientMessageId : undefined;
    let outages = 0;
    let failures = 0;
    for (;;) {
      // The channel is gone: this delivery can no longer be acked; the broker redelivers it.
      if (!ch.active || this.stopping) return;
      try {
        await handlers.store(send);
      } catch (err) {
        if (isOutage(err)) {
          // Keep the message and wait: the outage is not the message's fault.
          if (!this.waitingForOutage) this.log.warn({ err, clientMessageId }, 'queued send not stored: outage; holding queued sends until it is over');
          else if (outages === 0) this.log.debug({ err, clientMessageId }, 'queued send not stored: outage');
          this.waitingForOutage = true;
          outages += 1;
          await this.pauses.sleep(backoffMs(outages, this.retryBackoff));
          continue;
        }
        failures += 1;
        if (failures >= this.maxAttempts) {
          await this.deadLetter(ch, msg, err, failures, send);
          return;
        }
        this.log.warn({ err, clientMessageId, attempt: failures }, 'storing a queued send failed unexpectedly, retrying');
        await this.pauses.sleep(backoffMs(failures, this.retryBackoff));
        continue;
      }
      if (this.waitingForOutage) {
        this.waitingForOutage = false;
        this.log.info({ queue: this.queue }, 'queued sends are being stored again');
      }
      this.settle(ch, msg, 'ack');
      return;
    }
  }

  /** Moves a message that can never be stored to the dead-letter queue, with its error. */
  private async deadLetter(ch: Channel, msg: AsyncMessage, err: unknown, attempts: number, send: QueuedSend | undefined): Promise<void> {
    if (!ch.active || this.stopping) return;
    const error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    this.log.error({ err, queue: this.queue, deadLetterQueue: this.deadLetterQueue, attempts }, 'send dead-lettered: it cannot be stored');
    const body = bodyBuffer(msg.body);
    try {
      await this.publish(this.deadLetterQueue, body, {
        ...(msg.headers ?? {}),
        'x-chat-error': error.slice(0, 2000),
        ...(err instanceof ChatError ? { 'x-chat-error-code': err.code } : {}),
        'x-chat-attempts': attempts,
        'x-chat-failed-by': this.connectionName,
        'x-chat-failed-at': new Date().toISOString(),
        'x-chat-original-queue': this.queue,
      });
      this.settle(ch, msg, 'ack');
      if (send) await this.reportDead(send, error);
    } catch (publishErr) {
      // The broker dead-letters it instead (at least once), with x-death naming the reason.
      this.log.warn({ err: publishErr }, 'dead-letter publish failed, rejecting the message to the broker dead-letter exchange');
      this.settle(ch, msg, 'reject');
      if (send) await this.reportDead(send, error);
    }
  }

  private async reportDead(send: QueuedSend, error: string): Promise<void> {
    try {
      await this.handlers!.dead(send, error);
    } catch (err) {
      this.log.warn({ err }, 'could not report a dead send');
    }
  }

  private settle(ch: Channel, msg: AsyncMessage, how: 'ack' | 'reject'): void {
    try {
      if (how === 'ack') ch.basicAck({ deliveryTag: msg.deliveryTag });
      else ch.basicNack({ deliveryTag: msg.deliveryTag, requeue: false });
    } catch (err) {
      // The channel closed after the work was done: the broker redelivers, and storing is idempotent.
      this.log.debug({ err }, 'could not settle a send queue delivery; it will be redelivered');
    }
  }

  // --- publishing --------------------------------------------------------------------------------

  /** Publishes to `queue` through the default exchange; resolves on a confirm of a routed message. */
  private async publish(queue: string, body: Buffer, headers: Record<string, unknown>): Promise<void> {
    const publisher = this.publisher;
    if (this.stopping || !publisher) throw new QueueStoppedError();
    // Reconnecting: fail now rather than after the publish timeout.
    if (!this.connection?.ready) throw new Error('RabbitMQ is not connected');
    const messageId = randomUUID();
    const pending = { returned: false };
    this.unconfirmed.set(messageId, pending);
    try {
      const sent = publisher.send(
        { exchange: '', routingKey: queue, mandatory: true, durable: true, messageId, contentType: 'application/json', headers },
        body,
      );
      await withTimeout(sent, this.publishTimeoutMs, () => new Error(`RabbitMQ did not confirm the publish within ${this.publishTimeoutMs} ms`));
      // basic.return precedes the confirm on the wire, but the client emits it on a later
      // macrotask than it resolves the confirm: let it run before looking.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (pending.returned) throw new Error(`RabbitMQ returned the message as unroutable: queue ${queue} does not exist`);
    } finally {
      this.unconfirmed.delete(messageId);
    }
  }

}

function bodyBuffer(body: unknown): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body), 'utf8');
}

/** What a dead letter says about itself: our x-chat-* headers, or the broker's x-death when it dead-lettered it. */
function deadSendViewOf(msg: SyncMessage): DeadSendView {
  const send = parseQueuedSend(msg.body);
  const headers = msg.headers ?? {};
  const death = Array.isArray(headers['x-death']) ? (headers['x-death'][0] as { reason?: unknown; time?: unknown; count?: unknown } | undefined) : undefined;
  const text = (value: unknown): string | null => (typeof value === 'string' ? value : null);
  const failedAt = text(headers['x-chat-failed-at']);
  const deathTime = death?.time instanceof Date ? death.time : typeof death?.time === 'number' ? new Date(death.time * 1000) : null;
  return {
    id: typeof msg.messageId === 'string' ? msg.messageId : String(msg.deliveryTag),
    senderEmail: send?.caller.email ?? null,
    sessionId: text(send?.request.sessionId),
    clientMessageId: text(send?.request.clientMessageId),
    error: text(headers['x-chat-error']) ?? (death ? `dead-lettered by the broker: ${String(death.reason)}` : null),
    attempts: typeof headers['x-chat-attempts'] === 'number' ? headers['x-chat-attempts'] : typeof death?.count === 'number' ? death.count : null,
    deadAt: failedAt ? new Date(failedAt) : deathTime,
  };
}

function parseQueuedSend(body: unknown): QueuedSend | undefined {
  const value = decodeJsonBody(body);
  if (typeof value !== 'object' || value === null) return undefined;
  const { caller, request } = value as { caller?: unknown; request?: unknown };
  if (typeof caller !== 'object' || caller === null || typeof (caller as { email?: unknown }).email !== 'string') return undefined;
  if (typeof request !== 'object' || request === null) return undefined;
  const { email, displayName } = caller as { email: string; displayName?: unknown };
  return {
    caller: { email, ...(typeof displayName === 'string' ? { displayName } : {}) },
    request: request as QueuedSend['request'],
  };
}
