/**
 * `npm run cluster`: a local cluster of chat-service instances behind nginx, sharing one PostgreSQL,
 * one RabbitMQ and one identity provider's public key, as in production.
 *
 * Starts N instances (default 3; `npm run cluster -- 2` or CLUSTER_SIZE) as child processes on ports
 * 8081, 8082, … (CLUSTER_BASE_PORT), against DATABASE_URL and AMQP_URL (default: the local services,
 * database `chat_cluster`, created if missing), and Debian's nginx in front of them on CLUSTER_PORT
 * (default 8080) with deploy/nginx/chat.conf, the load balancer's configuration as deployed. It
 * generates an ES256 key pair, plays the identity provider with it (production auth has no
 * /dev/token), gives every instance the public key as JWT_PUBLIC_KEY, and prints ready-made tokens
 * for a few users (CLUSTER_USERS, default alice and bob). The last start-up line is
 * `cluster ready: <url>`. Ctrl-C, or any part exiting, stops everything it started (instances
 * gracefully, SIGKILL after 25 s).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import pg from 'pg';
import { nginxMissing, startNginx, type RunningNginx } from './local-nginx.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const env = process.env;
const SIZE = Number(process.argv[2] ?? env.CLUSTER_SIZE ?? 3);
const BASE_PORT = Number(env.CLUSTER_BASE_PORT ?? 8081);
const LB_PORT = Number(env.CLUSTER_PORT ?? 8080);
const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/chat_cluster';
const DATABASE_URL = env.DATABASE_URL ?? DEFAULT_DATABASE_URL;
const AMQP_URL = env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const HOST = env.HOST ?? '127.0.0.1';
const TOKEN_TTL = '12h';
// This script plays the identity provider; a real deployment sets its IdP's iss and its own aud.
const TOKEN_ISSUER = 'https://idp.cluster.local';
const TOKEN_AUDIENCE = 'chat-service';
const USERS = (env.CLUSTER_USERS ?? 'alice@example.com:Alice,bob@example.com:Bob')
  .split(',')
  .map((entry) => entry.trim())
  .filter(Boolean)
  .map((entry) => {
    const [email, name] = entry.split(':');
    return { email: email!.trim().toLowerCase(), name: name?.trim() };
  });

interface Instance {
  name: string;
  port: number;
  child: ChildProcess;
  exited: Promise<number | string>;
}

/** Every instance started so far: a failure stops them all, so none is left running on its own. */
const instances: Instance[] = [];
let balancer: RunningNginx | undefined;
/** Set once we stop on purpose: exits from then on are expected. */
let stopping = false;
const isRunning = (instance: Instance): boolean => instance.child.exitCode === null && instance.child.signalCode === null;

async function stopInstances(graceMs: number): Promise<void> {
  // The balancer first: no new connection should reach an instance that is draining.
  await balancer?.stop();
  for (const instance of instances) if (isRunning(instance)) instance.child.kill('SIGTERM');
  const force = setTimeout(() => {
    for (const instance of instances) if (isRunning(instance)) instance.child.kill('SIGKILL');
  }, graceMs);
  await Promise.all(instances.map((i) => i.exited));
  clearTimeout(force);
}

async function fail(message: string): Promise<never> {
  if (stopping) return new Promise<never>(() => undefined);
  stopping = true;
  console.error(`cluster: ${message}`);
  if (instances.some(isRunning) || balancer) {
    console.error(`cluster: stopping the ${instances.filter(isRunning).length} instance(s) already started${balancer ? ' and nginx' : ''}`);
    await stopInstances(25_000);
  }
  process.exit(2);
}

