/**
 * The cluster's profile directory: profiles come from the external profile service ("FlairBit",
 * docs/architecture.md, "Profiles") over HTTP, authenticated by a service JWT, cached, and guarded so that a slow or
 * failing service degrades chat instead of stalling it.
 *
 * A lookup goes: fresh cache entry → answer. Otherwise one request per key is in flight at a time
 * (single-flight), run as retry(circuit breaker(timeout(fetch))): each attempt is bounded by
 * `timeoutMs`, 5xx/408/429/timeouts/network errors are retried with jittered exponential backoff,
 * and every failed attempt counts toward the breaker. When the call fails, an expired cache entry
 * is served if there is one; otherwise the lookup throws PROFILE_SERVICE_UNAVAILABLE. While the
 * breaker is open (or a half-open probe is running) calls are refused without I/O, so an uncached
 * lookup fails in microseconds and nothing waits on a dead service.
 *
 * 404 means "no such profile": it is not retried, does not count against the service, and evicts
 * any cached entry for the key (the service is the authority). Negatives are not cached.
 *
 * Must never happen: a lookup that waits longer than attempts × timeoutMs + backoff; a token or
 * an email in the logs.
 */
import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  ExponentialBackoff,
  TaskCancelledError,
  TimeoutStrategy,
  circuitBreaker,
  handleWhen,
  retry,
  timeout,
  wrap,
  type CircuitBreakerPolicy,
} from 'cockatiel';
import { LRUCache } from 'lru-cache';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Logger } from 'pino';
import { ChatError } from '../chat/chat-errors.js';
import type { Profile, ProfileDirectory } from '../chat/ports.js';
import { isWellFormedText } from '../chat/text-rules.js';
import { isUuid, normalizeEmail } from '../chat/validation.js';
import { ServiceTokenSigner } from './service-token-signer.js';

export interface HttpProfileDirectoryOptions {
  /** Base URL of the profile service, without a trailing slash. */
  baseUrl: string;
  privateKeyPem: string;
  issuer: string;
  audience: string;
  /** How long a profile is served without asking the service again; 0 asks every time (but still serves it when the service fails). */
  cacheTtlMs: number;
  cacheMax: number;
  /** Per attempt, including reading the body. Default 2000. */
  timeoutMs?: number;
  /** Retries after the first attempt, for transient failures only. Default 2. */
  retries?: number;
  /** First retry delay before jitter; grows exponentially up to `maxDelayMs`. Defaults 50 / 1000. */
  backoff?: { initialDelayMs?: number; maxDelayMs?: number };
  breaker?: {
    /** Consecutive failed attempts that open the circuit. Default 5. */
    threshold?: number;
    /** How long the circuit stays open before one probe call may pass. Default 10000. */
    halfOpenAfterMs?: number;
  };
  logger: Logger;
  /** Where the metrics go; a private registry when absent (never prom-client's global one). */
  registry?: Registry;
}

export type CircuitStateName = 'closed' | 'open' | 'half-open' | 'isolated';

const STATE_NAMES: Record<CircuitState, CircuitStateName> = {
  [CircuitState.Closed]: 'closed',
  [CircuitState.Open]: 'open',
  [CircuitState.HalfOpen]: 'half-open',
  [CircuitState.Isolated]: 'isolated',
};

/** A profile body is a few hundred bytes; anything far larger is not one. */
const MAX_BODY_CHARS = 16 * 1024;

/** A failed call to the service: whether another attempt may help, and whether it says the service is unhealthy. */
class ServiceCallError extends Error {
  override name = 'ServiceCallError';
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly countsAgainstService: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

class ProfileNotFoundError extends Error {
  override name = 'ProfileNotFoundError';
}

const isTimeout = (err: unknown): boolean => err instanceof TaskCancelledError;
const isRetryable = (err: unknown): boolean => isTimeout(err) || (err instanceof ServiceCallError && err.retryable);
const isServiceFailure = (err: unknown): boolean => isTimeout(err) || (err instanceof ServiceCallError && err.countsAgainstService);

interface Loaded {
  profile: Profile;
  stale: boolean;
}

export class HttpProfileDirectory implements ProfileDirectory {
  private readonly log: Logger;
  private readonly signer: ServiceTokenSigner;
  private readonly baseUrl: string;
  private readonly cache: LRUCache<string, Profile>;
  /** profile id → cache key; kept in step with `cache` by its dispose hook, so it is bounded too. */
  private readonly keyById = new Map<string, string>();
  private readonly inflight = new Map<string, Promise<Loaded>>();
  private readonly breaker: CircuitBreakerPolicy;
  private readonly policy: ReturnType<typeof buildPolicy>;

  private readonly lookups: Counter<'result'>;
  private readonly cacheHits: Counter;
  private readonly cacheMisses: Counter;
  private readonly breakerState: Gauge;
  private readonly requestDuration: Histogram<'outcome'>;

