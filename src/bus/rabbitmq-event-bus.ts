/**
 * EventBus over RabbitMQ (docs/architecture.md, "The path of a message"): one topic exchange, one routing key per user, one queue
 * per instance bound to the users connected to that instance.
 *
 * Lifecycle: construct (no I/O) → `start()` opens the connection, declares the instance queue with
 * the bindings of every user already interested and waits until it consumes (rejects after
 * `startTimeoutMs`, releasing everything) → `stop()` cancels the consumer, deletes the instance
 * queue and closes the publisher channel and the connection; idempotent, bounded by
 * `closeTimeoutMs`, after which the socket is destroyed.
 *
 * Concurrency and invariants:
 * - `publish` sends each envelope once: routing key of the first recipient, the others in the `CC`
 *   header (https://www.rabbitmq.com/docs/sender-selected). A queue bound to several of those keys
 *   still gets one copy. It resolves on the publisher confirm and rejects on nack, channel error or
 *   `publishTimeoutMs`; a timed-out message may still arrive later, which at-least-once allows.
 * - `publishBatch` sends up to MAX_BATCH_EVENTS envelopes as one message `{"batch":[…]}` whose
 *   routing key and `CC` list are every recipient's: each interested instance gets the batch once,
 *   and the broker's work (route, enqueue, confirm, deliver, ack) is paid per batch. The receiver
 *   dispatches only the events of users it is interested in. A batch published `deliveredHere`
 *   names this instance's queue in a header, and this instance acks its own copy unread.
 * - `addInterest` resolves only once the broker has confirmed the binding (queue.bind-ok), because a
 *   message routed before the binding exists is dropped, not queued. Concurrent calls for the same
 *   user share that one bind. If the binding cannot be confirmed within `bindTimeoutMs` it rejects
 *   and the interest is not held (the caller must not call `removeInterest` for it).
 * - At zero references a binding lingers for `lingerMs` before it is removed, so users whose
 *   connections flap do not churn bindings; interest regained during the linger cancels the unbind.
 *   The user leaves `interests` before the unbind is sent, and a later bind for that user waits for
 *   the unbind to settle, so the two can never be reordered into "unbound while interested".
 * - The instance queue outlives a lost connection: it is not exclusive but expires
 *   (`x-expires: queueExpiresMs`) once nobody has consumed from it for that long. So while the
 *   connection is cut or black-holed (until the heart-beat notices), events for this instance's
 *   users keep being routed to it and queued, and are delivered late rather than lost when the
 *   consumer is back; deliveries that were in flight come again (clients de-duplicate by seq). An
 *   outage longer than the expiry, or a broker restart, loses the queue: clients then recover from
 *   history (§6.4). Its name carries a random suffix, so two processes never share one, and the
 *   queue is deleted on stop (after a crash it expires). `x-max-length` bounds what an unconsumed
 *   queue holds (oldest dropped first).
 * - rabbitmq-client reconnects and re-runs the consumer setup, which re-declares the queue (creating
 *   it again if it expired) and reads `queueBindings` from a getter over `interests`: the queue is
 *   bound to every user interested at that moment before consuming starts. A bind racing with that
 *   setup waits for the consumer's next `ready` and binds again (bindings are idempotent). An unbind
 *   that failed while disconnected is retried after the next `ready`, since the queue, and the
 *   binding, survived.
 * - Malformed messages are logged and dropped (nack without requeue): requeueing would redeliver them
 *   for ever. Handlers run synchronously in the consumer callback and the message is acked after.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { ConsumerStatus } from 'rabbitmq-client';
import type { AsyncMessage, Connection, Consumer, Publisher } from 'rabbitmq-client';
import type { BusEnvelope, BusHandler, EventBus, PublishBatchOptions } from '../chat/ports.js';
import { asBusEnvelope } from '../chat/bus-envelope.js';
import { closeAmqpConnection, openAmqpConnection, type AmqpConnectionOptions } from '../amqp/amqp-connection.js';
import { decodeJsonBody } from '../amqp/json-body.js';
import { silentLogger, type AdapterLogger } from '../common/adapter-logger.js';
import { withTimeout } from '../common/timeout.js';
import { traceCarrier } from '../observability/tracing.js';
import { normaliseUserEmail, userRoutingKey } from './user-routing-key.js';

export interface RabbitMqEventBusOptions extends Pick<AmqpConnectionOptions, 'url' | 'heartbeatSec' | 'connectionTimeoutMs'> {
  /** Names the queue and the connection `chat.instance.{instanceId}.{random}`; default a random UUID. */
  instanceId?: string;
  /** Told each time the connection is (re)established after the first (for a reconnect counter). */
  onReconnected?: () => void;
  /** How long the instance queue survives without a consumer (a lost connection, a crash). Default 60 s. */
  queueExpiresMs?: number;
  /** Messages the instance queue holds at most while nobody consumes it (oldest dropped). Default 100,000. */
  maxQueueLength?: number;
  /** Topic exchange; declared (durable) unless it is a predeclared `amq.*` one. */
  exchange?: string;
  routingKeyPrefix?: string;
  /** How long a binding outlives its last interest. */
  lingerMs?: number;
  logger?: AdapterLogger;
  /** How long `publish` waits for the confirm before rejecting. */
  publishTimeoutMs?: number;
  /** How long `addInterest` waits for the binding before rejecting. */
  bindTimeoutMs?: number;
  /** How long `start` waits for the broker before rejecting. */
  startTimeoutMs?: number;
  /** How long `stop` waits for a graceful close before destroying the socket. */
  closeTimeoutMs?: number;
  /** Unacknowledged deliveries the broker may push ahead of the handlers. */
  prefetch?: number;
}

