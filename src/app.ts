/**
 * The composition root: the only module that picks implementations. It reads the frozen Config,
 * builds each adapter by its `kind`, wires them into the chat service and the transports, and owns
 * the lifecycle: start in dependency order, stop in reverse.
 */
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { BusConfig, Config, StoreConfig } from './config/config.js';
import { ChatService } from './chat/chat-service.js';
import { systemClock, type EventBus, type ProfileDirectory, type SendQueue } from './chat/ports.js';
import { PgDatabase, type PgDatabaseOptions } from './store/postgres/pg-database.js';
import { PgliteDatabase } from './store/postgres/pglite-database.js';
import { migrate } from './store/postgres/migrator.js';
import { PostgresMessageStore } from './store/postgres/postgres-message-store.js';
import { PostgresOutboxStore } from './store/postgres/postgres-outbox-store.js';
import { PostgresProfileDirectory } from './store/postgres/postgres-profile-directory.js';
import { PostgresPresenceStore } from './store/postgres/postgres-presence-store.js';
import { PresenceService } from './chat/presence.js';
import type { SqlDatabase } from './store/postgres/sql-database.js';
import { HttpProfileDirectory } from './profiles/http-profile-directory.js';
import { JwtTokenVerifier, type TokenVerifier } from './auth/token-verifier.js';
import { DEV_AUDIENCE, DEV_ISSUER, DevTokenIssuer } from './auth/dev-token-issuer.js';
import { Metrics } from './observability/metrics.js';
import { buildHttpServer } from './http/http-server.js';
import { MemoryEventBus } from './bus/memory-event-bus.js';
import { RabbitMqEventBus, type RabbitMqEventBusOptions } from './bus/rabbitmq-event-bus.js';
import { RabbitMqSendQueue, type RabbitMqSendQueueOptions } from './queue/rabbitmq-send-queue.js';
import { MemorySendQueue } from './queue/memory-send-queue.js';
import { SendPath, type SendUseCases } from './chat/send-path.js';
import { RealtimeGateway } from './realtime/realtime-gateway.js';
import { UserRateLimiter } from './limits/user-rate-limiter.js';
import { RealtimeEndpoints } from './realtime/realtime-endpoints.js';
import { buildManagementServer, type ReadinessChecks } from './http/operations.js';
import { startTracing } from './observability/tracing.js';
import { compileTrustProxy } from './realtime/client-address.js';
import type { StompConnectionOptions } from './realtime/stomp/stomp-connection.js';
import { DEFAULT_OUTBOX_RELAY_OPTIONS, OutboxRelay, type OutboxRelayOptions } from './outbox/outbox-relay.js';
import { PostgresWebhookStore } from './store/postgres/postgres-webhook-store.js';
import { DEFAULT_WEBHOOK_TUNING, WebhookDispatcher, type WebhookDispatcherOptions } from './webhooks/webhook-dispatcher.js';

export interface App {
  readonly config: Config;
  readonly http: FastifyInstance;
  /** Base URL once listening, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  /** Base URL of the MANAGEMENT_PORT listener (probes, metrics); undefined when they share `url`. */
  readonly managementUrl: string | undefined;
  /** The embedded default's token issuer; absent with production auth. */
  readonly devIssuer: DevTokenIssuer | undefined;
  stop(): Promise<void>;
}

const isLoopback = (host: string): boolean => host === 'localhost' || host === '::1' || /^127\./.test(host);

export function assertNever(value: never): never {
  throw new Error(`unexpected variant: ${JSON.stringify(value)}`);
}

async function openDatabase(store: StoreConfig, logger: Logger, tuning: AppOptions['database']): Promise<SqlDatabase> {
  switch (store.kind) {
    case 'pglite': {
      const db = await PgliteDatabase.open(store.dataDir || undefined);
      await migrate({ kind: 'pglite', db }, logger);
      return db;
    }
    case 'postgres': {
      await migrate({ kind: 'postgres', url: store.url }, logger);
      return new PgDatabase({ ...tuning, url: store.url, poolSize: store.poolSize, logger: logger.child({ component: 'postgres' }) });
    }
    default:
      return assertNever(store);
  }
}

