/**
 * The dispatcher on a real database (PGlite) and the reference receiver as its HTTP peer: what it
 * holds against a receiver that never answers, and what stopping does to the requests in flight.
 */
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import type { BusEnvelope, MessageRecord, SessionRecord } from '../chat/ports.js';
import { silentLogger } from '../common/adapter-logger.js';
import { Metrics } from '../observability/metrics.js';
import { migrate } from '../store/postgres/migrator.js';
import { PgliteDatabase } from '../store/postgres/pglite-database.js';
import { PostgresMessageStore } from '../store/postgres/postgres-message-store.js';
import { PostgresWebhookStore } from '../store/postgres/postgres-webhook-store.js';
import { startWebhookReceiver, type WebhookReceiver } from '../../tools/webhook-receiver/receiver.js';
import { DEFAULT_WEBHOOK_TUNING, WebhookDispatcher, type WebhookDispatcherOptions, withoutCredentials } from './webhook-dispatcher.js';

const SECRET = 'dispatcher-test-secret';
let db: PgliteDatabase;
let messages: PostgresMessageStore;
const cleanup: Array<() => Promise<void>> = [];

beforeAll(async () => {
  db = await PgliteDatabase.open(undefined);
  await migrate({ kind: 'pglite', db }, pino({ level: 'silent' }));
  messages = new PostgresMessageStore(db, 'test', { webhookTypes: new Set(['message.created'] as const) });
});
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
  await db.query('TRUNCATE chat_webhook_outbox');
});
afterAll(async () => {
  await db?.close();
});

async function receiver(options: { hang?: boolean } = {}): Promise<WebhookReceiver> {
  const r = await startWebhookReceiver({ secret: SECRET, print: () => undefined, ...options });
  cleanup.push(() => r.close());
  return r;
}

function dispatcher(
  url: string,
  options: Partial<WebhookDispatcherOptions> = {},
  unreadTotals: (email: string) => Promise<{ total: number; sessions: number }> = (email) => messages.unreadTotals(email),
): WebhookDispatcher {
  const d = new WebhookDispatcher({
    store: new PostgresWebhookStore(db),
    recipientOnline: async () => false,
    unreadTotals,
    metrics: new Metrics({ defaultMetrics: false }),
    logger: silentLogger,
    options: { ...DEFAULT_WEBHOOK_TUNING, url, secret: SECRET, maxAttempts: 5, timeoutMs: 10_000, includeContent: true, pollIntervalMs: 50, ...options },
  });
  cleanup.push(() => d.stop());
  d.start();
  return d;
}

async function messageInNewSession(): Promise<MessageRecord> {
  const [x, y] = [randomUUID(), randomUUID()].sort();
  const s: SessionRecord = await messages.upsertSession({
    a: { profileId: x!, email: `a.${x!.slice(0, 8)}@example.com`, displayName: 'A' },
    b: { profileId: y!, email: `b.${y!.slice(0, 8)}@example.com`, displayName: 'B' },
    intent: 'dating',
  });
  const toEvent = (m: MessageRecord): BusEnvelope => ({
    recipients: [s.a.email, s.b.email],
    event: {
      type: 'message',
      sessionId: s.id,
      destinations: [{ user: s.b.email, queue: 'messages' }],
      message: { messageId: m.id, sessionId: s.id, seq: m.seq, senderId: s.a.profileId, senderEmail: s.a.email, senderDisplayName: 'A', content: m.content, clientMessageId: m.clientMessageId, sentAt: m.sentAt.toISOString(), delivered: false, seen: false, editedAt: null, deleted: false },
    },
  });
  const { message } = await messages.appendMessage({ sessionId: s.id, senderProfileId: s.a.profileId, content: 'hi', clientMessageId: randomUUID(), sentAt: new Date(), toEvent });
  return message;
}

const rows = () => db.query<{ attempts: number; lease: string | null; due_in_ms: number; delivered: boolean }>(
  `SELECT attempts, lease, (extract(epoch FROM next_attempt_at - now()) * 1000)::float8 AS due_in_ms, delivered_at IS NOT NULL AS delivered FROM chat_webhook_outbox ORDER BY id`,
);

