/**
 * HttpProfileDirectory against the reference profile service over real HTTP (port 0). Failures are
 * injected through the service's `faults`; requests are counted there, so "no request was made"
 * is an observed outcome, not a mock expectation.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { SignJWT, decodeJwt } from 'jose';
import pino from 'pino';
import { Registry, register as globalRegistry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { startProfileService, type ProfileService, type ProfileServiceOptions, type SeedProfile } from '../../tools/profile-service/profile-service.js';
import { ChatError } from '../chat/chat-errors.js';
import { HttpProfileDirectory, type HttpProfileDirectoryOptions } from './http-profile-directory.js';
import { ServiceTokenSigner } from './service-token-signer.js';

const logger = pino({ level: 'silent' });
const ISSUER = 'chat-service';
const AUDIENCE = 'profile-service';
const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const privateKeyPem = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const foreign = generateKeyPairSync('rsa', { modulusLength: 2048 });
const foreignKeyPem = foreign.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

const newEmail = (name = 'user'): string => `${name}.${randomUUID().slice(0, 8)}@example.com`;
const seed = (email: string, displayName = 'Someone', intent = 'dating'): SeedProfile => ({ id: randomUUID(), email, intent, displayName });

interface Setup {
  service: ProfileService;
  directory: HttpProfileDirectory;
  registry: Registry;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setup(options: { service?: Partial<ProfileServiceOptions>; directory?: Partial<HttpProfileDirectoryOptions> } = {}): Promise<Setup> {
  const service = await startProfileService({ publicKey: keys.publicKey, issuer: ISSUER, audience: AUDIENCE, ...options.service });
  cleanups.push(() => service.close());
  const registry = new Registry();
  const directory = new HttpProfileDirectory({
    baseUrl: service.url,
    privateKeyPem,
    issuer: ISSUER,
    audience: AUDIENCE,
    cacheTtlMs: 60_000,
    cacheMax: 1000,
    timeoutMs: 1000,
    retries: 1,
    backoff: { initialDelayMs: 5, maxDelayMs: 20 },
    breaker: { threshold: 3, halfOpenAfterMs: 60_000 },
    logger,
    registry,
    ...options.directory,
  });
  return { service, directory, registry };
}

async function chatErrorOf(promise: Promise<unknown>): Promise<ChatError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ChatError);
  return err as ChatError;
}

/** Looks up fresh emails until the circuit opens (each failed attempt counts toward it). */
async function openCircuit(directory: HttpProfileDirectory): Promise<void> {
  await vi.waitFor(
    async () => {
      await directory.resolve(newEmail(), 'dating').catch(() => undefined);
      expect(directory.circuitState).toBe('open');
    },
    { timeout: 10_000, interval: 1 },
  );
}

/** An uncached lookup while the circuit is open: refused without I/O, well under 50 ms. */
async function expectFastFailure({ directory, service }: Setup): Promise<void> {
  const requestsBefore = service.faults.requests;
  const started = performance.now();
  const err = await chatErrorOf(directory.resolve(newEmail(), 'dating'));
  const elapsedMs = performance.now() - started;
  expect(err.code).toBe('PROFILE_SERVICE_UNAVAILABLE');
  expect(err.status).toBe(503);
  expect(elapsedMs).toBeLessThan(50);
  expect(service.faults.requests).toBe(requestsBefore);
}

async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  const matching = values.filter((v) => Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want));
  return matching.reduce((sum, v) => sum + v.value, 0);
}

const signToken = (key: Parameters<SignJWT['sign']>[0], claims: { exp?: number; aud?: string; alg?: string } = {}) => {
  const jwt = new SignJWT({})
    .setProtectedHeader({ alg: claims.alg ?? 'RS256' })
    .setIssuer(ISSUER)
    .setSubject(ISSUER)
    .setAudience(claims.aud ?? AUDIENCE)
    .setIssuedAt();
  if (claims.exp !== undefined) jwt.setExpirationTime(claims.exp);
  return jwt.sign(key);
};

