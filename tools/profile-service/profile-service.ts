/**
 * A reference implementation of the profile service's internal API (docs/architecture.md, "Profiles"), for local
 * clusters and as the real HTTP server that tests talk to:
 *
 *   GET /internal/chat-service/users/{email}/profile/{intent}  → 200 {id, email, displayName} | 404
 *
 * Every call needs a service JWT: RS256 only, `exp` required, `iss`/`aud` checked; anything else is
 * 401. `faults` lets a test make the service slow or failing without restarting it.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { LogController, type FastifyBaseLogger } from 'fastify';
import { jwtVerify } from 'jose';
import type { Logger } from 'pino';

export interface SeedProfile {
  /** Generated (stable per email|intent) when absent. */
  id?: string;
  email: string;
  intent: string;
  displayName: string;
}

export interface ProfileServiceOptions {
  /** Default 0 (any free port). */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Verifies the service JWT: a PEM public key or a KeyObject (RSA). */
  publicKey: string | KeyObject;
  /** Required `iss`; default chat-service. */
  issuer?: string;
  /** Required `aud`; default profile-service. */
  audience?: string;
  profiles?: readonly SeedProfile[];
  /** Create a profile on the first lookup of an unknown (email, intent) instead of answering 404. */
  autoCreate?: boolean;
  logger?: Logger;
}

/** Failure injection. Faults apply in this order: delay, injected status, invalid body. */
export interface ProfileServiceFaults {
  /** Profile requests received, including refused and failed ones. */
  readonly requests: number;
  /** Profile requests refused with 401. */
  readonly refused: number;
  /** Answer the next `count` profile requests with `status` (default 500). */
  failNext(count: number, status?: number): void;
  /** Answer every profile request with `status` (default 500) until `reset()`. */
  failAll(status?: number): void;
  /** Answer the next `count` profile requests with 200 and a body that is not a profile. */
  invalidBodyNext(count: number): void;
  /** Hold every response for `ms` milliseconds (0 stops). */
  delay(ms: number): void;
  /** Clears failures and delay; the counters keep counting. */
  reset(): void;
}

export interface ProfileService {
  readonly url: string;
  readonly faults: ProfileServiceFaults;
  close(): Promise<void>;
}

