/** The REST API (README, "HTTP API") over real HTTP, on PGlite and on PostgreSQL (dev issuer). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';

function describeApi(backend: 'PGlite' | 'PostgreSQL'): void {
  let t: TestApp;
  let database: TestDatabase | undefined;
  beforeAll(async () => {
    if (backend === 'PostgreSQL') database = await createTestDatabase(infra.postgresUrl!);
    t = await startTestApp(database ? { DATABASE_URL: database.url } : {});
  });
  afterAll(async () => {
    await t?.close();
    await database?.drop();
  });

  async function pair(intent = 'dating') {
    const alice = uniqueEmail('alice');
    const bob = uniqueEmail('bob');
    const [aliceToken, bobToken] = await Promise.all([t.token(alice, 'Alice'), t.token(bob, 'Bob')]);
    const init = await t.call('POST', '/api/chat/init', { token: aliceToken, body: { fromEmail: alice, toEmail: bob, intent } });
    expect(init.status).toBe(200);
    return { alice, bob, aliceToken, bobToken, sessionId: init.body.sessionId as string };
  }

  const send = (token: string, sessionId: string, content: string, clientMessageId = newId()) =>
    t.call('POST', '/api/chat/message', { token, body: { sessionId, content, clientMessageId } });

  describe('sessions', () => {
    it('returns one canonical session for both directions and a separate one per intent', async () => {
      const { alice, bob, bobToken, aliceToken, sessionId } = await pair();
      const reverse = await t.call('POST', '/api/chat/init', { token: bobToken, body: { fromEmail: bob, toEmail: alice, intent: 'dating' } });
      expect(reverse.body.sessionId).toBe(sessionId);
      expect(reverse.body.peer).toMatchObject({ email: alice, displayName: 'Alice' });
      const work = await t.call('POST', '/api/chat/init', { token: aliceToken, body: { fromEmail: alice, toEmail: bob, intent: 'work' } });
      expect(work.status).toBe(200);
      expect(work.body.sessionId).not.toBe(sessionId);
    });

    it('takes the caller from the token when fromEmail is left out, and refuses chatting with yourself', async () => {
      const me = uniqueEmail('solo');
      const token = await t.token(me);
      const ok = await t.call('POST', '/api/chat/init', { token, body: { toEmail: uniqueEmail('other'), intent: 'dating' } });
      expect(ok.status).toBe(200);
      const self = await t.call('POST', '/api/chat/init', { token, body: { toEmail: me.toUpperCase(), intent: 'dating' } });
      expect(self.status).toBe(400);
      expect(self.body.code).toBe('SELF_CHAT');
    });

    it('lists the caller\u2019s sessions with last message and unread count', async () => {
      const { aliceToken, bobToken, sessionId, alice } = await pair();
      await send(aliceToken, sessionId, 'one');
      await send(aliceToken, sessionId, 'two');
      const list = await t.call('GET', '/api/chat/sessions', { token: bobToken });
      expect(list.status).toBe(200);
      expect(list.body.sessions).toHaveLength(1);
      expect(list.body.sessions[0]).toMatchObject({ sessionId, unreadCount: 2, lastSeq: 2, peer: { email: alice }, lastMessage: { content: 'two', seq: 2 } });
      const mine = await t.call('GET', '/api/chat/sessions', { token: aliceToken });
      expect(mine.body.sessions[0]).toMatchObject({ sessionId, unreadCount: 0 });
    });
  });

  describe('sending', () => {
    it('answers 201 with the ChatMessageResponse, and 200 with the same message on a repeat', async () => {
      const { aliceToken, alice, sessionId } = await pair();
      const clientMessageId = newId();
      const first = await send(aliceToken, sessionId, 'hello', clientMessageId);
      expect(first.status).toBe(201);
      expect(first.body).toMatchObject({ sessionId, seq: 1, senderEmail: alice, senderDisplayName: 'Alice', content: 'hello', clientMessageId, delivered: false, seen: false });
      expect(first.body.messageId).toMatch(/^[0-9a-f-]{36}$/);
      expect(new Date(first.body.sentAt).getTime()).toBeGreaterThan(0);
      const repeat = await send(aliceToken, sessionId, 'hello', clientMessageId);
      expect(repeat.status).toBe(200);
      expect(repeat.body).toEqual(first.body);
    });

    it('numbers concurrent sends 1..n without gaps', async () => {
      const { aliceToken, bobToken, sessionId } = await pair();
      const results = await Promise.all(Array.from({ length: 40 }, (_, i) => send(i % 2 ? aliceToken : bobToken, sessionId, `m${i}`)));
      expect(results.every((r) => r.status === 201)).toBe(true);
      expect(results.map((r) => r.body.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    });

    it('stores concurrent repeats of one clientMessageId once', async () => {
      const { aliceToken, sessionId } = await pair();
      const clientMessageId = newId();
      const results = await Promise.all(Array.from({ length: 15 }, () => send(aliceToken, sessionId, 'once', clientMessageId)));
      expect(new Set(results.map((r) => r.body.messageId)).size).toBe(1);
      expect(results.filter((r) => r.status === 201)).toHaveLength(1);
      const history = await t.call('GET', `/api/chat/${sessionId}/history`, { token: aliceToken });
      expect(history.body.messages).toHaveLength(1);
    });

    it('refuses reusing a clientMessageId for different content with 409', async () => {
      const { aliceToken, sessionId } = await pair();
      const clientMessageId = newId();
      await send(aliceToken, sessionId, 'one', clientMessageId);
      const res = await send(aliceToken, sessionId, 'two', clientMessageId);
      expect(res.status).toBe(409);
      expect(res.body.code).toBe('IDEMPOTENCY_KEY_REUSED');
    });

    it('serves the high-level design\u2019s POST /api/chat/send alias', async () => {
      const { aliceToken, alice, sessionId } = await pair();
      const res = await t.call('POST', '/api/chat/send', { token: aliceToken, body: { sessionId, senderEmail: alice, intent: 'dating', content: 'via alias', clientMessageId: newId() } });
      expect(res.status).toBe(201);
      expect(res.body.seq).toBe(1);
    });

    it('accepts content up to the limit in characters, counting an emoji once', async () => {
      const { aliceToken, sessionId } = await pair();
      expect((await send(aliceToken, sessionId, '\u{1F600}'.repeat(4000))).status).toBe(201);
      const over = await send(aliceToken, sessionId, 'x'.repeat(4001));
      expect(over.status).toBe(413);
      expect(over.body.code).toBe('CONTENT_TOO_LONG');
    });
  });

  describe('history', () => {
    it('pages newest first with before and after cursors', async () => {
      const { aliceToken, sessionId } = await pair();
      for (let i = 1; i <= 7; i++) await send(aliceToken, sessionId, `m${i}`);
      const page1 = await t.call('GET', `/api/chat/${sessionId}/history?limit=3`, { token: aliceToken });
      expect(page1.body.messages.map((m: { seq: number }) => m.seq)).toEqual([7, 6, 5]);
      expect(page1.body.nextCursor).toBe(5);
      const page2 = await t.call('GET', `/api/chat/${sessionId}/history?limit=3&before=5`, { token: aliceToken });
      expect(page2.body.messages.map((m: { seq: number }) => m.seq)).toEqual([4, 3, 2]);
      const page3 = await t.call('GET', `/api/chat/${sessionId}/history?limit=3&before=2`, { token: aliceToken });
      expect(page3.body).toMatchObject({ nextCursor: null });
      expect(page3.body.messages.map((m: { seq: number }) => m.seq)).toEqual([1]);

      const after = await t.call('GET', `/api/chat/${sessionId}/history?limit=3&after=2`, { token: aliceToken });
      expect(after.body.messages.map((m: { seq: number }) => m.seq)).toEqual([5, 4, 3]);
      expect(after.body.nextCursor).toBe(5);
      const rest = await t.call('GET', `/api/chat/${sessionId}/history?limit=3&after=5`, { token: aliceToken });
      expect(rest.body).toMatchObject({ nextCursor: null });
      expect(rest.body.messages.map((m: { seq: number }) => m.seq)).toEqual([7, 6]);
    });

    it('serves the high-level design\u2019s page/size alias', async () => {
      const { aliceToken, sessionId } = await pair();
      for (let i = 1; i <= 5; i++) await send(aliceToken, sessionId, `m${i}`);
      const page2 = await t.call('GET', `/api/chat/history?chatId=${sessionId}&page=2&size=2`, { token: aliceToken });
      expect(page2.body.messages.map((m: { seq: number }) => m.seq)).toEqual([3, 2]);
      const page4 = await t.call('GET', `/api/chat/history?chatId=${sessionId}&page=4&size=2`, { token: aliceToken });
      expect(page4.body.messages).toEqual([]);
    });

    it('refuses a limit over 200 and both cursors at once', async () => {
      const { aliceToken, sessionId } = await pair();
      expect((await t.call('GET', `/api/chat/${sessionId}/history?limit=201`, { token: aliceToken })).body.code).toBe('VALIDATION_FAILED');
      expect((await t.call('GET', `/api/chat/${sessionId}/history?before=3&after=1`, { token: aliceToken })).body.code).toBe('VALIDATION_FAILED');
    });
  });

  describe('unread and seen', () => {
    it('counts unread messages for the reader and clears them up to a seq', async () => {
      const { aliceToken, bobToken, bob, sessionId } = await pair();
      for (let i = 1; i <= 4; i++) await send(aliceToken, sessionId, `m${i}`);
      await send(bobToken, sessionId, 'reply');
      const unread = await t.call('GET', `/api/chat/${sessionId}/unread?readerEmail=${bob}&intent=dating`, { token: bobToken });
      expect(unread.status).toBe(200);
      expect(unread.body.count).toBe(4);
      expect(unread.body.messages.map((m: { seq: number }) => m.seq)).toEqual([1, 2, 3, 4]);

      const seen = await t.call('POST', `/api/chat/${sessionId}/seen`, { token: bobToken, body: { upToSeq: 3 } });
      expect(seen.status).toBe(200);
      expect(seen.body).toEqual({ sessionId, upToSeq: 3, updated: 3 });
      const after = await t.call('GET', `/api/chat/unread?chatId=${sessionId}`, { token: bobToken });
      expect(after.body.count).toBe(1);
      const history = await t.call('GET', `/api/chat/${sessionId}/history`, { token: aliceToken });
      expect(history.body.messages.filter((m: { seen: boolean }) => m.seen).map((m: { seq: number }) => m.seq)).toEqual([3, 2, 1]);
      const aliceUnread = await t.call('GET', `/api/chat/${sessionId}/unread`, { token: aliceToken });
      expect(aliceUnread.body.count).toBe(1);
    });

    it('refuses an unread query whose intent differs from the session', async () => {
      const { bobToken, sessionId } = await pair();
      const res = await t.call('GET', `/api/chat/${sessionId}/unread?intent=work`, { token: bobToken });
      expect(res.status).toBe(400);
      expect(res.body.code).toBe('INTENT_MISMATCH');
    });
  });

  describe('operations', () => {
    it('reports liveness, readiness and Prometheus metrics', async () => {
      expect((await t.call('GET', '/health/live')).status).toBe(200);
      const ready = await t.call('GET', '/health/ready');
      expect(ready.body).toMatchObject({ status: 'up', checks: { database: 'up' } });
      const metrics = await t.call('GET', '/metrics');
      expect(metrics.body).toContain('chat_http_request_duration_seconds_bucket');
      expect(metrics.body).toMatch(/chat_outbox_rows\{state="pending"\} \d+/);
    });

    it('answers unknown routes with a problem', async () => {
      const res = await t.call('GET', '/nope');
      expect(res.status).toBe(404);
      expect(res.headers.get('content-type')).toContain('application/problem+json');
      expect(res.body).toMatchObject({ code: 'ROUTE_NOT_FOUND', status: 404, type: expect.stringContaining('route-not-found') });
    });
  });
}

describe('REST API on PGlite', () => describeApi('PGlite'));
describe.skipIf(!infra.postgresUrl)('REST API on PostgreSQL', () => describeApi('PostgreSQL'));
