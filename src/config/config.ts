/**
 * The service's configuration: read from the environment once, validated, frozen. Nothing else
 * reads process.env. Every error names the variable, so a bad deployment fails at start-up.
 */
import path from 'node:path';
import proxyAddr from '@fastify/proxy-addr';
import { isWebhookEventType, WEBHOOK_EVENT_TYPES, type WebhookEventType } from '../chat/webhook-events.js';

export type StoreConfig = { kind: 'pglite'; dataDir: string } | { kind: 'postgres'; url: string; poolSize: number };
export type BusConfig = { kind: 'memory' } | { kind: 'rabbitmq'; url: string; sendQueue: string };
export type ProfilesConfig =
  | { kind: 'local' }
  | { kind: 'http'; baseUrl: string; privateKeyPem: string; issuer: string; audience: string; cacheTtlMs: number; cacheMax: number };
export type AuthConfig =
  | { kind: 'dev'; maxAgeSec: number }
  | { kind: 'jwt'; publicKeyPem?: string; jwksUrl?: string; issuer: string; audience: string; maxAgeSec: number };

export interface Config {
  readonly port: number;
  readonly host: string;
  readonly dataDir: string;
  readonly store: StoreConfig;
  readonly bus: BusConfig;
  readonly profiles: ProfilesConfig;
  readonly auth: AuthConfig;
  /** Browser origins allowed on /ws and by CORS; ['*'] allows any. */
  readonly allowedOrigins: readonly string[];
  readonly maxContentChars: number;
  /** Per user and instance: /api requests per minute, and sends (REST and STOMP together) per minute; 0 = no limit. */
  readonly rateLimitPerMinute: number;
  /** STOMP abuse limits, per instance. */
  readonly stompLimits: StompLimitsConfig;
  /** Peers whose X-Forwarded-For is believed (for client addresses); empty = none. */
  readonly trustProxy: readonly string[];
  /** Real-time connections not yet authenticated, per instance and per client address. */
  readonly maxPendingConnections: number;
  readonly maxPendingConnectionsPerAddress: number;
  /** A separate port for probes and metrics (never exposed by the ingress); undefined = the public port. */
  readonly managementPort: number | undefined;
  /** Readiness fails while the oldest unpublished outbox row is older than this. */
  readonly readyMaxOutboxLagMs: number;
  /** How long a SIGTERM drain may take before the process exits anyway. */
  readonly shutdownTimeoutMs: number;
  /** OpenTelemetry traces to an OTLP/HTTP endpoint; undefined = tracing off. */
  readonly tracing: { readonly endpoint: string; readonly serviceName: string } | undefined;
  /** Signed webhooks for offline notifications; undefined = off (and nothing is written for them). */
  readonly webhooks: WebhooksConfig | undefined;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  readonly instanceId: string;
  /** Presence across the cluster (docs/adr/0018). */
  readonly presence: PresenceConfig;
}

export interface PresenceConfig {
  /** A user's last connection here closed this long ago with none opened since: then offline. */
  readonly debounceMs: number;
  /** How often this instance records that it is alive (one row per instance) and sweeps dead ones. */
  readonly heartbeatMs: number;
  /** An instance not alive for this long is dead: its users are swept offline. */
  readonly deadAfterMs: number;
}

export interface StompLimitsConfig {
  /** Sustained frames per second per connection; 0 = no frame budget. */
  readonly framesPerSecond: number;
  /** Frames per connection at once above the sustained rate. */
  readonly frameBurst: number;
  /** Open STOMP connections per user. */
  readonly maxConnectionsPerUser: number;
  /** Silence after which a connection without agreed heart-beats is closed; 0 = never. */
  readonly idleTimeoutMs: number;
}

export interface WebhooksConfig {
  readonly url: string;
  readonly secret: string;
  /** The webhook types sent; the store writes rows only for these. */
  readonly events: readonly WebhookEventType[];
  readonly maxAttempts: number;
  readonly timeoutMs: number;
  readonly includeContent: boolean;
  readonly concurrency: number;
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function intVar(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name}: must be an integer, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(`${name}: must be between ${min} and ${max}, got ${value}`);
  return value;
}

