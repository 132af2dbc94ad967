/**
 * Webhooks end to end, in-process, against the reference receiver (tools/webhook-receiver) as the
 * real HTTP peer: sends go over REST and STOMP, rows are written in the chat commit, the dispatcher
 * POSTs them signed, the receiver verifies and de-duplicates them.
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startWebhookReceiver, type WebhookReceiver, type WebhookReceiverOptions } from '../../tools/webhook-receiver/receiver.js';
import { chatSignature } from '../../src/webhooks/webhook-signature.js';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';

const SECRET = 'e2e-webhook-secret';
const opened: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((o) => o.close().catch(() => undefined)));
});
afterAll(async () => {
  await Promise.all(opened.splice(0).map((o) => o.close().catch(() => undefined)));
});

async function receiver(options: Partial<WebhookReceiverOptions> = {}): Promise<WebhookReceiver> {
  const r = await startWebhookReceiver({ secret: SECRET, print: () => undefined, ...options });
  opened.push(r);
  return r;
}

/** An app whose webhooks go to `url`, retrying fast. */
async function appTo(url: string | undefined, env: Record<string, string> = {}): Promise<TestApp> {
  const t = await startTestApp(
    url
      ? { WEBHOOK_URL: url, WEBHOOK_SECRET: SECRET, WEBHOOK_RETRY_INITIAL_MS: '50', WEBHOOK_RETRY_MAX_MS: '200', WEBHOOK_TIMEOUT_MS: '1000', ...env }
      : env,
    {},
    { webhooks: { pollIntervalMs: 100 } },
  );
  opened.push(t);
  return t;
}

async function pair(t: TestApp) {
  const alice = uniqueEmail('alice');
  const bob = uniqueEmail('bob');
  const [aliceToken, bobToken] = await Promise.all([t.token(alice, 'Alice'), t.token(bob, 'Bob')]);
  const sessionId = (await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'dating' } })).body.sessionId as string;
  return { alice, bob, aliceToken, bobToken, sessionId };
}

async function send(t: TestApp, token: string, sessionId: string, content: string): Promise<{ messageId: string; seq: number }> {
  const res = await t.call('POST', '/api/chat/message', { token, body: { sessionId, content, clientMessageId: newId() } });
  expect(res.status).toBe(201);
  return res.body;
}

async function stomp(t: TestApp, token: string): Promise<TestStompClient> {
  const c = await connectStomp({ baseUrl: t.url, token });
  opened.push(c);
  return c;
}

const metric = async (t: TestApp, line: RegExp): Promise<number> => {
  const text = (await t.call('GET', '/metrics')).body as string;
  const match = new RegExp(`^${line.source} (\\S+)$`, 'm').exec(text);
  return match ? Number(match[1]) : 0;
};

/** Records every request as it arrived (raw headers and body) and answers 200: what a receiver sees on the wire. */
async function wiretap(): Promise<{ url: string; requests: Array<{ headers: IncomingMessage['headers']; body: string }>; close(): Promise<void> }> {
  const requests: Array<{ headers: IncomingMessage['headers']; body: string }> = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const tap = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    requests,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
  opened.push(tap);
  return tap;
}