interface Interest {
  refs: number;
  /** The bind in flight or done for this user; undefined before start or after a failed bind. */
  bound: Promise<void> | undefined;
  linger: NodeJS.Timeout | undefined;
}

class BusStoppedError extends Error {
  constructor(what: string) {
    super(`RabbitMqEventBus: ${what} after stop`);
  }
}

export class RabbitMqEventBus implements EventBus {
  /** The instance queue's name, also the AMQP connection name (visible in rabbitmqctl). */
  readonly queueName: string;
  private readonly broker: Pick<AmqpConnectionOptions, 'url' | 'heartbeatSec' | 'connectionTimeoutMs'>;
  private readonly exchange: string;
  private readonly routingKeyPrefix: string;
  private readonly lingerMs: number;
  private readonly publishTimeoutMs: number;
  private readonly bindTimeoutMs: number;
  private readonly startTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly prefetch: number;
  private readonly queueExpiresMs: number;
  private readonly maxQueueLength: number;
  private readonly log: AdapterLogger;

  private readonly handlers: BusHandler[] = [];
  /** Envelopes handed to deliverLocally, dispatched together on the next turn of the event loop. */
  private localDeliveries: BusEnvelope[] = [];
  /**
   * Routing key by email as given: every event names two recipients, and hashing each on every
   * publish and every receipt was a measurable share of an instance's CPU (docs/benchmarks.md).
   */
  private readonly routingKeys = new LRUCache<string, string>({ max: ROUTING_KEY_CACHE_SIZE });
  /** By routing key; a user is bound (or being bound) while present, lingering included. */
  private readonly interests = new Map<string, Interest>();
  private readonly pendingUnbinds = new Map<string, Promise<void>>();
  /** Unbinds that failed while disconnected; the queue survives, so they are retried once ready. */
  private readonly staleBindings = new Set<string>();
  /** Waiters for the consumer's next `ready`; rejected by stop. */
  private readyWaiters = new Set<{ resolve: () => void; reject: (err: Error) => void }>();