function urlVar(env: Env, name: string, protocols: readonly string[]): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${name}: must be a URL (${protocols.join(' or ')})`);
  }
  if (!protocols.includes(url.protocol)) throw new ConfigError(`${name}: must be a ${protocols.map((p) => p + '//').join(' or ')} URL`);
  return raw;
}

/** PEM keys arrive through env files and orchestrators with literal "\n"; accept both forms. */
function pemVar(env: Env, name: string, kind: 'PUBLIC KEY' | 'PRIVATE KEY'): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const pem = raw.includes('\\n') ? raw.replaceAll('\\n', '\n') : raw;
  if (!pem.includes(`-----BEGIN ${kind}-----`)) throw new ConfigError(`${name}: must be a PEM "${kind}" (-----BEGIN ${kind}-----)`);
  return pem;
}

/** A duration in seconds: a plain number of seconds, or a number with s, m, h or d. */
function durationSecVar(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = stringVar(env, name);
  if (raw === undefined) return fallback;
  const match = /^(\d+)\s*([smhd]?)$/.exec(raw);
  if (!match) throw new ConfigError(`${name}: must be a duration like 86400, 90m, 24h or 7d, got "${raw}"`);
  const value = Number(match[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[match[2] as '' | 's' | 'm' | 'h' | 'd'];
  if (value < min || value > max) throw new ConfigError(`${name}: must be between ${min} s and ${max} s, got ${value} s`);
  return value;
}

/** Trusted proxies: `false`, or comma-separated addresses, CIDRs, `loopback`, `linklocal`, `uniquelocal`. */
function trustProxyVar(env: Env, name: string): string[] {
  const raw = stringVar(env, name) ?? 'loopback';
  if (raw.toLowerCase() === 'false') return [];
  if (raw.toLowerCase() === 'true') {
    throw new ConfigError(`${name}: "true" would believe any client's X-Forwarded-For; list your proxies (addresses, CIDRs, loopback, linklocal, uniquelocal) or say false`);
  }
  const entries = raw.split(',').map((e) => e.trim()).filter(Boolean);
  try {
    proxyAddr.compile(entries);
  } catch (err) {
    throw new ConfigError(`${name}: ${(err as Error).message} (expected addresses, CIDRs, loopback, linklocal, uniquelocal, or false)`);
  }
  return entries;
}

function boolVar(env: Env, name: string, fallback: boolean): boolean {
  const raw = stringVar(env, name)?.toLowerCase();
  if (raw === undefined) return fallback;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new ConfigError(`${name}: must be true or false, got "${raw}"`);
}

function webhooksVar(env: Env): WebhooksConfig | undefined {
  const url = urlVar(env, 'WEBHOOK_URL', ['http:', 'https:']);
  if (!url) return undefined;
  // Without a secret a receiver could not tell our requests from anyone's.
  const secret = env.WEBHOOK_SECRET;
  if (!secret) throw new ConfigError('WEBHOOK_SECRET: required with WEBHOOK_URL (the key receivers verify signatures with)');
  const listed = (stringVar(env, 'WEBHOOK_EVENTS') ?? WEBHOOK_EVENT_TYPES.join(','))
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
  for (const type of listed) {
    if (!isWebhookEventType(type)) throw new ConfigError(`WEBHOOK_EVENTS: unknown type "${type}" (known: ${WEBHOOK_EVENT_TYPES.join(', ')})`);
  }
  if (listed.length === 0) throw new ConfigError(`WEBHOOK_EVENTS: list at least one of ${WEBHOOK_EVENT_TYPES.join(', ')}, or unset WEBHOOK_URL`);
  const retryInitialMs = intVar(env, 'WEBHOOK_RETRY_INITIAL_MS', 1_000, 1, 3600_000);
  const retryMaxMs = intVar(env, 'WEBHOOK_RETRY_MAX_MS', 300_000, 1, 24 * 3600_000);
  if (retryMaxMs < retryInitialMs) throw new ConfigError(`WEBHOOK_RETRY_MAX_MS: must be at least WEBHOOK_RETRY_INITIAL_MS (${retryInitialMs})`);
  return {
    url,
    secret,
    events: [...new Set(listed as WebhookEventType[])],
    maxAttempts: intVar(env, 'WEBHOOK_MAX_ATTEMPTS', 10, 1, 1000),
    timeoutMs: intVar(env, 'WEBHOOK_TIMEOUT_MS', 10_000, 100, 300_000),
    includeContent: boolVar(env, 'WEBHOOK_INCLUDE_CONTENT', true),
    concurrency: intVar(env, 'WEBHOOK_CONCURRENCY', 16, 1, 1000),
    retryInitialMs,
    retryMaxMs,
  };
}

function stringVar(env: Env, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw.trim() === '' ? undefined : raw.trim();
}

function queueNameVar(env: Env, name: string): string | undefined {
  const value = stringVar(env, name);
  // AMQP short strings; amq.* names are reserved by the broker.
  if (value !== undefined && (!/^[\w.:-]{1,200}$/.test(value) || value.startsWith('amq.'))) {
    throw new ConfigError(`${name}: "${value}" must be 1-200 letters, digits, '.', '_', ':' or '-', and not start with amq.`);
  }
  return value;
}