function buildBus(bus: BusConfig, config: Config, logger: Logger, metrics: Metrics, tuning: AppOptions['bus']): EventBus {
  switch (bus.kind) {
    case 'memory':
      return new MemoryEventBus({ logger: logger.child({ component: 'bus' }) });
    case 'rabbitmq':
      return new RabbitMqEventBus({
        ...tuning,
        url: bus.url,
        instanceId: config.instanceId,
        logger: logger.child({ component: 'bus' }),
        onReconnected: () => metrics.busReconnects.inc(),
      });
    default:
      return assertNever(bus);
  }
}

function buildSendQueue(bus: BusConfig, config: Config, logger: Logger, tuning: AppOptions['sendQueue']): SendQueue {
  const log = logger.child({ component: 'send-queue' });
  switch (bus.kind) {
    case 'memory':
      return new MemorySendQueue({ ...tuning, logger: log });
    case 'rabbitmq':
      return new RabbitMqSendQueue({ queue: bus.sendQueue, ...tuning, url: bus.url, instanceId: config.instanceId, logger: log });
    default:
      return assertNever(bus);
  }
}

function buildVerifier(config: Config, devIssuer: DevTokenIssuer | undefined): TokenVerifier {
  const auth = config.auth;
  switch (auth.kind) {
    case 'dev':
      return new JwtTokenVerifier({ key: { kind: 'key', key: devIssuer!.publicKey }, issuer: DEV_ISSUER, audience: DEV_AUDIENCE, maxAgeSec: auth.maxAgeSec });
    case 'jwt':
      return new JwtTokenVerifier({
        key: auth.jwksUrl ? { kind: 'jwks', url: auth.jwksUrl } : { kind: 'pem', pem: auth.publicKeyPem! },
        issuer: auth.issuer,
        audience: auth.audience,
        maxAgeSec: auth.maxAgeSec,
      });
    default:
      return assertNever(auth);
  }
}

function buildProfiles(config: Config, db: SqlDatabase, logger: Logger, metrics: Metrics): ProfileDirectory {
  const profiles = config.profiles;
  switch (profiles.kind) {
    case 'local':
      return new PostgresProfileDirectory(db);
    case 'http':
      return new HttpProfileDirectory({
        baseUrl: profiles.baseUrl,
        privateKeyPem: profiles.privateKeyPem,
        issuer: profiles.issuer,
        audience: profiles.audience,
        cacheTtlMs: profiles.cacheTtlMs,
        cacheMax: profiles.cacheMax,
        logger: logger.child({ component: 'profile-directory' }),
        registry: metrics.registry,
      });
    default:
      return assertNever(profiles);
  }
}

export interface AppOptions {
  metrics?: Metrics;
  /** STOMP tuning for tests (heart-beats, connect timeout, limits). */
  stomp?: Partial<StompConnectionOptions>;
  /** PostgreSQL timeouts for tests (statement, connect, LISTEN liveness check). */
  database?: Pick<PgDatabaseOptions, 'statementTimeoutMs' | 'connectTimeoutMs' | 'listenCheckIntervalMs'>;
  /** RabbitMQ event bus tuning for tests (heart-beat, timeouts). */
  bus?: Partial<Omit<RabbitMqEventBusOptions, 'url' | 'instanceId' | 'logger'>>;
  /** Send queue options for tests: their own queue names (never the shared chat.send.queue), timings. */
  sendQueue?: Partial<Omit<RabbitMqSendQueueOptions, 'url' | 'instanceId' | 'logger'>>;
  /** Outbox relay tuning for tests (lease, backoff, retries). */
  outbox?: Partial<OutboxRelayOptions>;
  /** Webhook dispatcher tuning for tests (poll interval, how long delivered rows are kept). */
  webhooks?: Partial<Pick<WebhookDispatcherOptions, 'pollIntervalMs' | 'keepDeliveredMs'>>;
  /**
   * Fault injection for tests: wraps what the relay publishes through, and what the send path
   * stores through, so a test can stop a process at an exact point (after a confirm, after a
   * commit) or make a send fail. Never set in production.
   */
  faults?: {
    relayBus?: (bus: EventBus) => EventBus;
    sendChat?: (chat: SendUseCases) => SendUseCases;
  };
}

