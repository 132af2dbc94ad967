/**
 * The composition root: the only module that picks implementations. It reads the frozen Config,
 * builds each adapter by its `kind`, wires them into the chat service and the transports, and owns
 * the lifecycle: start in dependency order, stop in reverse.
 */
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config, StoreConfig } from './config/config.js';
import { ChatService } from './chat/chat-service.js';
import { systemClock, type ProfileDirectory } from './chat/ports.js';
import { PgDatabase } from './store/postgres/pg-database.js';
import { PgliteDatabase } from './store/postgres/pglite-database.js';
import { migrate } from './store/postgres/migrator.js';
import { PostgresMessageStore } from './store/postgres/postgres-message-store.js';
import type { SqlDatabase } from './store/postgres/sql-database.js';
import { LocalProfileDirectory } from './profiles/local-profile-directory.js';
import { JwtTokenVerifier, type TokenVerifier } from './auth/token-verifier.js';
import { DEV_AUDIENCE, DEV_ISSUER, DevTokenIssuer } from './auth/dev-token-issuer.js';
import { Metrics } from './observability/metrics.js';
import { buildHttpServer } from './http/http-server.js';

export interface App {
  readonly config: Config;
  readonly http: FastifyInstance;
  /** Base URL once listening, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  /** The embedded default's token issuer; absent with production auth. */
  readonly devIssuer: DevTokenIssuer | undefined;
  stop(): Promise<void>;
}

export function assertNever(value: never): never {
  throw new Error(`unexpected variant: ${JSON.stringify(value)}`);
}

async function openDatabase(store: StoreConfig, logger: Logger): Promise<SqlDatabase> {
  switch (store.kind) {
    case 'pglite': {
      const db = await PgliteDatabase.open(store.dataDir || undefined);
      await migrate({ kind: 'pglite', db }, logger);
      return db;
    }
    case 'postgres': {
      await migrate({ kind: 'postgres', url: store.url }, logger);
      return new PgDatabase({ url: store.url, poolSize: store.poolSize, logger: logger.child({ component: 'postgres' }) });
    }
    default:
      return assertNever(store);
  }
}

function buildVerifier(config: Config, devIssuer: DevTokenIssuer | undefined): TokenVerifier {
  const auth = config.auth;
  switch (auth.kind) {
    case 'dev':
      return new JwtTokenVerifier({ key: { kind: 'key', key: devIssuer!.publicKey }, issuer: DEV_ISSUER, audience: DEV_AUDIENCE });
    case 'jwt':
      return new JwtTokenVerifier({
        key: auth.jwksUrl ? { kind: 'jwks', url: auth.jwksUrl } : { kind: 'pem', pem: auth.publicKeyPem! },
        issuer: auth.issuer,
        audience: auth.audience,
      });
    default:
      return assertNever(auth);
  }
}

function buildProfiles(config: Config, db: SqlDatabase): ProfileDirectory {
  const profiles = config.profiles;
  switch (profiles.kind) {
    case 'local':
      return new LocalProfileDirectory(db);
    case 'http':
      throw new Error('PROFILE_SERVICE_URL: the HTTP profile directory is not available yet');
    default:
      return assertNever(profiles);
  }
}

export async function createApp(config: Config, logger: Logger, options: { metrics?: Metrics } = {}): Promise<App> {
  const stack: Array<{ name: string; stop: () => Promise<void> }> = [];
  const stopAll = async (): Promise<void> => {
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
    const metrics = options.metrics ?? new Metrics();
    const db = await openDatabase(config.store, logger);
    stack.push({ name: 'database', stop: () => db.close() });
    const store = new PostgresMessageStore(db);
    metrics.outboxCounts = async () => {
      const rows = await db.query<{ pending: string | number; dead: string | number }>(
        'SELECT count(*) FILTER (WHERE NOT processed AND NOT dead) AS pending, count(*) FILTER (WHERE dead) AS dead FROM chat_message_outbox',
      );
      return { pending: Number(rows[0]?.pending ?? 0), dead: Number(rows[0]?.dead ?? 0) };
    };

    const devIssuer = config.auth.kind === 'dev' ? DevTokenIssuer.open(config.store.kind === 'pglite' && !config.store.dataDir ? undefined : config.dataDir) : undefined;
    const verifier = buildVerifier(config, devIssuer);
    const profiles = buildProfiles(config, db);
    const chat = new ChatService({ store, profiles, clock: systemClock, maxContentChars: config.maxContentChars });

    const http = buildHttpServer({
      chat,
      verifier,
      devIssuer,
      metrics,
      logger,
      allowedOrigins: config.allowedOrigins,
      readiness: async () => ({
        database: await db.ping().then(
          () => 'up' as const,
          () => 'down' as const,
        ),
      }),
    });
    stack.push({ name: 'http', stop: () => http.close() });
    await http.listen({ port: config.port, host: config.host });
    const address = http.server.address() as AddressInfo;
    const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
    const url = `http://${host}:${address.port}`;

    logger.info(
      {
        url,
        store: config.store.kind,
        bus: config.bus.kind,
        profiles: config.profiles.kind,
        auth: config.auth.kind,
        instanceId: config.instanceId,
      },
      'chat-service started',
    );
    if (config.auth.kind === 'dev' && config.store.kind === 'postgres') {
      logger.warn('dev token issuer is enabled (no JWT_PUBLIC_KEY or JWT_JWKS_URL): anyone can mint tokens; never run this in production');
    }
    return { config, http, url, devIssuer, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