export function loadConfig(env: Env = process.env): Config {
  const dataDir = path.resolve(stringVar(env, 'DATA_DIR') ?? './data');
  const databaseUrl = urlVar(env, 'DATABASE_URL', ['postgres:', 'postgresql:']);
  const amqpUrl = urlVar(env, 'AMQP_URL', ['amqp:', 'amqps:']);
  const profileUrl = urlVar(env, 'PROFILE_SERVICE_URL', ['http:', 'https:']);
  const servicePrivateKey = pemVar(env, 'SERVICE_JWT_PRIVATE_KEY', 'PRIVATE KEY');
  const jwtPublicKey = pemVar(env, 'JWT_PUBLIC_KEY', 'PUBLIC KEY');
  const jwksUrl = urlVar(env, 'JWT_JWKS_URL', ['http:', 'https:']);

  if (profileUrl && !servicePrivateKey) throw new ConfigError('SERVICE_JWT_PRIVATE_KEY: required when PROFILE_SERVICE_URL is set');
  if (jwtPublicKey && jwksUrl) throw new ConfigError('JWT_PUBLIC_KEY: set either JWT_PUBLIC_KEY or JWT_JWKS_URL, not both');

  const logLevel = stringVar(env, 'LOG_LEVEL') ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new ConfigError(`LOG_LEVEL: must be one of ${LOG_LEVELS.join(', ')}`);

  const maxAgeSec = durationSecVar(env, 'JWT_MAX_AGE', 24 * 3600, 60, 366 * 86400);
  let auth: AuthConfig;
  if (jwtPublicKey || jwksUrl) {
    // Without both, a token minted by the same IdP for any other application would be accepted here.
    const issuer = stringVar(env, 'JWT_ISSUER');
    const audience = stringVar(env, 'JWT_AUDIENCE');
    const keyVar = jwtPublicKey ? 'JWT_PUBLIC_KEY' : 'JWT_JWKS_URL';
    if (!issuer) throw new ConfigError(`JWT_ISSUER: required with ${keyVar} (the iss your identity provider puts in client tokens)`);
    if (!audience) throw new ConfigError(`JWT_AUDIENCE: required with ${keyVar} (the aud your identity provider issues for this service)`);
    auth = { kind: 'jwt', publicKeyPem: jwtPublicKey, jwksUrl, issuer, audience, maxAgeSec };
  } else {
    auth = { kind: 'dev', maxAgeSec };
  }

  const origins = (stringVar(env, 'ALLOWED_ORIGINS') ?? (auth.kind === 'dev' ? '*' : ''))
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean);
  for (const origin of origins) {
    if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(`ALLOWED_ORIGINS: "${origin}" must be an origin like https://chat.example.com (no path)`);
    }
  }

  const otlpEndpoint = urlVar(env, 'OTEL_EXPORTER_OTLP_ENDPOINT', ['http:', 'https:']);
  const config: Config = {
    port: intVar(env, 'PORT', 8080, 0, 65535),
    // Anyone who reaches the dev issuer can mint a token for any user: by default only this machine can.
    host: stringVar(env, 'HOST') ?? (auth.kind === 'dev' ? '127.0.0.1' : '0.0.0.0'),
    dataDir,
    store: databaseUrl
      ? { kind: 'postgres', url: databaseUrl, poolSize: intVar(env, 'DATABASE_POOL_SIZE', 10, 1, 200) }
      : { kind: 'pglite', dataDir },
    bus: amqpUrl ? { kind: 'rabbitmq', url: amqpUrl, sendQueue: queueNameVar(env, 'SEND_QUEUE') ?? 'chat.send.queue' } : { kind: 'memory' },
    profiles:
      profileUrl && servicePrivateKey
        ? {
            kind: 'http',
            baseUrl: profileUrl.replace(/\/+$/, ''),
            privateKeyPem: servicePrivateKey,
            issuer: stringVar(env, 'SERVICE_JWT_ISSUER') ?? 'chat-service',
            audience: stringVar(env, 'SERVICE_JWT_AUDIENCE') ?? 'profile-service',
            cacheTtlMs: intVar(env, 'PROFILE_CACHE_TTL_MS', 15 * 60_000, 0, 24 * 3600_000),
            cacheMax: intVar(env, 'PROFILE_CACHE_MAX', 50_000, 1, 10_000_000),
          }
        : { kind: 'local' },
    auth,
    allowedOrigins: origins,
    maxContentChars: intVar(env, 'MAX_CONTENT_CHARS', 4000, 1, 100_000),
    rateLimitPerMinute: intVar(env, 'RATE_LIMIT_PER_MINUTE', 1200, 0, 10_000_000),
    stompLimits: {
      framesPerSecond: intVar(env, 'STOMP_FRAMES_PER_SECOND', 500, 0, 1_000_000),
      frameBurst: intVar(env, 'STOMP_FRAME_BURST', 1000, 1, 10_000_000),
      maxConnectionsPerUser: intVar(env, 'MAX_CONNECTIONS_PER_USER', 20, 1, 1_000_000),
      idleTimeoutMs: intVar(env, 'STOMP_IDLE_TIMEOUT_MS', 120_000, 0, 24 * 3600_000),
    },
    trustProxy: trustProxyVar(env, 'TRUST_PROXY'),
    maxPendingConnections: intVar(env, 'MAX_PENDING_CONNECTIONS', 1000, 1, 1_000_000),
    maxPendingConnectionsPerAddress: intVar(env, 'MAX_PENDING_CONNECTIONS_PER_ADDRESS', 100, 1, 1_000_000),
    managementPort: env.MANAGEMENT_PORT ? intVar(env, 'MANAGEMENT_PORT', 0, 0, 65535) : undefined,
    readyMaxOutboxLagMs: intVar(env, 'READY_MAX_OUTBOX_LAG_MS', 30_000, 1, 24 * 3600_000),
    shutdownTimeoutMs: intVar(env, 'SHUTDOWN_TIMEOUT_MS', 20_000, 1, 3600_000),
    tracing: otlpEndpoint ? { endpoint: otlpEndpoint, serviceName: stringVar(env, 'OTEL_SERVICE_NAME') ?? 'chat-service' } : undefined,
    webhooks: webhooksVar(env),
    logLevel: logLevel as Config['logLevel'],
    instanceId: stringVar(env, 'INSTANCE_ID') ?? `${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
    presence: presenceConfig(env),
  };
  return deepFreeze(config);
}

function presenceConfig(env: Env): PresenceConfig {
  const heartbeatMs = intVar(env, 'PRESENCE_HEARTBEAT_MS', 10_000, 100, 3600_000);
  const deadAfterMs = intVar(env, 'PRESENCE_DEAD_AFTER_MS', 30_000, 300, 24 * 3600_000);
  // Two missed heart-beats at least, or a live instance that is merely slow would be swept.
  if (deadAfterMs < 2 * heartbeatMs) throw new ConfigError(`PRESENCE_DEAD_AFTER_MS: must be at least twice PRESENCE_HEARTBEAT_MS (${heartbeatMs}), got ${deadAfterMs}`);
  return { debounceMs: intVar(env, 'PRESENCE_DEBOUNCE_MS', 5_000, 0, 3600_000), heartbeatMs, deadAfterMs };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** Every variable loadConfig reads; a test checks the README's table lists each. */
export const CONFIG_VARIABLES = [
  'PORT', 'HOST', 'DATA_DIR', 'DATABASE_URL', 'DATABASE_POOL_SIZE', 'AMQP_URL', 'PROFILE_SERVICE_URL',
  'SERVICE_JWT_PRIVATE_KEY', 'SERVICE_JWT_ISSUER', 'SERVICE_JWT_AUDIENCE', 'PROFILE_CACHE_TTL_MS', 'PROFILE_CACHE_MAX',
  'JWT_PUBLIC_KEY', 'JWT_JWKS_URL', 'JWT_ISSUER', 'JWT_AUDIENCE', 'ALLOWED_ORIGINS', 'MAX_CONTENT_CHARS', 'LOG_LEVEL', 'INSTANCE_ID',
  'SEND_QUEUE', 'RATE_LIMIT_PER_MINUTE', 'STOMP_FRAMES_PER_SECOND', 'STOMP_FRAME_BURST', 'MAX_CONNECTIONS_PER_USER',
  'STOMP_IDLE_TIMEOUT_MS', 'JWT_MAX_AGE',
  'TRUST_PROXY', 'MAX_PENDING_CONNECTIONS', 'MAX_PENDING_CONNECTIONS_PER_ADDRESS',
  'MANAGEMENT_PORT', 'READY_MAX_OUTBOX_LAG_MS', 'SHUTDOWN_TIMEOUT_MS', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_SERVICE_NAME',
  'WEBHOOK_URL', 'WEBHOOK_SECRET', 'WEBHOOK_EVENTS', 'WEBHOOK_MAX_ATTEMPTS', 'WEBHOOK_TIMEOUT_MS', 'WEBHOOK_INCLUDE_CONTENT',
  'WEBHOOK_CONCURRENCY', 'WEBHOOK_RETRY_INITIAL_MS', 'WEBHOOK_RETRY_MAX_MS',
  'PRESENCE_DEBOUNCE_MS', 'PRESENCE_HEARTBEAT_MS', 'PRESENCE_DEAD_AFTER_MS',
] as const;
