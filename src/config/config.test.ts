import fs from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES, ConfigError, loadConfig } from './config.js';

const publicPem = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
const privatePem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

describe('loadConfig', () => {
  it('runs embedded with no configuration at all', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({ port: 8080, host: '0.0.0.0', store: { kind: 'pglite' }, bus: { kind: 'memory' }, profiles: { kind: 'local' }, auth: { kind: 'dev' }, allowedOrigins: ['*'], maxContentChars: 4000, rateLimitPerMinute: 1200, logLevel: 'info' });
    expect(Object.isFrozen(config) && Object.isFrozen(config.store)).toBe(true);
  });

  it('picks each backing service by its own variable', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://u@db:5432/chat',
      AMQP_URL: 'amqp://guest:guest@mq:5672',
      PROFILE_SERVICE_URL: 'http://profiles:9000/',
      SERVICE_JWT_PRIVATE_KEY: privatePem.replaceAll('\n', '\\n'),
      JWT_PUBLIC_KEY: publicPem,
      ALLOWED_ORIGINS: 'https://chat.example.com, https://m.example.com',
    });
    expect(config.store).toMatchObject({ kind: 'postgres', url: 'postgres://u@db:5432/chat' });
    expect(config.bus).toEqual({ kind: 'rabbitmq', url: 'amqp://guest:guest@mq:5672', sendQueue: 'chat.send.queue' });
    expect(config.profiles).toMatchObject({ kind: 'http', baseUrl: 'http://profiles:9000', cacheTtlMs: 900_000, cacheMax: 50_000 });
    expect(config.auth).toMatchObject({ kind: 'jwt', publicKeyPem: publicPem });
    expect(config.allowedOrigins).toEqual(['https://chat.example.com', 'https://m.example.com']);
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
    [{ MAX_CONTENT_CHARS: '0' }, /^MAX_CONTENT_CHARS:/],
    [{ AMQP_URL: 'amqp://mq', SEND_QUEUE: 'amq.send' }, /^SEND_QUEUE:/],
    [{ AMQP_URL: 'amqp://mq', SEND_QUEUE: 'chat send' }, /^SEND_QUEUE:/],
    [{ RATE_LIMIT_PER_MINUTE: '-1' }, /^RATE_LIMIT_PER_MINUTE:/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL:/],
    [{ ALLOWED_ORIGINS: 'https://x.example.com/path' }, /^ALLOWED_ORIGINS:/],
  ])('refuses %o naming the variable', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  it('allows no browser origin by default with production auth', () => {
    expect(loadConfig({ JWT_PUBLIC_KEY: publicPem }).allowedOrigins).toEqual([]);
  });

  it('is documented: the README configuration table lists every variable', () => {
    const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const missing = CONFIG_VARIABLES.filter((name) => !readme.includes(`\`${name}\``));
    expect(missing).toEqual([]);
  });
});
