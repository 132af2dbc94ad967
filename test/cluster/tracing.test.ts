/**
 * One send is one trace across instances: alice sends over REST to instance one, bob receives over
 * STOMP on instance two, and an OTLP/HTTP receiver of our own (what a collector would be) gets the
 * spans of both processes. The trace must hold, with one trace id: chat.send and chat.store on one,
 * outbox.publish on one, chat.deliver on two — carried by the event in the outbox row and through
 * RabbitMQ. The instance that stored the message logs one line for it with the same trace id.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import { api, type ClusterShared, deleteQueues, type InstanceProcess, newUser, openSession, sharedCluster, startInstanceProcess } from './support/cluster.js';

interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  instance: string;
}

/** Accepts OTLP/HTTP JSON exports (POST /v1/traces) and keeps every span with its instance id. */
async function otlpReceiver(): Promise<{ url: string; spans: ReceivedSpan[]; close(): Promise<void> }> {
  const spans: ReceivedSpan[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/v1/traces' && req.headers['content-type']?.includes('json')) {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as any;
        for (const rs of body.resourceSpans ?? []) {
          const instance = rs.resource?.attributes?.find((a: any) => a.key === 'service.instance.id')?.value?.stringValue ?? '';
          for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push({ traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId ?? '', name: s.name, instance });
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, close: () => new Promise((r) => server.close(() => r())) };
}

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('tracing across instances', () => {
  let database: TestDatabase;
  let shared: ClusterShared;
  let receiver: Awaited<ReturnType<typeof otlpReceiver>>;
  const instances: InstanceProcess[] = [];
  let bobClient: TestStompClient | undefined;

  beforeAll(async () => {
    receiver = await otlpReceiver();
    database = await createTestDatabase(infra.postgresUrl!);
    shared = sharedCluster(database.url, infra.rabbitmqUrl!);
    for (const name of ['one', 'two']) instances.push(await startInstanceProcess(shared, { name, env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, LOG_LEVEL: 'debug' } }));
  }, 120_000);

  afterAll(async () => {
    await bobClient?.close();
    await Promise.allSettled(instances.map((i) => i.kill()));
    if (shared) await deleteQueues(shared.amqpUrl, shared);
    await database?.drop();
    await receiver?.close();
  });

  it('follows one message from the REST send on one instance to the socket write on the other', async () => {
    const [one, two] = instances as [InstanceProcess, InstanceProcess];
    const [alice, bob] = await Promise.all([newUser(shared.idp, 'alice'), newUser(shared.idp, 'bob')]);
    const sessionId = await openSession(one.url, alice, bob);
    bobClient = await connectStomp({ baseUrl: two.url, token: bob.token, transport: 'ws' });
    await bobClient.subscribe('/user/queue/messages');

    const clientMessageId = randomUUID();
    const sent = await api(one.url, 'POST', '/api/chat/message', alice.token, { sessionId, content: 'traced hello', clientMessageId });
    expect(sent.status).toBe(201);
    await expect.poll(() => bobClient!.on('/user/queue/messages').length, { timeout: 10_000 }).toBe(1);

    await expect.poll(() => receiver.spans.some((s) => s.name === 'chat.send'), { timeout: 10_000 }).toBe(true);
    const send = receiver.spans.find((s) => s.name === 'chat.send')!;
    const inTrace = (): ReceivedSpan[] => receiver.spans.filter((s) => s.traceId === send.traceId);
    await expect.poll(() => inTrace().map((s) => s.name).sort(), { timeout: 10_000 }).toEqual(expect.arrayContaining(['chat.deliver', 'chat.send', 'chat.store', 'outbox.publish']));

    const byName = (name: string): ReceivedSpan => inTrace().find((s) => s.name === name)!;
    const [oneId, twoId] = [instanceIdOf(one), instanceIdOf(two)];
    expect(byName('chat.send').instance).toBe(oneId);
    expect(byName('chat.store')).toMatchObject({ instance: oneId, parentSpanId: byName('chat.send').spanId });
    expect(byName('outbox.publish').instance).toBe(oneId);
    // Delivered where bob is: the other process, as a child of the send's context. Each process
    // exports on its own schedule, so the other's span may come after this one's.
    await expect.poll(() => inTrace().some((s) => s.name === 'chat.deliver' && s.instance === twoId), { timeout: 10_000 }).toBe(true);

    // The stored message's log line (debug) carries the same trace id.
    const stored = one
      .output()
      .split('\n')
      .filter((l) => l.includes('"msg":"message stored"'))
      .map((l) => JSON.parse(l) as { trace_id?: string; messageId?: string; content?: unknown });
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ trace_id: send.traceId, messageId: sent.body.messageId });
    expect(stored[0]!.content).toBeUndefined();
    console.log(`[tracing] trace ${send.traceId}: ${inTrace().map((s) => `${s.name}@${s.instance === oneId ? 'one' : 'two'}`).join(', ')}`);
  }, 60_000);
});

function instanceIdOf(p: InstanceProcess): string {
  const line = p.output().split('\n').find((l) => l.includes('"msg":"chat-service started"'));
  return (JSON.parse(line ?? '{}') as { instanceId?: string }).instanceId ?? '';
}