const profileUrl = (service: ProfileService, email: string) => `${service.url}/internal/chat-service/users/${encodeURIComponent(email)}/profile/dating`;

describe('service JWT', () => {
  it('sends a service token that the profile service verifies', async () => {
    const email = newEmail('ann');
    const ann = seed(email, 'Ann');
    const { directory, service } = await setup({ service: { profiles: [ann] } });
    expect(await directory.resolve(email, 'dating')).toEqual({ id: ann.id, email, displayName: 'Ann' });
    expect(service.faults.requests).toBe(1);
    expect(service.faults.refused).toBe(0);
  });

  it('is refused by the service when expired', async () => {
    const email = newEmail();
    const { service } = await setup({ service: { profiles: [seed(email)] } });
    const expired = await signToken(keys.privateKey, { exp: Math.floor(Date.now() / 1000) - 60 });
    const fresh = await signToken(keys.privateKey, { exp: Math.floor(Date.now() / 1000) + 60 });
    expect((await fetch(profileUrl(service, email), { headers: { authorization: `Bearer ${expired}` } })).status).toBe(401);
    expect((await fetch(profileUrl(service, email), { headers: { authorization: `Bearer ${fresh}` } })).status).toBe(200);
  });

  it('is refused by the service when signed by a foreign key, for the wrong audience, without exp, or missing', async () => {
    const email = newEmail();
    const { service } = await setup({ service: { profiles: [seed(email)] } });
    const exp = Math.floor(Date.now() / 1000) + 60;
    const tokens = [
      await signToken(foreign.privateKey, { exp }),
      await signToken(keys.privateKey, { exp, aud: 'someone-else' }),
      await signToken(keys.privateKey),
      await signToken(new TextEncoder().encode('a shared secret that is long enough!'), { exp, alg: 'HS256' }),
    ];
    for (const token of tokens) {
      expect((await fetch(profileUrl(service, email), { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    }
    expect((await fetch(profileUrl(service, email))).status).toBe(401);
    expect(service.faults.refused).toBe(5);
  });

  it('reports the service unavailable, without retrying, when the service refuses its token', async () => {
    const email = newEmail();
    const { directory, service } = await setup({ service: { profiles: [seed(email)] }, directory: { privateKeyPem: foreignKeyPem } });
    expect((await chatErrorOf(directory.resolve(email, 'dating'))).code).toBe('PROFILE_SERVICE_UNAVAILABLE');
    expect(service.faults.refused).toBe(1);
    expect(service.faults.requests).toBe(1);
  });
});

describe('ServiceTokenSigner', () => {
  it('reuses one token until 30 seconds before its 2-minute expiry', async () => {
    let now = Date.UTC(2030, 0, 1);
    const signer = new ServiceTokenSigner({ privateKeyPem, issuer: ISSUER, audience: AUDIENCE, now: () => now });
    const [first, concurrent] = await Promise.all([signer.token(), signer.token()]);
    expect(concurrent).toBe(first);
    expect(decodeJwt(first)).toMatchObject({ iss: ISSUER, sub: ISSUER, aud: AUDIENCE, iat: now / 1000, exp: now / 1000 + 120 });
    now += 89_000;
    expect(await signer.token()).toBe(first);
    now += 2_000;
    const renewed = await signer.token();
    expect(renewed).not.toBe(first);
    expect(decodeJwt(renewed).exp).toBe(now / 1000 + 120);
  });

  it('refuses a key that cannot sign RS256', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(() => new ServiceTokenSigner({ privateKeyPem: ec, issuer: ISSUER, audience: AUDIENCE })).toThrow(/RSA/);
  });
});

describe('cache', () => {
  it('answers repeated lookups, in any letter case, from the cache without asking the service', async () => {
    const email = newEmail();
    const { directory, service, registry } = await setup({ service: { profiles: [seed(email)] } });
    const first = await directory.resolve(email, 'dating');
    expect(await directory.resolve(email.toUpperCase(), 'dating')).toEqual(first);
    expect(await directory.resolve(` ${email} `, 'dating')).toEqual(first);
    expect(await directory.byId(first.id)).toEqual(first);
    expect(service.faults.requests).toBe(1);
    expect(await metricValue(registry, 'chat_profile_cache_hits_total')).toBe(2);
    expect(await metricValue(registry, 'chat_profile_cache_misses_total')).toBe(1);
  });

  it('makes one request for concurrent lookups of one uncached profile', async () => {
    const email = newEmail();
    const { directory, service } = await setup({ service: { profiles: [seed(email)] } });
    service.faults.delay(50);
    const profiles = await Promise.all(Array.from({ length: 20 }, () => directory.resolve(email, 'dating')));
    expect(new Set(profiles.map((p) => p.id)).size).toBe(1);
    expect(service.faults.requests).toBe(1);
  });

  it('asks the service again once an entry has expired', async () => {
    const email = newEmail();
    const { directory, service } = await setup({ service: { profiles: [seed(email)] }, directory: { cacheTtlMs: 20 } });
    const first = await directory.resolve(email, 'dating');
    await expect.poll(async () => (await directory.resolve(email, 'dating')).id === first.id && service.faults.requests).toBe(2);
  });
});

describe('answers from the service', () => {
  it('throws PROFILE_NOT_FOUND for an unknown profile, without retrying or counting it against the service', async () => {
    const known = newEmail();
    const { directory, service, registry } = await setup({ service: { profiles: [seed(known)] } });
    for (let i = 0; i < 5; i++) {
      const err = await chatErrorOf(directory.resolve(newEmail(), 'dating'));
      expect(err.code).toBe('PROFILE_NOT_FOUND');
      expect(err.status).toBe(404);
    }
    expect(service.faults.requests).toBe(5);
    expect(directory.circuitState).toBe('closed');
    await directory.resolve(known, 'dating');
    expect(await metricValue(registry, 'chat_profile_lookups_total', { result: 'not_found' })).toBe(5);
  });

  it('retries a 500 and returns the profile when a retry succeeds', async () => {
    const email = newEmail();
    const { directory, service } = await setup({ service: { profiles: [seed(email)] }, directory: { retries: 2 } });
    service.faults.failNext(2);
    expect((await directory.resolve(email, 'dating')).email).toBe(email);
    expect(service.faults.requests).toBe(3);
  });

  it('treats a body that is not a profile as a failure and does not cache it', async () => {
    const email = newEmail();
    const { directory, service } = await setup({ service: { profiles: [seed(email)] } });
    service.faults.invalidBodyNext(1);
    expect((await chatErrorOf(directory.resolve(email, 'dating'))).code).toBe('PROFILE_SERVICE_UNAVAILABLE');
    expect(service.faults.requests).toBe(1);
    expect((await directory.resolve(email, 'dating')).email).toBe(email);
    expect(service.faults.requests).toBe(2);
  });
});

describe('circuit breaker', () => {
  it('opens after repeated 500s; then cached profiles are served and uncached lookups fail fast', async () => {
    const email = newEmail();
    const setupResult = await setup({ service: { profiles: [seed(email)] } });
    const { directory, service, registry } = setupResult;
    const cached = await directory.resolve(email, 'dating');
    service.faults.failAll(500);
    await openCircuit(directory);
    expect(await metricValue(registry, 'chat_profile_breaker_state')).toBe(1);
    const requests = service.faults.requests;
    expect(await directory.resolve(email, 'dating')).toEqual(cached);
    expect(await directory.byId(cached.id)).toEqual(cached);
    await expectFastFailure(setupResult);
    expect(service.faults.requests).toBe(requests);
  });

  it('opens after timeouts; then uncached lookups fail fast', async () => {
    const email = newEmail();
    const setupResult = await setup({ service: { profiles: [seed(email)] }, directory: { timeoutMs: 100 } });
    const { directory, service } = setupResult;
    const cached = await directory.resolve(email, 'dating');
    service.faults.delay(2_000);
    const started = performance.now();
    expect((await chatErrorOf(directory.resolve(newEmail(), 'dating'))).code).toBe('PROFILE_SERVICE_UNAVAILABLE');
    // Two attempts of 100 ms and a short backoff: a slow service delays a lookup boundedly.
    expect(performance.now() - started).toBeLessThan(1_000);
    await openCircuit(directory);
    expect(await directory.resolve(email, 'dating')).toEqual(cached);
    await expectFastFailure(setupResult);
  });

  it('serves a cached profile after its TTL expired while the service fails', async () => {
    const email = newEmail();
    const { directory, service, registry } = await setup({ service: { profiles: [seed(email)] }, directory: { cacheTtlMs: 20 } });
    const cached = await directory.resolve(email, 'dating');
    service.faults.failAll(503);
    // Once the entry has expired the directory asks the (failing) service, and still answers.
    await expect.poll(async () => (await directory.resolve(email, 'dating')).id === cached.id && service.faults.requests > 1).toBe(true);
    expect(await metricValue(registry, 'chat_profile_lookups_total', { result: 'stale' })).toBeGreaterThan(0);
    await openCircuit(directory);
    expect(await directory.resolve(email, 'dating')).toEqual(cached);
    expect(await directory.byId(cached.id)).toEqual(cached);
  });

  it('closes again once the service recovers', async () => {
    const email = newEmail();
    const { directory, service, registry } = await setup({ service: { autoCreate: true }, directory: { breaker: { threshold: 3, halfOpenAfterMs: 100 } } });
    service.faults.failAll(500);
    await openCircuit(directory);
    service.faults.reset();
    await vi.waitFor(() => directory.resolve(email, 'dating'), { timeout: 5_000, interval: 20 });
    expect(directory.circuitState).toBe('closed');
    expect(await metricValue(registry, 'chat_profile_breaker_state')).toBe(0);
    expect((await directory.resolve(newEmail(), 'dating')).id).toBeTruthy();
  });

  it('fails other uncached lookups fast while the half-open probe is in flight', async () => {
    const setupResult = await setup({ service: { autoCreate: true }, directory: { breaker: { threshold: 3, halfOpenAfterMs: 100 } } });
    const { directory, service } = setupResult;
    service.faults.failAll(500);
    await openCircuit(directory);
    service.faults.reset();
    service.faults.delay(300);
    const lookups: Array<Promise<unknown>> = [];
    await vi.waitFor(
      () => {
        lookups.push(directory.resolve(newEmail(), 'dating').catch(() => undefined));
        expect(directory.circuitState).toBe('half-open');
      },
      { timeout: 5_000, interval: 10 },
    );
    await expectFastFailure(setupResult);
    await Promise.all(lookups);
    expect(directory.circuitState).toBe('closed');
  });

  it('reopens when the half-open probe fails', async () => {
    const { directory, service } = await setup({ service: { autoCreate: true }, directory: { breaker: { threshold: 3, halfOpenAfterMs: 100 } } });
    service.faults.failAll(500);
    await openCircuit(directory);
    const requests = service.faults.requests;
    // After the half-open delay exactly one probe reaches the service, fails, and the circuit opens again.
    await vi.waitFor(
      async () => {
        await directory.resolve(newEmail(), 'dating').catch(() => undefined);
        expect(service.faults.requests).toBe(requests + 1);
      },
      { timeout: 5_000, interval: 10 },
    );
    expect(directory.circuitState).toBe('open');
  });
});

describe('metrics', () => {
  it('registers on the given registry, never on the global one', async () => {
    const email = newEmail();
    const { directory, registry } = await setup({ service: { profiles: [seed(email)] } });
    await directory.resolve(email, 'dating');
    const text = await registry.metrics();
    for (const name of ['chat_profile_lookups_total', 'chat_profile_cache_hits_total', 'chat_profile_cache_misses_total', 'chat_profile_breaker_state', 'chat_profile_request_duration_seconds']) {
      expect(text).toContain(name);
      expect(globalRegistry.getSingleMetric(name)).toBeUndefined();
    }
    expect(await metricValue(registry, 'chat_profile_lookups_total', { result: 'ok' })).toBe(1);
    expect(text).toMatch(/chat_profile_request_duration_seconds_count\{outcome="200"\} 1/);
  });
});