export async function createApp(config: Config, logger: Logger, options: AppOptions = {}): Promise<App> {
  const stack: Array<{ name: string; stop: () => Promise<void> }> = [];
  /** Set first when stopping: readiness turns 503 before anything closes. */
  const lifecycle = { draining: false };
  const stopAll = async (): Promise<void> => {
    lifecycle.draining = true;
    if (stack.length > 0) logger.info({ components: stack.length }, 'draining: readiness down, closing connections, flushing sends and the outbox');
    for (const { name, stop } of stack.reverse()) {
      try {
        await stop();
      } catch (err) {
        logger.warn({ err, component: name }, 'stop failed');
      }
    }
    stack.length = 0;
  };

  try {
    if (config.tracing) {
      // First in, last out: spans of the shutdown itself still reach the collector.
      const tracing = startTracing({ ...config.tracing, instanceId: config.instanceId });
      stack.push({ name: 'tracing', stop: () => tracing.shutdown() });
    }
    const metrics = options.metrics ?? new Metrics();
    const db = await openDatabase(config.store, logger, options.database);
    stack.push({ name: 'database', stop: () => db.close() });
    // Stopped late (the stack unwinds in reverse): probes keep answering, 503, while the rest drains.
    let management: FastifyInstance | undefined;
    stack.push({ name: 'management', stop: async () => management?.close() });
    const outboxOptions = { ...DEFAULT_OUTBOX_RELAY_OPTIONS, ...options.outbox };
    // Rows are written leased to this instance's relay for as long as one of its claims would be.
    // With webhooks configured, each commit also writes the webhook rows of its events (ADR 0015).
    const store = new PostgresMessageStore(db, config.instanceId, {
      leaseOutboxMs: outboxOptions.leaseMs,
      webhookTypes: config.webhooks ? new Set(config.webhooks.events) : undefined,
    });
    // Scrapes count through the main pool; the relay's small pool is sized for its own statements.
    const outboxForMetrics = new PostgresOutboxStore(db);
    metrics.outboxCounts = () => outboxForMetrics.counts();
    metrics.outboxOldestPendingAgeMs = () => outboxForMetrics.oldestPendingAgeMs();
    metrics.dbPoolStats = () => db.poolStats();

    const devIssuer = config.auth.kind === 'dev' ? DevTokenIssuer.open(config.store.kind === 'pglite' && !config.store.dataDir ? undefined : config.dataDir) : undefined;
    const verifier = buildVerifier(config, devIssuer);
    const profiles = buildProfiles(config, db, logger, metrics);
    const bus = buildBus(config.bus, config, logger, metrics, options.bus);
    await bus.start();
    stack.push({ name: 'bus', stop: () => bus.stop() });
    bus.onEvent(() => metrics.busEventsReceived.inc());
    const chat = new ChatService({ store, profiles, bus, clock: systemClock, maxContentChars: config.maxContentChars });

    const relayDb =
      config.store.kind === 'postgres' ? new PgDatabase({ ...options.database, url: config.store.url, poolSize: 4, logger, synchronousCommit: false }) : db;
    if (relayDb !== db) stack.push({ name: 'relay-database', stop: () => relayDb.close() });
    const outbox = new PostgresOutboxStore(relayDb, { origin: config.instanceId });
    const relay = new OutboxRelay({ store: outbox, bus: options.faults?.relayBus?.(bus) ?? bus, metrics, logger, options: options.outbox });
    store.onOutboxWritten((written) => relay.adopt(written));
    await relay.start();
    stack.push({ name: 'outbox', stop: () => relay.stop() });

    // Registered before any connection is taken; stopped after the connections close (the stack
    // unwinds in reverse), so their users are recorded offline while the bus can still tell peers.
    const presenceLog = logger.child({ component: 'presence' });
    const presence = new PresenceService({
      store: new PostgresPresenceStore(db),
      bus,
      chat,
      options: { instanceId: config.instanceId, ...config.presence },
      onError: (err, what) => {
        metrics.presenceFailures.inc();
        presenceLog.warn({ err }, `presence: ${what} failed; retried on the next heart-beat`);
      },
      onAnnounced: (change, via) => metrics.presenceChanges.inc({ state: change.online ? 'online' : 'offline', via }),
    });
    await presence.start();
    stack.push({ name: 'presence', stop: () => presence.stop() });

    // Every send is stored here first; the queue holds those that cannot be stored yet (ADR 0010).
    const sendQueue = buildSendQueue(config.bus, config, logger, options.sendQueue);
    const sendLog = logger.child({ component: 'send-path' });
    const sends = new SendPath({
      chat: options.faults?.sendChat?.(chat) ?? chat,
      queue: sendQueue,
      bus,
      onOutcome: (transport, result) => metrics.messagesSent.inc({ transport, result }),
      onUnexpected: (err) => logger.error({ err, component: 'send-path' }, 'storing a send failed unexpectedly; it is queued and retried'),
      // Ids only: never the content or the token. Debug: at info a line per message would make the
      // log's volume, and its cost (4 % of an instance's CPU at full load), grow with the traffic.
      onStored: (message, via) => sendLog.debug({ messageId: message.messageId, sessionId: message.sessionId, seq: message.seq, via }, 'message stored'),
    });
    await sendQueue.start();
    metrics.sendQueueDepthOf = () => sendQueue.depth();
    stack.push({ name: 'send-queue', stop: () => sendQueue.stop() });

    // One per-user send budget for REST and STOMP sends, so switching transports buys no extra sends.
    const sendLimiter = new UserRateLimiter(config.rateLimitPerMinute, 'sends');
    const gateway = new RealtimeGateway({
      chat,
      bus,
      verifier,
      metrics,
      logger: logger.child({ component: 'realtime' }),
      sends,
      sendLimiter,
      maxConnectionsPerUser: config.stompLimits.maxConnectionsPerUser,
      presence,
    });
    if (config.webhooks) {
      const webhooks = config.webhooks;
      // Its own small pool: a slow receiver or a backlog never takes connections from sends or the relay.
      const webhookDb =
        config.store.kind === 'postgres' ? new PgDatabase({ ...options.database, url: config.store.url, poolSize: 2, logger: logger.child({ component: 'webhooks' }) }) : db;
      if (webhookDb !== db) stack.push({ name: 'webhook-database', stop: () => webhookDb.close() });
      const unreadStore = webhookDb === db ? store : new PostgresMessageStore(webhookDb);
      const countsStore = new PostgresWebhookStore(db);
      metrics.webhookCounts = () => countsStore.counts();
      const dispatcher = new WebhookDispatcher({
        store: new PostgresWebhookStore(webhookDb),
        // A connection here answers at once (presence records a new one a moment later); otherwise
        // presence knows about every instance's.
        recipientOnline: async (email) => gateway.hasConnection(email) || (await presence.isOnline(email)),
        unreadTotals: (email) => unreadStore.unreadTotals(email),
        metrics,
        logger: logger.child({ component: 'webhooks' }),
        options: {
          ...DEFAULT_WEBHOOK_TUNING,
          url: webhooks.url,
          secret: webhooks.secret,
          maxAttempts: webhooks.maxAttempts,
          timeoutMs: webhooks.timeoutMs,
          includeContent: webhooks.includeContent,
          concurrency: webhooks.concurrency,
          backoff: { initialMs: webhooks.retryInitialMs, maxMs: webhooks.retryMaxMs },
          ...options.webhooks,
        },
      });
      // Synchronous and cheap: the commit's own path only flips a flag.
      store.onOutboxWritten(() => dispatcher.wake());
      dispatcher.start();
      stack.push({ name: 'webhooks', stop: () => dispatcher.stop() });
    }

    // One rule for the client address everywhere: Fastify's request.ip and the /ws limits and bindings.
    const trustProxy = compileTrustProxy(config.trustProxy);
    const realtime = new RealtimeEndpoints({
      handler: gateway,
      logger: logger.child({ component: 'realtime' }),
      metrics,
      allowedOrigins: config.allowedOrigins,
      trustProxy,
      pending: { max: config.maxPendingConnections, maxPerAddress: config.maxPendingConnectionsPerAddress },
      stomp: {
        framesPerSecond: config.stompLimits.framesPerSecond,
        frameBurst: config.stompLimits.frameBurst,
        idleTimeoutMs: config.stompLimits.idleTimeoutMs,
        ...options.stomp,
      },
    });

    const readiness = async (): Promise<ReadinessChecks> => {
      const [database, outboxAgeMs] = await Promise.all([
        db.ping().then(
          () => 'up' as const,
          () => 'down' as const,
        ),
        outboxForMetrics.oldestPendingAgeMs().catch(() => Number.POSITIVE_INFINITY),
      ]);
      return {
        // Draining: the load balancer must stop sending new clients here before they are told to leave.
        accepting: lifecycle.draining ? 'down' : 'up',
        database,
        bus: bus.isHealthy() ? 'up' : 'down',
        sendQueue: sendQueue.isHealthy() ? 'up' : 'down',
        // Events older than this not yet published: this instance's relay is stuck or far behind.
        outbox: (outboxAgeMs ?? 0) <= config.readyMaxOutboxLagMs ? 'up' : 'down',
      };
    };
    const http = buildHttpServer({
      chat,
      presence,
      admin: {
        // The main pool: the relay's small pool is sized for its own statements.
        outbox: outboxForMetrics,
        sendQueue,
        reports: store,
        connections: () => presence.clusterConnections(),
        disconnect: (email, by) => presence.disconnectEverywhere(email, by),
      },
      sends,
      verifier,
      requestLimiter: new UserRateLimiter(config.rateLimitPerMinute, 'requests'),
      sendLimiter,
      devIssuer,
      metrics,
      logger,
      allowedOrigins: config.allowedOrigins,
      trustProxy,
      interceptRequest: (req, res) => realtime.handleRequest(req, res),
      readiness,
      serveOperations: config.managementPort === undefined,
    });
    http.server.on('upgrade', (req, socket, head) => realtime.handleUpgrade(req, socket, head));
    stack.push({ name: 'http', stop: () => http.close() });
    // Before the HTTP server closes: WebSocket and SockJS connections would otherwise hold it open.
    stack.push({ name: 'realtime', stop: () => realtime.close() });
    await http.listen({ port: config.port, host: config.host });
    const address = http.server.address() as AddressInfo;
    const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
    const url = `http://${host}:${address.port}`;
    let managementUrl: string | undefined;
    if (config.managementPort !== undefined) {
      management = buildManagementServer({ metrics, readiness, logger });
      await management.listen({ port: config.managementPort, host: config.host });
      managementUrl = `http://${host}:${(management.server.address() as AddressInfo).port}`;
    }

    logger.info(
      {
        url,
        store: config.store.kind,
        bus: config.bus.kind,
        profiles: config.profiles.kind,
        auth: config.auth.kind,
        instanceId: config.instanceId,
        // Whether only: the URL may carry credentials, and the secret is never logged.
        webhooks: config.webhooks ? 'on' : 'off',
        ...(managementUrl ? { managementUrl } : {}),
      },
      'chat-service started',
    );
    if (config.auth.kind === 'dev' && (config.store.kind === 'postgres' || !isLoopback(config.host))) {
      logger.warn(
        { host: config.host },
        isLoopback(config.host)
          ? 'dev token issuer is enabled (no JWT_PUBLIC_KEY or JWT_JWKS_URL): anyone can mint tokens; never run this in production'
          : 'dev token issuer is enabled and HOST is reachable from other machines: anyone who reaches it can mint a token for any user',
      );
    }
    return { config, http, url, managementUrl, devIssuer, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
