import fs from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES, ConfigError, loadConfig } from './config.js';

const publicPem = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
const privatePem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

describe('loadConfig', () => {
  it('runs embedded with no configuration at all', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({ port: 8080, host: '127.0.0.1', store: { kind: 'pglite' }, bus: { kind: 'memory' }, profiles: { kind: 'local' }, auth: { kind: 'dev' }, allowedOrigins: ['*'], maxContentChars: 4000, rateLimitPerMinute: 1200, logLevel: 'info' });
    expect(Object.isFrozen(config) && Object.isFrozen(config.store)).toBe(true);
  });

  it('picks each backing service by its own variable', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://u@db:5432/chat',
      AMQP_URL: 'amqp://guest:guest@mq:5672',
      PROFILE_SERVICE_URL: 'http://profiles:9000/',
      SERVICE_JWT_PRIVATE_KEY: privatePem.replaceAll('\n', '\\n'),
      JWT_PUBLIC_KEY: publicPem,
      JWT_ISSUER: 'https://idp.example.com',
      JWT_AUDIENCE: 'chat',
      ALLOWED_ORIGINS: 'https://chat.example.com, https://m.example.com',
    });
    expect(config.store).toMatchObject({ kind: 'postgres', url: 'postgres://u@db:5432/chat' });
    expect(config.bus).toEqual({ kind: 'rabbitmq', url: 'amqp://guest:guest@mq:5672', sendQueue: 'chat.send.queue' });
    expect(config.profiles).toMatchObject({ kind: 'http', baseUrl: 'http://profiles:9000', cacheTtlMs: 900_000, cacheMax: 50_000 });
    expect(config.auth).toMatchObject({ kind: 'jwt', publicKeyPem: publicPem, issuer: 'https://idp.example.com', audience: 'chat', maxAgeSec: 86_400 });
    expect(config.host).toBe('0.0.0.0');
    expect(config.allowedOrigins).toEqual(['https://chat.example.com', 'https://m.example.com']);
  });

  it('has webhooks off unless WEBHOOK_URL is set, and then needs a secret', () => {
    expect(loadConfig({}).webhooks).toBeUndefined();
    expect(loadConfig({ WEBHOOK_SECRET: 's', WEBHOOK_EVENTS: 'message.created' }).webhooks).toBeUndefined();
    expect(() => loadConfig({ WEBHOOK_URL: 'https://push.example.com/hooks' })).toThrow(/WEBHOOK_SECRET: required/);
    expect(() => loadConfig({ WEBHOOK_URL: 'ftp://push.example.com', WEBHOOK_SECRET: 's' })).toThrow(/WEBHOOK_URL/);
    const config = loadConfig({ WEBHOOK_URL: 'https://push.example.com/hooks', WEBHOOK_SECRET: 'whsec_abc' });
    expect(config.webhooks).toEqual({
      url: 'https://push.example.com/hooks',
      secret: 'whsec_abc',
      events: ['message.created', 'message.edited', 'message.deleted', 'report.created'],
      maxAttempts: 10,
      timeoutMs: 10_000,
      includeContent: true,
      concurrency: 16,
      retryInitialMs: 1_000,
      retryMaxMs: 300_000,
    });
  });

  it('reads the webhook options and refuses unknown event types and bad values', () => {
    const base = { WEBHOOK_URL: 'http://127.0.0.1:8099/', WEBHOOK_SECRET: 's' };
    const config = loadConfig({
      ...base,
      WEBHOOK_EVENTS: ' message.created , report.created,message.created',
      WEBHOOK_MAX_ATTEMPTS: '3',
      WEBHOOK_TIMEOUT_MS: '2500',
      WEBHOOK_INCLUDE_CONTENT: 'false',
      WEBHOOK_CONCURRENCY: '4',
      WEBHOOK_RETRY_INITIAL_MS: '200',
      WEBHOOK_RETRY_MAX_MS: '2000',
    });
    expect(config.webhooks).toMatchObject({ events: ['message.created', 'report.created'], maxAttempts: 3, timeoutMs: 2500, includeContent: false, concurrency: 4, retryInitialMs: 200, retryMaxMs: 2000 });
    expect(() => loadConfig({ ...base, WEBHOOK_EVENTS: 'message.created,message.read' })).toThrow(/WEBHOOK_EVENTS: unknown type "message.read"/);
    expect(() => loadConfig({ ...base, WEBHOOK_EVENTS: ' , ' })).toThrow(/WEBHOOK_EVENTS/);
    expect(() => loadConfig({ ...base, WEBHOOK_INCLUDE_CONTENT: 'no' })).toThrow(/WEBHOOK_INCLUDE_CONTENT/);
    expect(() => loadConfig({ ...base, WEBHOOK_MAX_ATTEMPTS: '0' })).toThrow(/WEBHOOK_MAX_ATTEMPTS/);
    expect(() => loadConfig({ ...base, WEBHOOK_RETRY_INITIAL_MS: '5000', WEBHOOK_RETRY_MAX_MS: '1000' })).toThrow(/WEBHOOK_RETRY_MAX_MS/);
  });

  it('names the send queue and turns the rate limit off on request', () => {
    const config = loadConfig({ AMQP_URL: 'amqp://mq', SEND_QUEUE: 'staging.chat.send.queue', RATE_LIMIT_PER_MINUTE: '0' });
    expect(config.bus).toEqual({ kind: 'rabbitmq', url: 'amqp://mq', sendQueue: 'staging.chat.send.queue' });
    expect(config.rateLimitPerMinute).toBe(0);
  });

  it.each([
    [{ PORT: 'eighty' }, /^PORT: must be an integer/],
    [{ PORT: '70000' }, /^PORT: must be between/],
    [{ DATABASE_URL: 'mysql://x' }, /^DATABASE_URL: must be a postgres:\/\//],
    [{ DATABASE_URL: 'not a url' }, /^DATABASE_URL: must be a URL/],
    [{ AMQP_URL: 'http://mq' }, /^AMQP_URL:/],
    [{ PROFILE_SERVICE_URL: 'http://profiles' }, /^SERVICE_JWT_PRIVATE_KEY: required/],
    [{ JWT_PUBLIC_KEY: 'abc' }, /^JWT_PUBLIC_KEY: must be a PEM/],
    [{ JWT_PUBLIC_KEY: publicPem, JWT_JWKS_URL: 'https://idp/jwks' }, /^JWT_PUBLIC_KEY: set either/],
    [{ JWT_PUBLIC_KEY: publicPem, JWT_AUDIENCE: 'chat' }, /^JWT_ISSUER: required with JWT_PUBLIC_KEY/],
    [{ JWT_JWKS_URL: 'https://idp/jwks', JWT_ISSUER: 'https://idp' }, /^JWT_AUDIENCE: required with JWT_JWKS_URL/],
    [{ JWT_MAX_AGE: 'a day' }, /^JWT_MAX_AGE: must be a duration/],
    [{ JWT_MAX_AGE: '10' }, /^JWT_MAX_AGE: must be between/],
    [{ MAX_CONTENT_CHARS: '0' }, /^MAX_CONTENT_CHARS:/],
    [{ AMQP_URL: 'amqp://mq', SEND_QUEUE: 'amq.send' }, /^SEND_QUEUE:/],
    [{ AMQP_URL: 'amqp://mq', SEND_QUEUE: 'chat send' }, /^SEND_QUEUE:/],
    [{ RATE_LIMIT_PER_MINUTE: '-1' }, /^RATE_LIMIT_PER_MINUTE:/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL:/],
    [{ ALLOWED_ORIGINS: 'https://x.example.com/path' }, /^ALLOWED_ORIGINS:/],
    [{ PRESENCE_DEBOUNCE_MS: '-1' }, /^PRESENCE_DEBOUNCE_MS:/],
    [{ PRESENCE_HEARTBEAT_MS: '10000', PRESENCE_DEAD_AFTER_MS: '15000' }, /^PRESENCE_DEAD_AFTER_MS: must be at least twice/],
  ])('refuses %o naming the variable', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  it('reports a crashed instance offline within 60 s by default: beat 10 s, dead after 30 s, debounce 5 s', () => {
    const { presence } = loadConfig({});
    expect(presence).toEqual({ debounceMs: 5_000, heartbeatMs: 10_000, deadAfterMs: 30_000 });
    // Dead after deadAfterMs without a beat, swept within one more beat (docs/adr/0018).
    expect(presence.deadAfterMs + presence.heartbeatMs).toBeLessThanOrEqual(60_000);
    expect(loadConfig({ PRESENCE_HEARTBEAT_MS: '500', PRESENCE_DEAD_AFTER_MS: '2500', PRESENCE_DEBOUNCE_MS: '0' }).presence).toEqual({ debounceMs: 0, heartbeatMs: 500, deadAfterMs: 2_500 });
  });

  it('allows no browser origin by default with production auth', () => {
    expect(loadConfig({ JWT_PUBLIC_KEY: publicPem, JWT_ISSUER: 'https://idp', JWT_AUDIENCE: 'chat' }).allowedOrigins).toEqual([]);
  });

  it('reads JWT_MAX_AGE as seconds or with a unit', () => {
    expect(loadConfig({ JWT_MAX_AGE: '3600' }).auth.maxAgeSec).toBe(3600);
    expect(loadConfig({ JWT_MAX_AGE: '90m' }).auth.maxAgeSec).toBe(5400);
    expect(loadConfig({ JWT_MAX_AGE: '7d' }).auth.maxAgeSec).toBe(604_800);
  });

  it('listens on loopback only with the dev token issuer, unless HOST says otherwise', () => {
    expect(loadConfig({}).host).toBe('127.0.0.1');
    expect(loadConfig({ HOST: '0.0.0.0' }).host).toBe('0.0.0.0');
  });

  it('is documented: the README configuration table lists every variable', () => {
    const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const missing = CONFIG_VARIABLES.filter((name) => !readme.includes(`\`${name}\``));
    expect(missing).toEqual([]);
  });
});