  constructor(options: HttpProfileDirectoryOptions) {
    this.log = options.logger;
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.signer = new ServiceTokenSigner({ privateKeyPem: options.privateKeyPem, issuer: options.issuer, audience: options.audience });
    this.cache = new LRUCache<string, Profile>({
      max: options.cacheMax,
      // lru-cache reads ttl 0 as "never expires"; 0 here means "always revalidate".
      ttl: Math.max(1, options.cacheTtlMs),
      // Expired entries stay until evicted by size: they are the fallback when the service fails.
      noDeleteOnStaleGet: true,
      dispose: (profile, key) => {
        if (this.keyById.get(profile.id) === key) this.keyById.delete(profile.id);
      },
    });

    const timeoutMs = options.timeoutMs ?? 2000;
    this.breaker = circuitBreaker(handleWhen(isServiceFailure), {
      halfOpenAfter: options.breaker?.halfOpenAfterMs ?? 10_000,
      breaker: new ConsecutiveBreaker(options.breaker?.threshold ?? 5),
    });
    this.policy = buildPolicy(this.breaker, timeoutMs, options);

    const registers = [options.registry ?? new Registry()];
    this.lookups = new Counter({
      name: 'chat_profile_lookups_total',
      help: 'Profile lookups by result: ok (fresh), stale (expired entry served while the service failed), not_found, unavailable',
      labelNames: ['result'] as const,
      registers,
    });
    this.cacheHits = new Counter({ name: 'chat_profile_cache_hits_total', help: 'Profile lookups answered from a fresh cache entry', registers });
    this.cacheMisses = new Counter({ name: 'chat_profile_cache_misses_total', help: 'Profile lookups that needed the profile service', registers });
    this.breakerState = new Gauge({
      name: 'chat_profile_breaker_state',
      help: 'Profile service circuit breaker: 0 closed, 1 open, 2 half-open, 3 isolated',
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'chat_profile_request_duration_seconds',
      help: 'Profile service request duration by outcome (HTTP status, timeout, network_error)',
      labelNames: ['outcome'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers,
    });
    this.breakerState.set(CircuitState.Closed);

    this.breaker.onStateChange((state) => {
      this.breakerState.set(state);
      if (state === CircuitState.Open) this.log.error({ lastFailure: reasonOf(this.breaker.lastFailure) }, 'profile service circuit opened');
      else this.log.info({ state: STATE_NAMES[state] }, 'profile service circuit state changed');
    });
  }

  get circuitState(): CircuitStateName {
    return STATE_NAMES[this.breaker.state];
  }

  /** The port's `hint` is not taken: the profile service owns display names. */
  async resolve(email: string, intent: string): Promise<Profile> {
    const normalized = normalizeEmail(email);
    const key = `${normalized}|${intent}`;
    const fresh = this.cache.get(key);
    if (fresh) {
      this.cacheHits.inc();
      this.lookups.inc({ result: 'ok' });
      return fresh;
    }
    this.cacheMisses.inc();
    let flight = this.inflight.get(key);
    if (!flight) {
      flight = this.load(key, normalized, intent).finally(() => this.inflight.delete(key));
      this.inflight.set(key, flight);
    }
    try {
      const { profile, stale } = await flight;
      this.lookups.inc({ result: stale ? 'stale' : 'ok' });
      return profile;
    } catch (err) {
      this.lookups.inc({ result: err instanceof ChatError && err.code === 'PROFILE_NOT_FOUND' ? 'not_found' : 'unavailable' });
      throw err;
    }
  }

  async byId(profileId: string): Promise<Profile | undefined> {
    const key = this.keyById.get(profileId);
    // An expired entry still names the right person: ids never move between profiles.
    return key === undefined ? undefined : this.cache.get(key, { allowStale: true });
  }

  private async load(key: string, email: string, intent: string): Promise<Loaded> {
    try {
      const profile = await this.fetchProfile(email, intent);
      this.cache.set(key, profile);
      this.keyById.set(profile.id, key);
      return { profile, stale: false };
    } catch (err) {
      if (err instanceof ProfileNotFoundError) {
        this.cache.delete(key);
        throw new ChatError('PROFILE_NOT_FOUND', `no profile for this email and intent "${intent}"`);
      }
      const stale = this.cache.get(key, { allowStale: true });
      if (stale) {
        this.log.debug({ intent, reason: reasonOf(err) }, 'profile service failed, serving expired profile');
        return { profile: stale, stale: true };
      }
      this.log.warn({ intent, reason: reasonOf(err), circuit: this.circuitState }, 'profile lookup failed');
      throw new ChatError('PROFILE_SERVICE_UNAVAILABLE', 'the profile service is unavailable', undefined, { cause: err });
    }
  }

  private fetchProfile(email: string, intent: string): Promise<Profile> {
    // cockatiel lets every caller queue behind a half-open probe; refusing them keeps the promise
    // that an uncached lookup fails fast while the service is being tested.
    if (this.breaker.state === CircuitState.HalfOpen) return Promise.reject(new BrokenCircuitError());
    return this.policy.execute(({ signal }) => this.request(email, intent, signal));
  }

  private async request(email: string, intent: string, signal: AbortSignal): Promise<Profile> {
    const url = `${this.baseUrl}/internal/chat-service/users/${encodeURIComponent(email)}/profile/${encodeURIComponent(intent)}`;
    const token = await this.signer.token();
    const started = performance.now();
    const observe = (outcome: string): void => {
      this.requestDuration.observe({ outcome }, (performance.now() - started) / 1000);
    };
    let response: Response;
    try {
      // redirect: 'manual' so the bearer token is never replayed to wherever a redirect points.
      response = await fetch(url, { headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, signal, redirect: 'manual' });
    } catch (err) {
      observe(signal.aborted ? 'timeout' : 'network_error');
      throw new ServiceCallError('profile service unreachable', true, true, { cause: err });
    }
    const status = response.status;
    if (status !== 200) {
      observe(String(status));
      await response.body?.cancel().catch(() => undefined);
      if (status === 404) throw new ProfileNotFoundError();
      if (status === 401 || status === 403) {
        // A refused token is a configuration or clock problem that a retry cannot fix, but the
        // next lookup should try a fresh token rather than the refused one.
        this.signer.invalidate();
        throw new ServiceCallError(`profile service refused the service token (${status})`, false, true);
      }
      const transient = status >= 500 || status === 408 || status === 429;
      // Other 4xx answers concern this one request; the service itself is up.
      throw new ServiceCallError(`profile service answered ${status}`, transient, transient || (status >= 300 && status < 400));
    }
    let body: unknown;
    try {
      const text = await response.text();
      if (text.length > MAX_BODY_CHARS) throw new Error(`body of ${text.length} characters`);
      body = JSON.parse(text);
    } catch (err) {
      observe(signal.aborted ? 'timeout' : 'invalid_body');
      // A body cut off by the deadline is a timeout (worth retrying); a garbled one is not.
      throw new ServiceCallError('profile service sent an unreadable body', signal.aborted, true, { cause: err });
    }
    observe('200');
    return parseProfile(body, email);
  }
}

function buildPolicy(breaker: CircuitBreakerPolicy, timeoutMs: number, options: HttpProfileDirectoryOptions) {
  // Retry outside the breaker: each attempt counts, and once the circuit opens the next attempt
  // gets BrokenCircuitError, which is not retried, so a failing lookup stops at once.
  return wrap(
    retry(handleWhen(isRetryable), {
      maxAttempts: options.retries ?? 2,
      // ExponentialBackoff's default generator is decorrelated jitter.
      backoff: new ExponentialBackoff({ initialDelay: options.backoff?.initialDelayMs ?? 50, maxDelay: options.backoff?.maxDelayMs ?? 1000 }),
    }),
    breaker,
    // Aggressive: the caller is released at the deadline even if the socket is slow to abort.
    timeout(timeoutMs, TimeoutStrategy.Aggressive),
  );
}

/** The service's answer must be a profile of the email that was asked for; anything else is a failure. */
function parseProfile(body: unknown, email: string): Profile {
  const invalid = (why: string): ServiceCallError => new ServiceCallError(`profile service sent an invalid profile: ${why}`, false, true);
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('not an object');
  const { id, email: bodyEmail, displayName } = body as Record<string, unknown>;
  if (!isUuid(id)) throw invalid('id is not a UUID');
  // Chat routes messages by email, so a profile of someone else would misdeliver them.
  if (typeof bodyEmail !== 'string' || normalizeEmail(bodyEmail) !== email) throw invalid('email differs from the one requested');
  if (typeof displayName !== 'string' || displayName.trim() === '' || displayName.length > 200) throw invalid('displayName is not a non-empty string of at most 200 characters');
  // Stored with the session: a NUL or lone surrogate would fail the write, or be stored altered.
  if (!isWellFormedText(displayName)) throw invalid('displayName is not well-formed Unicode');
  return Object.freeze({ id: id.toLowerCase(), email: bodyEmail.trim(), displayName });
}

function reasonOf(reason: unknown): string | undefined {
  if (reason === undefined) return undefined;
  if (typeof reason === 'object' && reason !== null && 'error' in reason) return reasonOf(reason.error);
  if (typeof reason === 'object' && reason !== null && 'value' in reason) return 'unexpected result';
  if (reason instanceof Error) return reason.cause instanceof Error ? `${reason.message}: ${reason.cause.message}` : reason.message;
  return String(reason);
}