describe('webhooks against the reference receiver', () => {
  it('message.created is signed, verified and carries the message, the recipient, whether they are online and their unread totals', async () => {
    const r = await receiver();
    const t = await appTo(r.url);
    const p = await pair(t);
    const first = await send(t, p.aliceToken, p.sessionId, 'first, while bob is away');
    await expect.poll(() => r.events.length, { timeout: 10_000 }).toBe(1);

    const bob = await stomp(t, p.bobToken);
    await bob.subscribe('/user/queue/messages');
    const second = await send(t, p.aliceToken, p.sessionId, 'second, bob is here');
    await expect.poll(() => r.events.length, { timeout: 10_000 }).toBe(2);

    expect(r.stats.rejected).toBe(0);
    const [a, b] = r.events;
    expect(a).toMatchObject({
      type: 'message.created',
      data: {
        message: { messageId: first.messageId, seq: 1, sessionId: p.sessionId, senderEmail: p.alice, content: 'first, while bob is away' },
        recipientEmail: p.bob,
        recipientOnline: false,
        recipientUnread: { total: 1, sessions: 1 },
      },
    });
    expect(a!.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Date.parse(a!.createdAt)).toBeGreaterThan(Date.now() - 60_000);
    expect(b).toMatchObject({
      type: 'message.created',
      data: { message: { messageId: second.messageId, seq: 2 }, recipientEmail: p.bob, recipientOnline: true, recipientUnread: { total: 2, sessions: 1 } },
    });
    expect(a!.id).not.toBe(b!.id);
    expect(await metric(t, /chat_webhook_deliveries_total\{outcome="delivered"\}/)).toBe(2);
  });

  it('a tampered body, a wrong secret or an old timestamp is refused by the receiver; a replay is a duplicate', async () => {
    const tap = await wiretap();
    const t = await appTo(tap.url);
    const p = await pair(t);
    await send(t, p.aliceToken, p.sessionId, 'tap me');
    await expect.poll(() => tap.requests.length, { timeout: 10_000 }).toBe(1);
    const { headers, body } = tap.requests[0]!;
    expect(headers['x-chat-signature']).toMatch(/^v1=[0-9a-f]{64}$/);
    expect(headers['x-chat-event-id']).toBe(JSON.parse(body).id);
    expect(headers['webhook-id']).toBe(headers['x-chat-event-id']);
    expect(headers['webhook-timestamp']).toBe(headers['x-chat-timestamp']);
    // The Standard Webhooks signature, computed independently of the sender's code: HMAC over "<id>.<timestamp>.<body>".
    const standard = createHmac('sha256', SECRET).update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`).digest('base64');
    expect(headers['webhook-signature']).toBe(`v1,${standard}`);
    expect(Math.abs(Number(headers['x-chat-timestamp']) - Date.now() / 1000)).toBeLessThan(60);

    const r = await receiver();
    const forward = (over: { body?: string; headers?: Record<string, string> } = {}) =>
      fetch(r.url, {
        method: 'POST',
        body: over.body ?? body,
        headers: {
          'content-type': 'application/json',
          'x-chat-event-id': String(headers['x-chat-event-id']),
          'x-chat-timestamp': String(headers['x-chat-timestamp']),
          'x-chat-signature': String(headers['x-chat-signature']),
          ...over.headers,
        },
      }).then((res) => res.status);

    expect(await forward({ body: body.replace('tap me', 'tap mE') })).toBe(401);
    const ts = Number(headers['x-chat-timestamp']);
    expect(await forward({ headers: { 'x-chat-signature': chatSignature('not-the-secret', ts, body) } })).toBe(401);
    const old = ts - 301;
    expect(await forward({ headers: { 'x-chat-timestamp': String(old), 'x-chat-signature': chatSignature(SECRET, old, body) } })).toBe(401);
    expect(r.events).toHaveLength(0);
    expect(await forward()).toBe(200);
    expect(await forward()).toBe(200);
    expect(r.events).toHaveLength(1);
    expect(r.stats).toMatchObject({ rejected: 3, duplicates: 1 });

    // And the whole way: a service signing with another secret never gets an event in.
    const wrong = await appTo(r.url, { WEBHOOK_SECRET: 'another-secret' });
    const q = await pair(wrong);
    await send(wrong, q.aliceToken, q.sessionId, 'wrong key');
    await expect.poll(() => r.stats.rejected, { timeout: 10_000 }).toBeGreaterThan(3);
    expect(r.events).toHaveLength(1);
  });

  it('a receiver that fails 3 times then recovers gets every event once, in order per session', async () => {
    const r = await receiver({ failFirst: 3 });
    const t = await appTo(r.url);
    const pairs = await Promise.all([pair(t), pair(t), pair(t)]);
    const sent = new Map<string, string[]>();
    await Promise.all(
      pairs.map(async (p) => {
        const ids: string[] = [];
        for (let i = 1; i <= 5; i++) ids.push((await send(t, i % 2 ? p.aliceToken : p.bobToken, p.sessionId, `m${i}`)).messageId);
        sent.set(p.sessionId, ids);
      }),
    );
    await expect.poll(() => r.events.length, { timeout: 20_000 }).toBe(15);
    await new Promise((resolve) => setTimeout(resolve, 500)); // nothing more arrives
    expect(r.stats.failedOnPurpose).toBe(3);
    expect(r.events).toHaveLength(15);
    expect(new Set(r.events.map((e) => e.id)).size).toBe(15);
    for (const p of pairs) {
      const arrived = r.events.filter((e) => (e.data as any).message.sessionId === p.sessionId).map((e) => (e.data as any).message.messageId);
      expect(arrived, 'each message once, in seq order').toEqual(sent.get(p.sessionId));
    }
    expect(await metric(t, /chat_webhook_deliveries_total\{outcome="retry"\}/)).toBe(3);
    expect(await metric(t, /chat_webhook_deliveries_total\{outcome="delivered"\}/)).toBe(15);
    expect(await metric(t, /chat_webhook_rows\{state="pending"\}/)).toBe(0);
  });

  it('after the last attempt a row is dead (kept and counted) and its session moves on', async () => {
    const r = await receiver({ failFirst: 1_000 });
    const t = await appTo(r.url, { WEBHOOK_MAX_ATTEMPTS: '2' });
    const p = await pair(t);
    await send(t, p.aliceToken, p.sessionId, 'doomed');
    await expect.poll(() => metric(t, /chat_webhook_deliveries_total\{outcome="dead"\}/), { timeout: 10_000 }).toBe(1);
    expect(r.stats.failedOnPurpose).toBe(2);
    expect(await metric(t, /chat_webhook_rows\{state="dead"\}/)).toBe(1);
    r.behave({ failFirst: 0 });
    const next = await send(t, p.aliceToken, p.sessionId, 'after');
    await expect.poll(() => r.events.map((e) => (e.data as any).message.messageId), { timeout: 10_000 }).toEqual([next.messageId]);
  });

  it('WEBHOOK_INCLUDE_CONTENT=false leaves the content out; WEBHOOK_EVENTS without message.created writes no rows', async () => {
    const r = await receiver();
    const t = await appTo(r.url, { WEBHOOK_INCLUDE_CONTENT: 'false' });
    const p = await pair(t);
    await send(t, p.aliceToken, p.sessionId, 'private words');
    await expect.poll(() => r.events.length, { timeout: 10_000 }).toBe(1);
    expect((r.events[0]!.data as any).message).not.toHaveProperty('content');
    expect(JSON.stringify(r.events[0])).not.toContain('private words');

    const quiet = await appTo(r.url, { WEBHOOK_EVENTS: 'report.created' });
    const q = await pair(quiet);
    await send(quiet, q.aliceToken, q.sessionId, 'no webhook');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(r.events).toHaveLength(1);
    expect(await metric(quiet, /chat_webhook_rows\{state="pending"\}/)).toBe(0);
  });

  it('a dead receiver does not slow chat delivery (send→deliver latency printed with and without one)', async () => {
    async function measure(t: TestApp, n: number): Promise<number[]> {
      const p = await pair(t);
      const alice = await stomp(t, p.aliceToken);
      const bob = await stomp(t, p.bobToken);
      await bob.subscribe('/user/queue/messages');
      const sentAt = new Map<string, number>();
      for (let i = 0; i < n; i++) {
        const clientMessageId = newId();
        sentAt.set(clientMessageId, performance.now());
        alice.send('/app/chat.send', { sessionId: p.sessionId, content: `m${i}`, clientMessageId });
        await expect.poll(() => bob.on('/user/queue/messages').length, { timeout: 10_000, interval: 2 }).toBe(i + 1);
      }
      return bob
        .on('/user/queue/messages')
        .map((m) => m.receivedAt - sentAt.get(m.body.clientMessageId)!)
        .sort((a, b) => a - b);
    }
    const at = (l: number[], q: number) => l[Math.min(l.length - 1, Math.floor(q * l.length))]!;

    const plain = await appTo(undefined);
    await measure(plain, 10); // warm-up
    const without = await measure(plain, 60);

    const hanging = await receiver({ hang: true });
    const t = await appTo(hanging.url, { WEBHOOK_TIMEOUT_MS: '3000', WEBHOOK_CONCURRENCY: '4' });
    // A backlog of other sessions' rows, all in flight against a receiver that never answers.
    const others = await Promise.all([pair(t), pair(t), pair(t), pair(t), pair(t)]);
    for (const o of others) await send(t, o.aliceToken, o.sessionId, 'backlog');
    await expect.poll(() => hanging.stats.requests, { timeout: 10_000 }).toBeGreaterThanOrEqual(4);
    await measure(t, 10);
    const withDead = await measure(t, 60);

    console.log(
      `send→deliver (STOMP, in-process PGlite): without webhooks p50 ${at(without, 0.5).toFixed(1)} ms p99 ${at(without, 0.99).toFixed(1)} ms; ` +
        `with a hanging receiver p50 ${at(withDead, 0.5).toFixed(1)} ms p99 ${at(withDead, 0.99).toFixed(1)} ms (${hanging.stats.requests} requests held)`,
    );
    // Generous: a shared 2-core machine. A delivery that waited on the receiver would take its 3 s timeout.
    expect(at(withDead, 0.5)).toBeLessThan(Math.max(250, at(without, 0.5) * 5));
    expect(at(withDead, 0.99)).toBeLessThan(1_500);
    expect(hanging.events).toHaveLength(0);
  });
});