  private connection: Connection | undefined;
  private publisher: Publisher | undefined;
  private consumer: Consumer | undefined;
  /** The consumer has (re)declared the queue on the current connection and consumes from it. */
  private consumerReady = false;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(options: RabbitMqEventBusOptions) {
    this.broker = { url: options.url, heartbeatSec: options.heartbeatSec, connectionTimeoutMs: options.connectionTimeoutMs };
    this.queueName = options.instanceId ? `chat.instance.${options.instanceId}.${randomBytes(3).toString('hex')}` : `chat.instance.${randomUUID()}`;
    this.exchange = options.exchange ?? 'amq.topic';
    this.routingKeyPrefix = options.routingKeyPrefix ?? 'user';
    this.lingerMs = options.lingerMs ?? 30_000;
    this.publishTimeoutMs = options.publishTimeoutMs ?? 5_000;
    this.bindTimeoutMs = options.bindTimeoutMs ?? 10_000;
    this.startTimeoutMs = options.startTimeoutMs ?? 15_000;
    this.closeTimeoutMs = options.closeTimeoutMs ?? 5_000;
    this.prefetch = options.prefetch ?? 1_000;
    this.queueExpiresMs = options.queueExpiresMs ?? 60_000;
    this.maxQueueLength = options.maxQueueLength ?? 100_000;
    this.log = options.logger ?? silentLogger;
    this.onReconnected = options.onReconnected;
  }

  start(): Promise<void> {
    if (this.stopping) return Promise.reject(new BusStoppedError('start'));
    this.starting ??= this.open();
    return this.starting;
  }

  stop(): Promise<void> {
    this.stopping ??= this.close();
    return this.stopping;
  }

  async publish(envelope: BusEnvelope): Promise<void> {
    if (this.stopping) throw new BusStoppedError('publish');
    const publisher = this.publisher;
    if (!publisher) throw new Error('RabbitMqEventBus: publish before start');
    const keys = [...new Set(envelope.recipients.map((user) => this.routingKey(user)))];
    const [routingKey, ...cc] = keys;
    if (routingKey === undefined) return; // nobody to route to: dropped, as for an uninterested user
    const body = Buffer.from(JSON.stringify(envelope), 'utf8');
    const sent = publisher.send(
      {
        exchange: this.exchange,
        routingKey,
        contentType: 'application/json',
        ...(cc.length > 0 ? { headers: { CC: cc } } : {}),
      },
      body,
    );
    await withTimeout(sent, this.publishTimeoutMs, () => new Error(`RabbitMQ did not confirm the publish within ${this.publishTimeoutMs} ms`));
  }

  async publishBatch(envelopes: readonly BusEnvelope[], options: PublishBatchOptions = {}): Promise<void> {
    if (this.stopping) throw new BusStoppedError('publishBatch');
    const publisher = this.publisher;
    if (!publisher) throw new Error('RabbitMqEventBus: publishBatch before start');
    const sends: Array<Promise<void>> = [];
    let keys = new Set<string>();
    let parts: string[] = [];
    let bytes = 0;
    const flush = (): void => {
      const [routingKey, ...cc] = keys;
      if (routingKey !== undefined) {
        const body = Buffer.from(`{"batch":[${parts.join(',')}]}`, 'utf8');
        const headers = { ...(cc.length > 0 ? { CC: cc } : {}), ...(options.deliveredHere ? { [ORIGIN_HEADER]: this.queueName } : {}), ...traceCarrier() };
        // Not application/json, which rabbitmq-client would parse before the origin can be checked.
        sends.push(publisher.send({ exchange: this.exchange, routingKey, contentType: BATCH_CONTENT_TYPE, headers }, body));
      }
      keys = new Set();
      parts = [];
      bytes = 0;
    };
    for (const envelope of envelopes) {
      // Nobody to route to (a report, for moderation only): riding along would only cost bytes.
      if (envelope.recipients.length === 0) continue;
      const json = JSON.stringify(envelope);
      const full = parts.length >= MAX_BATCH_EVENTS || bytes + json.length > MAX_BATCH_BYTES || keys.size + envelope.recipients.length > MAX_BATCH_KEYS;
      if (full && parts.length > 0) flush();
      for (const user of envelope.recipients) keys.add(this.routingKey(user));
      parts.push(json);
      bytes += json.length;
    }
    flush();
    const all = Promise.all(sends).then(() => undefined);
    await withTimeout(all, this.publishTimeoutMs, () => new Error(`RabbitMQ did not confirm the publish within ${this.publishTimeoutMs} ms`));
  }

  onEvent(handler: BusHandler): void {
    this.handlers.push(handler);
  }