/** The default database is ours to create; a URL the user gave must already exist. */
async function ensureDatabase(): Promise<void> {
  if (DATABASE_URL !== DEFAULT_DATABASE_URL) return;
  const admin = new URL(DATABASE_URL);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString(), connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', ['chat_cluster']);
    if (rowCount === 0) {
      await client.query('CREATE DATABASE chat_cluster');
      console.log('cluster: created database chat_cluster');
    }
  } catch (err) {
    await fail(`PostgreSQL at ${admin.host} is not usable (${(err as Error).message}); start it or set DATABASE_URL`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function start(index: number, publicKeyPem: string, origins: string): Instance {
  const name = `node${index + 1}`;
  const port = BASE_PORT + index;
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts')], {
    cwd: ROOT,
    env: {
      ...env,
      PORT: String(port),
      HOST,
      DATABASE_URL,
      AMQP_URL,
      JWT_PUBLIC_KEY: publicKeyPem,
      JWT_ISSUER: TOKEN_ISSUER,
      JWT_AUDIENCE: TOKEN_AUDIENCE,
      ALLOWED_ORIGINS: env.ALLOWED_ORIGINS ?? origins,
      INSTANCE_ID: env.INSTANCE_ID ? `${env.INSTANCE_ID}-${name}` : `cluster-${name}`,
      LOG_LEVEL: env.LOG_LEVEL ?? 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: Ctrl-C reaches us, and we stop the instances in order.
    detached: true,
  });
  for (const stream of [child.stdout!, child.stderr!]) {
    readline.createInterface({ input: stream }).on('line', (line) => console.log(`[${name}] ${line}`));
  }
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return { name, port, child, exited };
}

async function waitUntilReady(instance: Instance, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isRunning(instance)) await fail(`${instance.name} exited during start-up (see its output above)`);
    try {
      const res = await fetch(`http://127.0.0.1:${instance.port}/health/ready`, { signal: AbortSignal.timeout(1_000) });
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  await fail(`${instance.name} was not ready within ${timeoutMs / 1000} s`);
}

async function main(): Promise<void> {
  if (!Number.isInteger(SIZE) || SIZE < 1 || SIZE > 16) await fail(`cluster size must be 1..16, got ${process.argv[2] ?? env.CLUSTER_SIZE}`);
  const noNginx = nginxMissing();
  if (noNginx) await fail(noNginx);
  await ensureDatabase();

  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const origins = [LB_PORT, ...Array.from({ length: SIZE }, (_, i) => BASE_PORT + i)].flatMap((port) => [`http://localhost:${port}`, `http://127.0.0.1:${port}`]).join(',');

  const stopAll = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    console.log(`\ncluster: ${signal}: stopping nginx and ${instances.length} instance(s)…`);
    await stopInstances(25_000);
    console.log('cluster: stopped');
    process.exit(0);
  };
  process.on('SIGINT', () => void stopAll('SIGINT'));
  process.on('SIGTERM', () => void stopAll('SIGTERM'));

  for (let i = 0; i < SIZE; i++) instances.push(start(i, publicKeyPem, origins));
  for (const instance of instances) {
    void instance.exited.then((code) => {
      if (!stopping) void fail(`${instance.name} exited unexpectedly (${code}); stopping the rest`);
    });
  }
  await Promise.all(instances.map((i) => waitUntilReady(i)));
  try {
    balancer = await startNginx(
      instances.map((i) => `127.0.0.1:${i.port}`),
      LB_PORT,
    );
  } catch (err) {
    await fail(`nginx did not start on port ${LB_PORT} (${(err as Error).message}); is the port taken? set CLUSTER_PORT`);
  }
  void balancer?.exited.then((code) => {
    if (!stopping) void fail(`nginx exited unexpectedly (${code}); stopping the instances`);
  });

  const tokens = await Promise.all(
    USERS.map(async (user) => ({
      ...user,
      token: await new SignJWT({ email: user.email, ...(user.name ? { name: user.name } : {}) })
        .setProtectedHeader({ alg: 'ES256' })
        .setSubject(user.email)
        .setIssuer(TOKEN_ISSUER)
        .setAudience(TOKEN_AUDIENCE)
        .setIssuedAt()
        .setExpirationTime(TOKEN_TTL)
        .sign(privateKey),
    })),
  );
  const lb = `http://127.0.0.1:${LB_PORT}`;
  const first = lb;
  const second = lb;
  const [a, b] = tokens;
  const lines = [
    '',
    `chat-service cluster: ${SIZE} instance(s) behind nginx, one database, one broker, one identity provider`,
    `  nginx     ${lb}   (deploy/nginx/chat.conf: WebSocket, SockJS sticky by session, REST spread)`,
    `  database  ${DATABASE_URL.replace(/\/\/[^@/]*@/, '//…@')}`,
    `  broker    ${AMQP_URL.replace(/\/\/[^@/]*@/, '//…@')}`,
    ...instances.map((i) => `  ${i.name}     http://127.0.0.1:${i.port}   (ws://127.0.0.1:${i.port}/ws for STOMP, /health/ready, /metrics)`),
    '',
    'Auth is production auth: instances verify tokens with JWT_PUBLIC_KEY and there is no /dev/token.',
    'In production your identity provider issues the tokens; here this script is the identity provider:',
    `it generated an ES256 key pair, gave every instance the public half, and signed these tokens (valid ${TOKEN_TTL})`,
    'with the private half, which lives only in this process (restart the cluster for new ones; more users:',
    'CLUSTER_USERS="carol@example.com:Carol,dave@example.com" npm run cluster).',
    '',
    ...tokens.flatMap((t) => [`  ${t.email}`, `    ${t.token}`]),
    '',
  ];
  if (a && b) {
    lines.push(
      'Try it through the load balancer (each request may land on another instance):',
      `  A='${a.token}'`,
      `  B='${b.token}'`,
      `  SID=$(curl -s -XPOST ${first}/api/chat/init -H "authorization: Bearer $A" -H 'content-type: application/json' \\`,
      `    -d '{"toEmail":"${b.email}","intent":"dating"}' | jq -r .sessionId)`,
      `  curl -s -XPOST ${first}/api/chat/message -H "authorization: Bearer $A" -H 'content-type: application/json' \\`,
      `    -d "{\\"sessionId\\":\\"$SID\\",\\"content\\":\\"hi Bob\\",\\"clientMessageId\\":\\"$(cat /proc/sys/kernel/random/uuid)\\"}"`,
      `  curl -s "${second}/api/chat/$SID/history" -H "authorization: Bearer $B"`,
      '',
      `STOMP: connect to ws://127.0.0.1:${LB_PORT}/ws (subprotocol v12.stomp) or SockJS at ${lb}/ws with the`,
      'CONNECT header "Authorization: Bearer <token>"; see README "Real time".',
      '',
    );
  }
  lines.push('Ctrl-C stops nginx and every instance.', '', `cluster ready: ${lb}`);
  console.log(lines.join('\n'));
}

void main().catch((err: unknown) => fail(err instanceof Error ? (err.stack ?? err.message) : String(err)));
