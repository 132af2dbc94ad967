/**
 * Prometheus metrics. One registry per app instance (not prom-client's global one), so several
 * instances in one test process do not collide.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();

  readonly httpDuration = new Histogram({
    name: 'chat_http_request_duration_seconds',
    help: 'HTTP request duration by route, method and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });

  readonly messagesSent = new Counter({
    name: 'chat_messages_sent_total',
    help: 'Messages accepted, by transport and whether they were new or idempotent repeats',
    labelNames: ['transport', 'result'] as const,
    registers: [this.registry],
  });

  /** Read at scrape time; set by the composition root once the store exists. */
  outboxCounts: (() => Promise<{ pending: number; dead: number }>) | undefined;

  readonly outboxRows = new Gauge({
    name: 'chat_outbox_rows',
    help: 'Outbox rows by state: pending (not yet published) or dead (retries exhausted)',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: async () => {
      if (!this.outboxCounts) return;
      try {
        const { pending, dead } = await this.outboxCounts();
        this.outboxRows.set({ state: 'pending' }, pending);
        this.outboxRows.set({ state: 'dead' }, dead);
      } catch {
        // A scrape during an outage keeps the last values; /health/ready reports the outage.
      }
    },
  });

  /** Read at scrape time; set by the composition root. */
  outboxOldestPendingAgeMs: (() => Promise<number | null>) | undefined;
  dbPoolStats: (() => { inUse: number; idle: number; waiting: number }) | undefined;

  readonly outboxOldestPending = new Gauge({
    name: 'chat_outbox_oldest_pending_seconds',
    help: 'Age of the oldest outbox row not yet published (0 when none): the outbox lag readiness bounds',
    registers: [this.registry],
    collect: async () => {
      try {
        const ms = await this.outboxOldestPendingAgeMs?.();
        if (ms !== undefined) this.outboxOldestPending.set((ms ?? 0) / 1000);
      } catch {
        // As for the row counts: the last value stays, readiness reports the outage.
      }
    },
  });

  readonly dbPool = new Gauge({
    name: 'chat_db_pool_connections',
    help: 'Database pool connections in use and idle, and callers waiting for one',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const stats = this.dbPoolStats?.();
      if (!stats) return;
      this.dbPool.set({ state: 'in_use' }, stats.inUse);
      this.dbPool.set({ state: 'idle' }, stats.idle);
      this.dbPool.set({ state: 'waiting' }, stats.waiting);
    },
  });

  readonly busReconnects = new Counter({
    name: 'chat_bus_reconnects_total',
    help: 'Times the bus connection to the broker was re-established after being lost',
    registers: [this.registry],
  });

  readonly busEventsReceived = new Counter({
    name: 'chat_bus_events_received_total',
    help: 'Events handed to this instance by the bus (from the broker, or delivered here at commit); published ones are chat_outbox_published_total',
    registers: [this.registry],
  });

  /** Read at scrape time; set by the composition root. */
  sendQueueDepthOf: (() => Promise<number | undefined>) | undefined;

  readonly sendQueueDepth = new Gauge({
    name: 'chat_send_queue_depth',
    help: 'Sends waiting in the send queue to be stored (RabbitMQ: the shared queue, messages not yet handed to a consumer)',
    registers: [this.registry],
    collect: async () => {
      const depth = await this.sendQueueDepthOf?.().catch(() => undefined);
      if (depth !== undefined) this.sendQueueDepth.set(depth);
    },
  });

  readonly messagesDelivered = new Counter({
    name: 'chat_messages_delivered_total',
    help: 'Message frames written to subscribers\' connections on this instance',
    registers: [this.registry],
  });

  readonly deliveryLatency = new Histogram({
    name: 'chat_delivery_latency_seconds',
    help: 'From a message being accepted (its sentAt) to its frame being written to a recipient connection on this instance',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30],
    registers: [this.registry],
  });

  readonly stompFrameDuration = new Histogram({
    name: 'chat_stomp_frame_duration_seconds',
    help: 'Time to handle an inbound STOMP frame after CONNECT, by command (a SEND until it is stored or queued, an ACK until recorded)',
    labelNames: ['command'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });

  readonly outboxPublished = new Counter({ name: 'chat_outbox_published_total', help: 'Outbox events published to the bus', registers: [this.registry] });
  readonly outboxFailed = new Counter({ name: 'chat_outbox_publish_failures_total', help: 'Outbox publish attempts that failed', registers: [this.registry] });
  readonly outboxDeadTotal = new Counter({ name: 'chat_outbox_dead_total', help: 'Outbox rows marked dead by this instance', registers: [this.registry] });
  readonly outboxLag = new Histogram({
    name: 'chat_outbox_publish_lag_seconds',
    help: 'Time from outbox row creation to its publish',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
    registers: [this.registry],
  });

  readonly webhookDeliveries = new Counter({
    name: 'chat_webhook_deliveries_total',
    help: 'Webhook delivery attempts by outcome: delivered (2xx), retry (failed, tried again later), dead (failed for the last time; the row is kept)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly webhookLag = new Histogram({
    name: 'chat_webhook_delivery_lag_seconds',
    help: 'From the chat change (webhook row written) to the receiver accepting its webhook, retries included',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 120, 600],
    registers: [this.registry],
  });

  /** Read at scrape time; set by the composition root when webhooks are configured. */
  webhookCounts: (() => Promise<{ pending: number; dead: number }>) | undefined;

  readonly webhookRows = new Gauge({
    name: 'chat_webhook_rows',
    help: 'Webhook outbox rows by state: pending (not yet delivered) or dead (attempts exhausted, kept)',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: async () => {
      if (!this.webhookCounts) return;
      try {
        const { pending, dead } = await this.webhookCounts();
        this.webhookRows.set({ state: 'pending' }, pending);
        this.webhookRows.set({ state: 'dead' }, dead);
      } catch {
        // As for the outbox rows: the last values stay during an outage.
      }
    },
  });

  readonly realtimeConnections = new Gauge({
    name: 'chat_realtime_connections',
    help: 'Open STOMP connections by transport',
    labelNames: ['transport'] as const,
    registers: [this.registry],
  });

  readonly realtimeSubscriptions = new Gauge({ name: 'chat_realtime_subscriptions', help: 'Active STOMP subscriptions', registers: [this.registry] });

  readonly stompFrames = new Counter({
    name: 'chat_stomp_frames_total',
    help: 'STOMP frames by direction and command',
    labelNames: ['direction', 'command'] as const,
    registers: [this.registry],
  });

  readonly realtimeClosed = new Counter({
    name: 'chat_realtime_refusals_total',
    help: 'Connections or handshakes refused, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly presenceChanges = new Counter({
    name: 'chat_presence_changes_total',
    help: 'Cluster-wide presence changes this instance announced, by state and cause (connection, sweep of a dead instance, stop)',
    labelNames: ['state', 'via'] as const,
    registers: [this.registry],
  });

  readonly presenceFailures = new Counter({
    name: 'chat_presence_failures_total',
    help: 'Presence store or bus operations that failed (retried on the next heart-beat)',
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }
}