interface StoredProfile {
  id: string;
  email: string;
  displayName: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Namespace of the name-based ids of auto-created profiles (RFC 9562 §5.5). */
const AUTO_ID_NAMESPACE = Buffer.from('3f0b6c1e5d7a4c2b9e8f1a2b3c4d5e6f', 'hex');

/**
 * A UUIDv5 of `email|intent`: it looks random but is the same after a restart, so a local
 * cluster's chat database keeps matching the profiles when this service is restarted.
 */
export function autoProfileId(email: string, intent: string): string {
  const hash = createHash('sha1').update(AUTO_ID_NAMESPACE).update(`${email}|${intent}`).digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

const keyOf = (email: string, intent: string): string => `${email.trim().toLowerCase()}|${intent}`;

/** Validates a seed file's content (a JSON array of SeedProfile); errors name the entry. */
export function parseSeedProfiles(json: unknown): SeedProfile[] {
  if (!Array.isArray(json)) throw new Error('profiles: must be a JSON array of {id?, email, intent, displayName}');
  return json.map((entry: unknown, index) => {
    const at = `profiles[${index}]`;
    if (typeof entry !== 'object' || entry === null) throw new Error(`${at}: must be an object`);
    const { id, email, intent, displayName } = entry as Record<string, unknown>;
    if (id !== undefined && (typeof id !== 'string' || !UUID.test(id))) throw new Error(`${at}.id: must be a UUID when present`);
    if (typeof email !== 'string' || !email.includes('@')) throw new Error(`${at}.email: must be an email address`);
    if (typeof intent !== 'string' || intent.trim() === '') throw new Error(`${at}.intent: must be a non-empty string`);
    if (typeof displayName !== 'string' || displayName.trim() === '') throw new Error(`${at}.displayName: must be a non-empty string`);
    return { ...(id === undefined ? {} : { id }), email, intent, displayName };
  });
}

export async function startProfileService(options: ProfileServiceOptions): Promise<ProfileService> {
  const publicKey = typeof options.publicKey === 'string' ? createPublicKey(options.publicKey) : options.publicKey;
  if (publicKey.asymmetricKeyType !== 'rsa') throw new Error('SERVICE_JWT_PUBLIC_KEY: must be an RSA public key (RS256)');
  const issuer = options.issuer ?? 'chat-service';
  const audience = options.audience ?? 'profile-service';

  const profiles = new Map<string, StoredProfile>();
  for (const seed of parseSeedProfiles(options.profiles ?? [])) {
    const key = keyOf(seed.email, seed.intent);
    if (profiles.has(key)) throw new Error(`profiles: ${seed.email} / ${seed.intent} appears twice`);
    const email = seed.email.trim().toLowerCase();
    profiles.set(key, { id: seed.id?.toLowerCase() ?? autoProfileId(email, seed.intent), email, displayName: seed.displayName });
  }

  const state = { requests: 0, refused: 0, failNext: 0, failNextStatus: 500, failAllStatus: 0, invalidNext: 0, delayMs: 0 };
  const faults: ProfileServiceFaults = {
    get requests() {
      return state.requests;
    },
    get refused() {
      return state.refused;
    },
    failNext(count, status = 500) {
      state.failNext = count;
      state.failNextStatus = status;
    },
    failAll(status = 500) {
      state.failAllStatus = status;
    },
    invalidBodyNext(count) {
      state.invalidNext = count;
    },
    delay(ms) {
      state.delayMs = ms;
    },
    reset() {
      Object.assign(state, { failNext: 0, failAllStatus: 0, invalidNext: 0, delayMs: 0 });
    },
  };

  // Releases responses held by delay() so close() does not wait for them.
  const closing = new AbortController();
  const app = Fastify({
    ...(options.logger ? { loggerInstance: options.logger as FastifyBaseLogger } : { logger: false }),
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
  });

  const authorised = async (header: string | undefined): Promise<boolean> => {
    const match = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(header ?? '');
    if (!match) return false;
    try {
      await jwtVerify(match[1]!, publicKey, { algorithms: ['RS256'], issuer, audience, requiredClaims: ['exp'], clockTolerance: 5 });
      return true;
    } catch {
      return false;
    }
  };

  app.get<{ Params: { email: string; intent: string } }>('/internal/chat-service/users/:email/profile/:intent', async (request, reply) => {
    state.requests += 1;
    if (state.delayMs > 0) await sleep(state.delayMs, undefined, { signal: closing.signal });
    if (state.failAllStatus > 0) return reply.code(state.failAllStatus).send({ error: 'injected failure' });
    if (state.failNext > 0) {
      state.failNext -= 1;
      return reply.code(state.failNextStatus).send({ error: 'injected failure' });
    }
    if (!(await authorised(request.headers.authorization))) {
      state.refused += 1;
      return reply.code(401).header('www-authenticate', 'Bearer error="invalid_token"').send({ error: 'invalid service token' });
    }
    if (state.invalidNext > 0) {
      state.invalidNext -= 1;
      return reply.code(200).send({ id: 'not-a-uuid', email: request.params.email });
    }
    const { email, intent } = request.params;
    if (!email.includes('@') || intent.trim() === '') return reply.code(400).send({ error: 'email and intent are required' });
    const key = keyOf(email, intent);
    let profile = profiles.get(key);
    if (!profile && options.autoCreate) {
      const normalized = email.trim().toLowerCase();
      profile = { id: autoProfileId(normalized, intent), email: normalized, displayName: normalized };
      profiles.set(key, profile);
    }
    if (!profile) return reply.code(404).send({ error: 'profile not found' });
    return reply.code(200).send(profile);
  });

  app.get('/health', async () => ({ status: 'up' }));

  const host = options.host ?? '127.0.0.1';
  await app.listen({ port: options.port ?? 0, host });
  const { port } = app.server.address() as AddressInfo;
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${urlHost}:${port}`,
    faults,
    close: async () => {
      closing.abort();
      await app.close();
    },
  };
}
