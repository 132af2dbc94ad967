/**
 * Several chat-service instances sharing one database, one broker and one identity provider's
 * public key, as in production: in-process (`createApp` on port 0) or as child processes when a
 * test must kill one with SIGKILL. Every run has its own database, send queues and instance ids,
 * and removes them afterwards.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import pg from 'pg';
import { deleteQueues as deleteTestQueues } from '../../support/test-queues.js';
import { waitUntilStarted } from '../../support/service-process.js';
import type { AppOptions } from '../../../src/app.js';
import { startTestApp, type TestApp } from '../../support/test-app.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** A name unique to this run (as infra.ts's, which needs vitest: this module also serves tools/). */
const uniqueName = (prefix: string): string => `${prefix}.${Date.now().toString(36)}.${randomBytes(4).toString('hex')}`;

/** The identity provider: a key pair whose public half every instance gets as JWT_PUBLIC_KEY. */
export interface IdentityProvider {
  publicKeyPem: string;
  /** `claims`: more claims, say `{ scope: 'chat:admin' }`. */
  token(email: string, displayName?: string, claims?: Record<string, unknown>): Promise<string>;
}

const TEST_ISSUER = 'https://idp.test.local';
const TEST_AUDIENCE = 'chat-service';

export function identityProvider(): IdentityProvider {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    token: (email, displayName, claims = {}) =>
      new SignJWT({ ...claims, email, ...(displayName ? { name: displayName } : {}) })
        .setProtectedHeader({ alg: 'ES256' })
        .setSubject(email)
        .setIssuer(TEST_ISSUER)
        .setAudience(TEST_AUDIENCE)
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(privateKey),
  };
}

/** What every instance of one test cluster shares. */
export interface ClusterShared {
  databaseUrl: string;
  amqpUrl: string;
  idp: IdentityProvider;
  /** This run's send queue and dead-letter queue, never the real chat.send.queue. */
  queue: string;
  deadLetterQueue: string;
}

export function sharedCluster(databaseUrl: string, amqpUrl: string): ClusterShared {
  const queue = uniqueName('test.chat.send');
  return { databaseUrl, amqpUrl, idp: identityProvider(), queue, deadLetterQueue: `${queue}.dead` };
}

export function instanceEnv(shared: ClusterShared, overrides: { databaseUrl?: string; amqpUrl?: string; name?: string } = {}): Record<string, string> {
  return {
    DATABASE_URL: overrides.databaseUrl ?? shared.databaseUrl,
    AMQP_URL: overrides.amqpUrl ?? shared.amqpUrl,
    JWT_PUBLIC_KEY: shared.idp.publicKeyPem,
    JWT_ISSUER: TEST_ISSUER,
    JWT_AUDIENCE: TEST_AUDIENCE,
    DATABASE_POOL_SIZE: '4',
    INSTANCE_ID: uniqueName(`test.${overrides.name ?? 'node'}`),
  };
}

/** Timings short enough for tests, and this run's queues. */
export function testAppOptions(shared: ClusterShared, extra: AppOptions = {}): AppOptions {
  return {
    stomp: { heartbeatSendMs: 1_000, heartbeatReceiveMs: 1_000 },
    ...extra,
    sendQueue: { queue: shared.queue, deadLetterQueue: shared.deadLetterQueue, retryMinMs: 50, retryMaxMs: 500, publishTimeoutMs: 3_000, heartbeatSec: 1, connectionTimeoutMs: 2_000, ...extra.sendQueue },
    bus: { heartbeatSec: 1, connectionTimeoutMs: 2_000, lingerMs: 1_000, queueExpiresMs: 10_000, ...extra.bus },
    outbox: { errorBackoffMaxMs: 500, leaseMs: 5_000, publishTimeoutMs: 3_000, ...extra.outbox },
  };
}

export async function startInstance(shared: ClusterShared, options: { databaseUrl?: string; amqpUrl?: string; name?: string; app?: AppOptions } = {}): Promise<TestApp> {
  return startTestApp(instanceEnv(shared, options), {}, testAppOptions(shared, options.app));
}

