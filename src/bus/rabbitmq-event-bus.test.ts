/**
 * What only the RabbitMQ adapter can get wrong: surviving a lost connection, failing fast when the
 * broker is gone, dropping poison messages, and leaving no queue behind. The port-level behaviour is
 * in event-bus.contract.ts.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { Connection } from 'rabbitmq-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { infra, uniqueName } from '../../test/support/infra.js';
import type { BusEnvelope } from '../chat/ports.js';
import type { AdapterLogger } from '../common/adapter-logger.js';
import { RabbitMqEventBus, type RabbitMqEventBusOptions } from './rabbitmq-event-bus.js';

const rabbitmqUrl = infra.rabbitmqUrl ?? '';

/** rabbitmqctl can only act on a broker on this machine, and needs the node's Erlang cookie (root). */
const rabbitmqctl = (...args: string[]): string => execFileSync('rabbitmqctl', ['-q', ...args], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
const ctl = ((): { ok: true } | { ok: false; reason: string } => {
  if (!rabbitmqUrl) return { ok: false, reason: 'no RabbitMQ' };
  if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(new URL(rabbitmqUrl).hostname)) return { ok: false, reason: 'RabbitMQ is not on this machine' };
  try {
    rabbitmqctl('list_connections', 'pid');
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: `rabbitmqctl unusable: ${(err as Error).message.split('\n')[0] ?? ''}` };
  }
})();

/** Server-side pids of the connections whose client-provided name is exactly `name`; nobody else's. */
function connectionPids(name: string): string[] {
  return rabbitmqctl('list_connections', 'pid', 'client_properties', '--no-table-headers')
    .split('\n')
    .filter((line) => line.includes(`{"connection_name","${name}"}`))
    .map((line) => line.split('\t')[0] ?? '')
    .filter((pid) => pid !== '');
}

/** A TCP forwarder in front of the broker, so a test can cut or silence its own connection only. */
class TcpProxy {
  accepted = 0;
  private blackholed = false;
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly url: string,
  ) {}

  static async open(target: string): Promise<TcpProxy> {
    const { hostname, port } = new URL(target);
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = new URL(target);
    url.hostname = '127.0.0.1';
    url.port = String((server.address() as net.AddressInfo).port);
    const proxy = new TcpProxy(server, url.toString());
    server.on('connection', (client) => {
      proxy.accepted += 1;
      const upstream = net.connect({ host: hostname, port: Number(port || 5672) });
      for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
        proxy.sockets.add(from);
        from.on('data', (chunk) => {
          if (!proxy.blackholed) to.write(chunk);
        });
        from.on('error', () => to.destroy());
        from.on('close', () => {
          proxy.sockets.delete(from);
          to.destroy();
        });
      }
    });
    return proxy;
  }

  /** Drops every connection through the proxy; new ones are still accepted. */
  cut(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  /** Keeps the connections open but delivers nothing either way, like a partitioned network. */
  blackhole(): void {
    this.blackholed = true;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.cut();
    await closed;
  }
}