  deliverLocally(envelope: BusEnvelope): void {
    // Handed over later, as a delivery from the broker would be; a commit's events share one turn.
    this.localDeliveries.push(envelope);
    if (this.localDeliveries.length === 1) setImmediate(() => this.dispatchLocalDeliveries());
  }

  async addInterest(userEmail: string): Promise<void> {
    if (this.stopping) throw new BusStoppedError('addInterest');
    const key = this.routingKey(userEmail);
    let interest = this.interests.get(key);
    if (!interest) {
      interest = { refs: 0, bound: undefined, linger: undefined };
      this.interests.set(key, interest);
    }
    interest.refs += 1;
    clearTimeout(interest.linger);
    interest.linger = undefined;
    // Before start, the consumer's first setup binds every interested user; while the broker is
    // away, the re-setup after reconnecting does. Waiting for it would refuse the user's connection
    // for as long as the broker is gone, and chat between users of this instance needs no broker.
    if (!this.starting || (!interest.bound && !this.connection?.ready)) return;

    if (!interest.bound) {
      const owner = interest;
      const attempt: Promise<void> = this.bind(key).catch((err: unknown) => {
        if (owner.bound === attempt) owner.bound = undefined; // the next addInterest tries afresh
        throw err;
      });
      owner.bound = attempt;
    }
    const bound = interest.bound;
    const routable = (async () => {
      await bound;
      // Bound on an earlier connection but reconnecting now: the binding comes back with the
      // consumer's re-setup, and until then nothing is routed to this instance.
      while (!this.canBind()) await this.nextConsumerReady();
    })();
    try {
      await withTimeout(routable, this.bindTimeoutMs, () => new Error(`RabbitMQ did not confirm the binding within ${this.bindTimeoutMs} ms`));
    } catch (err) {
      this.removeInterest(userEmail);
      throw err;
    }
  }

  removeInterest(userEmail: string): void {
    const key = this.routingKey(userEmail);
    const interest = this.interests.get(key);
    if (!interest || interest.refs === 0) {
      this.log.debug({ routingKey: key }, 'removeInterest without matching addInterest ignored');
      return;
    }
    interest.refs -= 1;
    if (interest.refs > 0) return;
    interest.linger = setTimeout(() => this.expire(key, interest), this.lingerMs);
    interest.linger.unref();
  }

  isHealthy(): boolean {
    return !this.stopping && this.consumerReady && this.connection?.ready === true;
  }

  private routingKey(userEmail: string): string {
    let key = this.routingKeys.get(userEmail);
    if (key === undefined) {
      key = userRoutingKey(normaliseUserEmail(userEmail), this.routingKeyPrefix);
      this.routingKeys.set(userEmail, key);
    }
    return key;
  }

  private readonly onReconnected: (() => void) | undefined;
  private connectedBefore = false;