export interface InstanceProcess {
  url: string;
  child: ChildProcess;
  output(): string;
  exited: Promise<number | string>;
  /** SIGKILL unless already gone; resolves once it has exited. */
  kill(): Promise<number | string>;
}

/** Starts `instance-main.ts` (the service plus test-only options and fault hooks) as a child process. */
export async function startInstanceProcess(
  shared: ClusterShared,
  options: { name?: string; app?: AppOptions; fault?: string; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<InstanceProcess> {
  const { faults: _faults, ...plain } = testAppOptions(shared, options.app);
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/cluster/support/instance-main.ts')], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      PORT: '0',
      HOST: '127.0.0.1',
      // The started-line that tells us the URL is logged at info.
      LOG_LEVEL: 'info',
      ...instanceEnv(shared, options),
      CLUSTER_APP_OPTIONS: JSON.stringify(plain),
      ...(options.fault ? { CLUSTER_FAULT: options.fault } : {}),
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { url, output, exited } = await waitUntilStarted(child, 'instance', options.timeoutMs ?? 60_000);
  return {
    url,
    child,
    output,
    exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      return exited;
    },
  };
}

/** Deletes this run's send queues, and any other queues named (say, those of killed instances). */
export async function deleteQueues(amqpUrl: string, shared: Pick<ClusterShared, 'queue' | 'deadLetterQueue'>, others: readonly string[] = []): Promise<void> {
  await deleteTestQueues(amqpUrl, [shared.queue, shared.deadLetterQueue, ...others]);
}

/** The instance queue a child process's event bus declared (from its start-up log). */
export function instanceQueueOf(p: InstanceProcess): string | undefined {
  return /"queue":"(chat\.instance\.[^"]+)"[^\n]*"msg":"rabbitmq event bus started"/.exec(p.output())?.[1];
}

/** fetch with a bearer token and JSON in and out. */
export async function api(baseUrl: string, method: string, urlPath: string, token?: string, body?: unknown): Promise<{ status: number; body: any; contentType: string | null }> {
  const res = await fetch(baseUrl + urlPath, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(20_000),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed, contentType: res.headers.get('content-type') };
}

export interface User {
  email: string;
  displayName: string;
  token: string;
}

export async function newUser(idp: IdentityProvider, name: string): Promise<User> {
  const email = `${name}.${randomUUID().slice(0, 8)}@example.com`;
  const displayName = name[0]!.toUpperCase() + name.slice(1);
  return { email, displayName, token: await idp.token(email, displayName) };
}

export async function openSession(baseUrl: string, from: User, to: User): Promise<string> {
  const res = await api(baseUrl, 'POST', '/api/chat/init', from.token, { toEmail: to.email, intent: 'dating' });
  if (res.status !== 200 && res.status !== 201) throw new Error(`init failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.sessionId as string;
}

/** Reads straight from PostgreSQL (not through any fault proxy): what is really stored. */
export async function storedMessages(databaseUrl: string, sessionIds: readonly string[]): Promise<Array<{ sessionId: string; clientMessageId: string; messageId: string; seq: number }>> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ session_id: string; client_msg_id: string; id: string; seq: number }>(
      'SELECT session_id, client_msg_id, id, seq::int AS seq FROM chat_messages WHERE session_id = ANY($1::uuid[]) ORDER BY session_id, seq',
      [sessionIds],
    );
    return rows.map((r) => ({ sessionId: r.session_id, clientMessageId: r.client_msg_id, messageId: r.id, seq: r.seq }));
  } finally {
    await client.end();
  }
}

/** Outbox rows not yet published (dead ones excluded), read straight from PostgreSQL. */
export async function pendingOutboxRows(databaseUrl: string): Promise<number> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM chat_message_outbox WHERE NOT processed AND NOT dead');
    return rows[0]?.n ?? 0;
  } finally {
    await client.end();
  }
}