it('gives up on a receiver that never answers after the timeout, records the attempt and tries again', async () => {
  const r = await receiver({ hang: true });
  await messageInNewSession();
  dispatcher(r.url, { timeoutMs: 300, backoff: { initialMs: 50, maxMs: 50 } });
  await expect.poll(async () => (await rows())[0]?.attempts ?? 0, { timeout: 5_000, interval: 50 }).toBeGreaterThanOrEqual(3);
  const [error] = await db.query<{ last_error: string }>('SELECT last_error FROM chat_webhook_outbox');
  expect(error!.last_error).toBe('no response within 300 ms');
});

it('holds at most WEBHOOK_CONCURRENCY requests against a receiver that never answers, whatever the backlog', async () => {
  const r = await receiver({ hang: true });
  for (let i = 0; i < 12; i++) await messageInNewSession();
  dispatcher(r.url, { concurrency: 3 });
  await expect.poll(() => r.stats.requests, { timeout: 5_000 }).toBe(3);
  for (let i = 0; i < 5; i++) await messageInNewSession(); // each commit elsewhere wakes nothing loose
  await new Promise((resolve) => setTimeout(resolve, 500));
  expect(r.stats.requests).toBe(3);
});

it('stopping aborts the requests in flight and releases their rows at once, no attempt counted; another dispatcher delivers them', async () => {
  const hanging = await receiver({ hang: true });
  const m1 = await messageInNewSession();
  const m2 = await messageInNewSession();
  const first = dispatcher(hanging.url);
  await expect.poll(() => hanging.stats.requests, { timeout: 5_000 }).toBe(2);
  const began = performance.now();
  await first.stop();
  expect(performance.now() - began, 'not waiting for the 10 s timeout').toBeLessThan(2_000);
  for (const row of await rows()) {
    expect(row).toMatchObject({ attempts: 0, lease: null, delivered: false });
    expect(row.due_in_ms).toBeLessThanOrEqual(0);
  }

  const good = await receiver();
  dispatcher(good.url);
  await expect.poll(() => good.events.map((e) => (e.data as any).message.messageId).sort(), { timeout: 5_000 }).toEqual([m1.id, m2.id].sort());
  // The receiver has answered; the dispatcher records the delivery right after.
  await expect.poll(async () => (await rows()).every((row) => row.delivered), { timeout: 5_000 }).toBe(true);
});

it('a refused connection is a failed attempt, retried with backoff', async () => {
  const gone = await receiver();
  const url = gone.url;
  await gone.close();
  await messageInNewSession();
  dispatcher(url, { backoff: { initialMs: 60_000, maxMs: 60_000 } });
  await expect.poll(async () => (await rows())[0]?.attempts, { timeout: 5_000 }).toBe(1);
  const [row] = await rows();
  expect(row!.due_in_ms).toBeGreaterThan(50_000);
});

it('sends the credentials of a URL like https://user:pass@host as basic auth (fetch refuses them in the URL)', () => {
  expect(withoutCredentials('https://push.example.com/hook')).toEqual({ url: 'https://push.example.com/hook', authorization: undefined });
  expect(withoutCredentials('https://gw%40corp:p%3Ass@push.example.com/hook?x=1')).toEqual({
    url: 'https://push.example.com/hook?x=1',
    authorization: `Basic ${Buffer.from('gw@corp:p:ss').toString('base64')}`,
  });
});

it('a failed lookup of the recipient counts no attempt and sends nothing: the row waits for its lease', async () => {
  const r = await receiver();
  await messageInNewSession();
  let asked = 0;
  dispatcher(r.url, {}, async () => {
    asked++;
    throw new Error('statement timeout');
  });
  await expect.poll(() => asked, { timeout: 5_000 }).toBe(1);
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(asked).toBe(1);
  expect(r.stats.requests).toBe(0);
  const [row] = await rows();
  expect(row).toMatchObject({ attempts: 0, delivered: false });
  expect(row!.due_in_ms).toBeGreaterThan(10_000);
});