/** A port nothing listens on: one the OS just handed out and we released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const newUser = (): string => `user.${randomUUID().slice(0, 8)}@example.test`;

const envelopeFor = (recipient: string): BusEnvelope => {
  const sessionId = randomUUID();
  return {
    recipients: [recipient],
    event: { type: 'typing', sessionId, destinations: [{ user: recipient, queue: 'messages' }], typing: { sessionId, email: recipient, typing: true } },
  };
};

class RecordingLogger implements AdapterLogger {
  readonly lines: Array<{ level: string; msg: string; obj: object }> = [];
  debug = (obj: object, msg: string): void => void this.lines.push({ level: 'debug', msg, obj });
  info = (obj: object, msg: string): void => void this.lines.push({ level: 'info', msg, obj });
  warn = (obj: object, msg: string): void => void this.lines.push({ level: 'warn', msg, obj });
  error = (obj: object, msg: string): void => void this.lines.push({ level: 'error', msg, obj });
}

describe.skipIf(!rabbitmqUrl)('RabbitMqEventBus', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    await Promise.allSettled(cleanups.splice(0).reverse().map((cleanup) => cleanup()));
  });

  function newBus(options: Partial<RabbitMqEventBusOptions> = {}): RabbitMqEventBus {
    const bus = new RabbitMqEventBus({ url: rabbitmqUrl, instanceId: uniqueName('test.rabbit'), lingerMs: 100, ...options });
    cleanups.push(() => bus.stop());
    return bus;
  }

  async function openProxy(): Promise<TcpProxy> {
    const proxy = await TcpProxy.open(rabbitmqUrl);
    cleanups.push(() => proxy.close());
    return proxy;
  }

  function inboxOf(bus: RabbitMqEventBus): Set<string> {
    const ids = new Set<string>();
    bus.onEvent((envelope) => ids.add(envelope.event.sessionId));
    return ids;
  }

  /** Publishes fresh events for `user` until one reaches `inbox`: events sent while the queue is gone are lost. */
  async function untilDelivered(publisher: RabbitMqEventBus, inbox: Set<string>, user: string): Promise<void> {
    await vi.waitFor(
      async () => {
        const probe = envelopeFor(user);
        await publisher.publish(probe);
        await expect.poll(() => inbox.has(probe.event.sessionId), { timeout: 500, interval: 10 }).toBe(true);
      },
      { timeout: 20_000, interval: 50 },
    );
  }

  it.skipIf(!ctl.ok)(
    `re-binds interested users after the broker force-closes the connection${ctl.ok ? '' : ` [skipped: ${ctl.reason}]`}`,
    async () => {
      const publisher = newBus();
      const bus = newBus();
      const inbox = inboxOf(bus);
      await Promise.all([publisher.start(), bus.start()]);
      const alice = newUser();
      await bus.addInterest(alice);
      await untilDelivered(publisher, inbox, alice);

      const [pid, ...others] = connectionPids(bus.queueName);
      expect(pid, 'our connection, found by its client-provided name').toBeDefined();
      expect(others).toEqual([]);
      rabbitmqctl('close_connection', pid ?? '', 'chat-service test: forced reconnect');

      await expect.poll(() => connectionPids(bus.queueName).filter((p) => p !== pid), { timeout: 20_000, interval: 200 }).toHaveLength(1);
      await untilDelivered(publisher, inbox, alice);
      await expect.poll(() => bus.isHealthy()).toBe(true);
    },
  );

  it('re-binds interested users, old and new, after the TCP connection drops', async () => {
    const proxy = await openProxy();
    const publisher = newBus();
    const bus = newBus({ url: proxy.url });
    const inbox = inboxOf(bus);
    await Promise.all([publisher.start(), bus.start()]);
    const [alice, bob] = [newUser(), newUser()];
    await bus.addInterest(alice);
    await untilDelivered(publisher, inbox, alice);

    proxy.cut();
    // Registered while the connection is going down: must end up bound on the new queue.
    await bus.addInterest(bob);

    await expect.poll(() => proxy.accepted, { timeout: 20_000 }).toBeGreaterThanOrEqual(2);
    await untilDelivered(publisher, inbox, alice);
    await untilDelivered(publisher, inbox, bob);
    expect(bus.isHealthy()).toBe(true);
  });

  it('rejects publish, instead of hanging, when the broker becomes unreachable', async () => {
    const proxy = await openProxy();
    const bus = newBus({ url: proxy.url, publishTimeoutMs: 1_000 });
    await bus.start();
    await bus.publish(envelopeFor(newUser()));

    await proxy.close();
    await expect.poll(() => bus.isHealthy()).toBe(false);
    await expect(bus.publish(envelopeFor(newUser()))).rejects.toThrow();
  });

  it('rejects publish and addInterest when the broker stops answering', async () => {
    const proxy = await openProxy();
    const bus = newBus({ url: proxy.url, publishTimeoutMs: 500, bindTimeoutMs: 500, closeTimeoutMs: 500 });
    await bus.start();

    proxy.blackhole();
    await expect(bus.publish(envelopeFor(newUser()))).rejects.toThrow(/did not confirm the publish/);
    await expect(bus.addInterest(newUser())).rejects.toThrow(/did not confirm the binding/);
    // stop() must not hang on a silent broker either.
    await bus.stop();
  });

  it('rejects start when nothing listens at the URL', async () => {
    const url = new URL(rabbitmqUrl);
    url.port = String(await closedPort());
    const bus = newBus({ url: url.toString(), startTimeoutMs: 500 });
    await expect(bus.start()).rejects.toThrow(/not ready within 500 ms/);
    await expect(bus.publish(envelopeFor(newUser()))).rejects.toThrow();
    expect(bus.isHealthy()).toBe(false);
  });

  it('drops a malformed message with a warning and keeps consuming', async () => {
    const logger = new RecordingLogger();
    const bus = newBus({ logger });
    const inbox = inboxOf(bus);
    await bus.start();
    const alice = newUser();
    await bus.addInterest(alice);

    const raw = new Connection(rabbitmqUrl);
    raw.on('error', () => undefined);
    cleanups.push(() => raw.close());
    const rawPublisher = raw.createPublisher({ confirm: true });
    cleanups.push(() => rawPublisher.close());
    // Straight into the instance queue through the default exchange.
    await rawPublisher.send({ routingKey: bus.queueName, contentType: 'application/json' }, Buffer.from('{not json'));
    await rawPublisher.send({ routingKey: bus.queueName, contentType: 'application/json' }, Buffer.from('{"recipients":"x"}'));

    const good = envelopeFor(alice);
    await bus.publish(good);
    await expect.poll(() => inbox.has(good.event.sessionId)).toBe(true);
    expect(logger.lines.filter((line) => line.msg === 'malformed bus message dropped')).toHaveLength(2);
    expect(inbox.size).toBe(1);
  });

  it('delivers the events routed to it while its connection was down, once it is back', async () => {
    const proxy = await openProxy();
    const publisher = newBus();
    const bus = newBus({ url: proxy.url });
    const inbox = inboxOf(bus);
    await Promise.all([publisher.start(), bus.start()]);
    const alice = newUser();
    await bus.addInterest(alice);
    await untilDelivered(publisher, inbox, alice);

    proxy.cut();
    // Published before the bus can have reconnected (its first retry waits 200 ms): the queue and
    // its bindings outlive the connection, so these wait in the queue instead of being dropped.
    const whileDown = Array.from({ length: 5 }, () => envelopeFor(alice));
    for (const envelope of whileDown) await publisher.publish(envelope);
    expect(proxy.accepted).toBe(1);

    await expect.poll(() => whileDown.every((e) => inbox.has(e.event.sessionId)), { timeout: 20_000 }).toBe(true);
    expect(proxy.accepted).toBeGreaterThanOrEqual(2);
  });

  it('does not keep a binding for a user who left while the connection was down', async () => {
    const proxy = await openProxy();
    const publisher = newBus();
    const bus = newBus({ url: proxy.url, lingerMs: 50 });
    const inbox = inboxOf(bus);
    await Promise.all([publisher.start(), bus.start()]);
    const [alice, bob] = [newUser(), newUser()];
    await bus.addInterest(alice);
    await bus.addInterest(bob);
    bus.removeInterest(bob);
    proxy.cut(); // bob's linger ends while the bus is reconnecting
    await expect.poll(() => proxy.accepted, { timeout: 20_000 }).toBeGreaterThanOrEqual(2);
    await expect.poll(() => bus.isHealthy(), { timeout: 20_000 }).toBe(true);

    await vi.waitFor(
      async () => {
        const forBob = envelopeFor(bob);
        const forAlice = envelopeFor(alice);
        await publisher.publish(forBob);
        await publisher.publish(forAlice);
        // One queue, published in order: once alice's event is in, bob's would be too.
        await expect.poll(() => inbox.has(forAlice.event.sessionId), { timeout: 500, interval: 10 }).toBe(true);
        expect(inbox.has(forBob.event.sessionId)).toBe(false);
      },
      { timeout: 10_000, interval: 100 },
    );
  });

  it('deletes its queue on stop', async () => {
    const bus = newBus();
    await bus.start();
    const raw = new Connection(rabbitmqUrl);
    raw.on('error', () => undefined);
    cleanups.push(() => raw.close());
    // While the bus runs, its queue exists, consumed by the bus alone.
    expect(await raw.queueDeclare({ queue: bus.queueName, passive: true })).toMatchObject({ consumerCount: 1 });

    await bus.stop();
    await expect(raw.queueDeclare({ queue: bus.queueName, passive: true })).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
