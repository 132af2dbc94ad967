/**
 * Finds the real PostgreSQL and RabbitMQ this machine offers, so their suites run for real. With
 * REQUIRE_INFRA=1 (set by .ci/run) a missing service fails the run instead of skipping suites.
 */
import net from 'node:net';
import type { TestProject } from 'vitest/node';
import pg from 'pg';

export interface Infra {
  /** Admin URL of a PostgreSQL server where tests may create and drop their own databases. */
  postgresUrl: string | undefined;
  /** AMQP URL of a RabbitMQ broker where tests may declare their own queues. */
  rabbitmqUrl: string | undefined;
}

declare module 'vitest' {
  export interface ProvidedContext {
    infra: Infra;
  }
}

const env = process.env;

async function postgresReachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function tcpReachable(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port || 5672) });
    socket.setTimeout(2000);
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('timeout', () => { socket.destroy(); resolve(false); });
    socket.once('error', () => resolve(false));
  });
}

export default async function setup(project: TestProject): Promise<void> {
  const pgCandidate = env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const amqpCandidate = env.TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
  const [pgOk, amqpOk] = await Promise.all([postgresReachable(pgCandidate), tcpReachable(amqpCandidate)]);
  const infra: Infra = { postgresUrl: pgOk ? pgCandidate : undefined, rabbitmqUrl: amqpOk ? amqpCandidate : undefined };
  const missing = [!pgOk && `PostgreSQL (${pgCandidate})`, !amqpOk && `RabbitMQ (${amqpCandidate})`].filter(Boolean);
  if (missing.length > 0) {
    if (env.REQUIRE_INFRA === '1') throw new Error(`REQUIRE_INFRA=1 but not reachable: ${missing.join(', ')}`);
    console.warn(`\n*** SKIPPING the suites that need: ${missing.join(', ')} — they run only where the service answers ***\n`);
  } else {
    console.log(`\nreal services: PostgreSQL ${pgCandidate}, RabbitMQ ${amqpCandidate}\n`);
  }
  project.provide('infra', infra);
}