  private async open(): Promise<void> {
    const connection = openAmqpConnection({
      ...this.broker,
      connectionName: this.queueName,
      logger: this.log,
      onConnection: () => {
        // A new connection means a new (empty) queue until the consumer has set it up again.
        this.consumerReady = false;
        if (this.connectedBefore) this.onReconnected?.();
        this.connectedBefore = true;
      },
    });
    this.connection = connection;

    const declareExchange = this.exchange.startsWith('amq.') ? [] : [{ exchange: this.exchange, type: 'topic', durable: true }];
    this.publisher = connection.createPublisher({ confirm: true, maxAttempts: 2, exchanges: declareExchange });
    this.publisher.on('retry', (err: unknown) => this.log.debug({ err }, 'rabbitmq publish retried'));

    const ready = this.nextConsumerReady();
    const bindingsFor = (): Array<{ queue: string; exchange: string; routingKey: string }> =>
      [...this.interests.keys()].map((routingKey) => ({ queue: this.queueName, exchange: this.exchange, routingKey }));
    const consumer = connection.createConsumer(
      {
        queue: this.queueName,
        // Not exclusive and not auto-delete: the queue, its bindings and what is routed to it must
        // survive a lost connection. x-expires removes it once nobody consumes it.
        queueOptions: {
          exclusive: false,
          autoDelete: false,
          durable: false,
          arguments: { 'x-expires': this.queueExpiresMs, 'x-max-length': this.maxQueueLength, 'x-overflow': 'drop-head' },
        },
        exchanges: declareExchange,
        // Read on every (re)setup, after the queue is declared: the fresh queue gets the bindings of
        // the users interested now, not of those interested when the bus started.
        get queueBindings() {
          return bindingsFor();
        },
        qos: { prefetchCount: this.prefetch },
        requeue: false,
      },
      (msg) => this.receive(msg),
    );
    this.consumer = consumer;
    consumer.on('ready', () => {
      this.consumerReady = true;
      this.log.debug({ queue: this.queueName, bindings: this.interests.size }, 'rabbitmq consumer ready');
      this.retryStaleUnbinds();
      const waiters = this.readyWaiters;
      this.readyWaiters = new Set();
      for (const waiter of waiters) waiter.resolve();
    });
    consumer.on('error', (err: unknown) => this.log.warn({ err, queue: this.queueName }, 'rabbitmq consumer error'));

    try {
      await withTimeout(ready, this.startTimeoutMs, () => new Error(`RabbitMQ not ready within ${this.startTimeoutMs} ms (AMQP_URL)`));
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.log.info({ queue: this.queueName, exchange: this.exchange }, 'rabbitmq event bus started');
  }

  private async close(): Promise<void> {
    for (const interest of this.interests.values()) clearTimeout(interest.linger);
    for (const waiter of this.readyWaiters) waiter.reject(new BusStoppedError('wait for consumer'));
    this.readyWaiters.clear();
    this.consumerReady = false;
    const { connection, consumer, publisher } = this;
    if (!connection) return;
    const graceful = connection.ready
      ? (async () => {
          // Consumer first, so no delivery is half-handled when its channel goes; then the queue,
          // which would otherwise wait for its expiry; the connection last, since it waits for its
          // channels.
          await consumer?.close();
          await connection.queueDelete({ queue: this.queueName }).catch((err: unknown) => this.log.warn({ err, queue: this.queueName }, 'rabbitmq queue delete failed; it expires'));
          await publisher?.close();
          await connection.close();
        })()
      : (async () => {
          // Reconnecting: nothing to drain, and the consumer's close would wait for a channel until
          // acquireTimeout. Closing the connection first fails that wait at once.
          await connection.close();
          await Promise.allSettled([consumer?.close(), publisher?.close()]);
        })();
    await closeAmqpConnection(connection, graceful, this.closeTimeoutMs, this.log);
    this.log.info({ queue: this.queueName }, 'rabbitmq event bus stopped');
  }

  private receive(msg: AsyncMessage): ConsumerStatus {
    // Our own batch of events this instance delivered right after the commit.
    if (msg.headers?.[ORIGIN_HEADER] === this.queueName) return ConsumerStatus.ACK;
    const value = decodeJsonBody(msg.body);
    const batch = (value as { batch?: unknown } | undefined)?.batch;
    if (Array.isArray(batch)) {
      // A batch reaches every instance interested in any of its events: hand over only ours.
      let malformed = 0;
      for (const item of batch) {
        const envelope = asBusEnvelope(item);
        if (!envelope) malformed++;
        else if (envelope.recipients.some((user) => this.interests.has(this.routingKey(user)))) this.dispatch(envelope);
      }
      if (malformed > 0) this.log.warn({ routingKey: msg.routingKey, malformed }, 'malformed events in a bus batch dropped');
      return ConsumerStatus.ACK;
    }
    const envelope = asBusEnvelope(value);
    if (!envelope) {
      this.log.warn({ routingKey: msg.routingKey, exchange: msg.exchange, contentType: msg.contentType }, 'malformed bus message dropped');
      return ConsumerStatus.DROP;
    }
    this.dispatch(envelope);
    return ConsumerStatus.ACK;
  }

  private dispatchLocalDeliveries(): void {
    const envelopes = this.localDeliveries;
    this.localDeliveries = [];
    for (const envelope of envelopes) this.dispatch(envelope);
  }

  private dispatch(envelope: BusEnvelope): void {
    for (const handler of this.handlers) {
      try {
        handler(envelope);
      } catch (err) {
        // The port says handlers must not throw; one that does must neither starve the others nor
        // get the message redelivered to all of them again.
        this.log.error({ err }, 'bus handler threw');
      }
    }
  }

  /** Binds `key` on the instance queue; resolves once the broker confirmed it on a live queue. */
  private async bind(key: string): Promise<void> {
    await this.pendingUnbinds.get(key);
    let waitForReady = !this.canBind();
    for (;;) {
      if (waitForReady) await this.nextConsumerReady();
      if (this.stopping) throw new BusStoppedError('bind');
      // Lost interest while waiting: the next addInterest starts a fresh bind.
      if (!this.interests.has(key)) return;
      try {
        await this.requireConnection().queueBind({ queue: this.queueName, exchange: this.exchange, routingKey: key });
        return;
      } catch (err) {
        // Usually the connection dropped mid-bind: the consumer's re-setup is about to bind it
        // anyway, and binding again after that is harmless.
        this.log.debug({ err, routingKey: key }, 'rabbitmq bind failed, retrying after the consumer is ready');
        waitForReady = true;
      }
    }
  }

  private expire(key: string, interest: Interest): void {
    if (interest.refs > 0 || this.interests.get(key) !== interest) return;
    // Out of `interests` first: a reconnect from here on must not re-create the binding.
    this.interests.delete(key);
    const connection = this.connection;
    if (!connection || this.stopping) return;
    const unbind = connection
      .queueUnbind({ queue: this.queueName, exchange: this.exchange, routingKey: key })
      .catch((err: unknown) => {
        if (connection.ready) this.log.warn({ err, routingKey: key }, 'rabbitmq unbind failed');
        // The queue outlives the connection, and so does the binding: undo it once reconnected.
        else this.staleBindings.add(key);
      })
      .finally(() => {
        if (this.pendingUnbinds.get(key) === unbind) this.pendingUnbinds.delete(key);
      });
    this.pendingUnbinds.set(key, unbind);
  }

  /** Removes bindings whose unbind failed while disconnected, unless their user is interested again. */
  private retryStaleUnbinds(): void {
    const connection = this.connection;
    if (!connection || this.stopping) return;
    for (const key of [...this.staleBindings]) {
      this.staleBindings.delete(key);
      if (this.interests.has(key) || this.pendingUnbinds.has(key)) continue;
      const unbind = connection
        .queueUnbind({ queue: this.queueName, exchange: this.exchange, routingKey: key })
        .catch((err: unknown) => {
          this.staleBindings.add(key);
          this.log.debug({ err, routingKey: key }, 'rabbitmq stale unbind failed, will retry after reconnecting');
        })
        .finally(() => {
          if (this.pendingUnbinds.get(key) === unbind) this.pendingUnbinds.delete(key);
        });
      this.pendingUnbinds.set(key, unbind);
    }
  }

  private canBind(): boolean {
    return this.consumerReady && this.connection?.ready === true;
  }

  private requireConnection(): Connection {
    if (!this.connection) throw new Error('RabbitMqEventBus: not started');
    return this.connection;
  }

  private nextConsumerReady(): Promise<void> {
    if (this.stopping) return Promise.reject(new BusStoppedError('wait for consumer'));
    return new Promise((resolve, reject) => this.readyWaiters.add({ resolve, reject }));
  }
}

const BATCH_CONTENT_TYPE = 'application/vnd.chat.event-batch+json';
/** Names the instance queue of a publisher that delivered the batch's events itself. */
const ORIGIN_HEADER = 'x-chat-delivered-at';

/** A batch's events per bus message at most; and its size, in UTF-16 units of the JSON. */
const MAX_BATCH_EVENTS = 500;
const MAX_BATCH_BYTES = 512 * 1024;
/** Routing keys in one batch's CC header, which must fit one frame: 1,000 × 38 bytes stays well inside the 128 KiB frame_max of openAmqpConnection. */
const MAX_BATCH_KEYS = 1_000;
/** Emails whose routing key is remembered: the users of a busy instance and their peers. */
const ROUTING_KEY_CACHE_SIZE = 100_000;
