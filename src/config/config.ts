/**
 * The service's configuration: read from the environment once, validated, frozen. Nothing else
 * reads process.env. Every error names the variable, so a bad deployment fails at start-up.
 */
import path from 'node:path';

export type StoreConfig = { kind: 'pglite'; dataDir: string } | { kind: 'postgres'; url: string; poolSize: number };
export type BusConfig = { kind: 'memory' } | { kind: 'rabbitmq'; url: string; sendQueue: string };
export type ProfilesConfig =
  | { kind: 'local' }
  | { kind: 'http'; baseUrl: string; privateKeyPem: string; issuer: string; audience: string; cacheTtlMs: number; cacheMax: number };
export type AuthConfig =
  | { kind: 'dev'; dataDir: string }
  | { kind: 'jwt'; publicKeyPem?: string; jwksUrl?: string; issuer?: string; audience?: string };

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
  /** Per user and instance: /api requests per minute, and STOMP sends per minute; 0 = no limit. */
  readonly rateLimitPerMinute: number;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  readonly instanceId: string;
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

  const auth: AuthConfig =
    jwtPublicKey || jwksUrl
      ? { kind: 'jwt', publicKeyPem: jwtPublicKey, jwksUrl, issuer: stringVar(env, 'JWT_ISSUER'), audience: stringVar(env, 'JWT_AUDIENCE') }
      : { kind: 'dev', dataDir };

  const origins = (stringVar(env, 'ALLOWED_ORIGINS') ?? (auth.kind === 'dev' ? '*' : ''))
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean);
  for (const origin of origins) {
    if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(`ALLOWED_ORIGINS: "${origin}" must be an origin like https://chat.example.com (no path)`);
    }
  }

  const config: Config = {
    port: intVar(env, 'PORT', 8080, 0, 65535),
    host: stringVar(env, 'HOST') ?? '0.0.0.0',
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
    logLevel: logLevel as Config['logLevel'],
    instanceId: stringVar(env, 'INSTANCE_ID') ?? `${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
  };
  return deepFreeze(config);
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
  'SEND_QUEUE', 'RATE_LIMIT_PER_MINUTE',
] as const;
