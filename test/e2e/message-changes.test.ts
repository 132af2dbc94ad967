/**
 * Edits, deletes and sync end to end, in-process with the real STOMP client: REST and STOMP
 * permissions, the events both participants' connections get, the seeds' destination names, and a
 * client that was offline catching up with one sync page sequence.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import { type SyncedMessage, type SyncEventBody, SyncReplica } from '../support/sync-replica.js';

let t: TestApp;
const clients: TestStompClient[] = [];

async function connect(token: string): Promise<TestStompClient> {
  const client = await connectStomp({ baseUrl: t.url, token });
  clients.push(client);
  return client;
}

async function user(name: string) {
  const email = uniqueEmail(name);
  return { email, token: await t.token(email, name) };
}

async function sessionBetween(from: { token: string }, to: { email: string }, intent = 'dating'): Promise<string> {
  const res = await t.call('POST', '/api/chat/init', { token: from.token, body: { toEmail: to.email, intent } });
  expect(res.status).toBe(200);
  return res.body.sessionId as string;
}

async function send(from: { token: string }, sessionId: string, content: string) {
  const res = await t.call('POST', '/api/chat/send', { token: from.token, body: { sessionId, content, clientMessageId: newId() } });
  expect(res.status).toBe(201);
  return res.body as { messageId: string; seq: number; editedAt: string | null; deleted: boolean };
}

const edit = (by: { token: string }, sessionId: string, messageId: string, content: unknown) =>
  t.call('PATCH', `/api/chat/${sessionId}/messages/${messageId}`, { token: by.token, body: { content } });
const remove = (by: { token: string }, sessionId: string, messageId: string) => t.call('DELETE', `/api/chat/${sessionId}/messages/${messageId}`, { token: by.token });
const history = async (by: { token: string }, sessionId: string) => (await t.call('GET', `/api/chat/${sessionId}/history?limit=200`, { token: by.token })).body.messages as SyncedMessage[];

/** Every case on the embedded database and on PostgreSQL (where sync's horizon matters most). */
function describeChanges(backend: 'PGlite' | 'PostgreSQL'): void {
  let database: TestDatabase | undefined;
  beforeAll(async () => {
    if (backend === 'PostgreSQL') database = await createTestDatabase(infra.postgresUrl!);
    t = await startTestApp(database ? { DATABASE_URL: database.url } : {});
  });
  afterAll(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close().catch(() => undefined)));
    await t?.close();
    await database?.drop();
  });

  describe('editing and deleting over REST', () => {
    it('edits and deletes only the sender\u2019s own message, keeps the tombstone in place, and repeats a delete', async () => {
      const [alice, bob, carol] = [await user('alice'), await user('bob'), await user('carol')];
      const sessionId = await sessionBetween(alice, bob);
      const first = await send(alice, sessionId, 'first');
      expect(first).toMatchObject({ editedAt: null, deleted: false });
      const second = await send(alice, sessionId, 'second');
      await send(bob, sessionId, 'third');

      const edited = await edit(alice, sessionId, first.messageId, 'first, edited');
      expect(edited.status).toBe(200);
      expect(edited.body).toMatchObject({ messageId: first.messageId, seq: 1, content: 'first, edited', deleted: false });
      expect(Date.parse(edited.body.editedAt)).not.toBeNaN();

      expect((await edit(bob, sessionId, first.messageId, 'hijack')).body).toMatchObject({ status: 403, code: 'NOT_MESSAGE_SENDER' });
      expect((await remove(bob, sessionId, first.messageId)).body).toMatchObject({ status: 403, code: 'NOT_MESSAGE_SENDER' });
      expect((await edit(carol, sessionId, first.messageId, 'x')).body).toMatchObject({ status: 403, code: 'NOT_A_PARTICIPANT' });
      expect((await remove(carol, sessionId, first.messageId)).body).toMatchObject({ status: 403, code: 'NOT_A_PARTICIPANT' });
      expect((await edit(alice, sessionId, newId(), 'x')).body).toMatchObject({ status: 404, code: 'MESSAGE_NOT_FOUND' });
      expect((await edit(alice, sessionId, first.messageId, '   ')).body).toMatchObject({ status: 400, code: 'CONTENT_EMPTY' });
      expect((await edit(alice, sessionId, first.messageId, 'x'.repeat(5000))).body).toMatchObject({ status: 413, code: 'CONTENT_TOO_LONG' });
      expect((await edit(alice, sessionId, 'not-a-uuid', 'x')).status).toBe(400);
      // The ids may be repeated in the body, as a STOMP chat.edit has them, but must match the path.
      const withIds = await t.call('PATCH', `/api/chat/${sessionId}/messages/${first.messageId}`, { token: alice.token, body: { sessionId, messageId: first.messageId, content: 'first, edited' } });
      expect(withIds.status).toBe(200);
      const mismatch = await t.call('PATCH', `/api/chat/${sessionId}/messages/${first.messageId}`, { token: alice.token, body: { messageId: second.messageId, content: 'x' } });
      expect(mismatch.body).toMatchObject({ status: 400, code: 'VALIDATION_FAILED', field: 'messageId' });

      const deleted = await remove(alice, sessionId, second.messageId);
      expect(deleted.status).toBe(200);
      expect(deleted.body).toMatchObject({ messageId: second.messageId, seq: 2, content: '', deleted: true });
      const again = await remove(alice, sessionId, second.messageId);
      expect(again.status).toBe(200);
      expect(again.body).toEqual(deleted.body);
      // A client that labels the DELETE's empty body as JSON is not refused for it.
      const labelled = await t.call('DELETE', `/api/chat/${sessionId}/messages/${second.messageId}`, { token: alice.token, headers: { 'content-type': 'application/json' }, rawBody: '' });
      expect(labelled.status).toBe(200);
      expect(labelled.body).toEqual(deleted.body);
      expect((await edit(alice, sessionId, second.messageId, 'back')).body).toMatchObject({ status: 409, code: 'MESSAGE_DELETED' });

      const messages = await history(bob, sessionId);
      expect(messages.map((m) => [m.seq, m.content, m.deleted, m.editedAt !== null])).toEqual([
        [3, 'third', false, false],
        [2, '', true, false],
        [1, 'first, edited', false, true],
      ]);
      const sessions = (await t.call('GET', '/api/chat/sessions', { token: alice.token })).body.sessions;
      expect(sessions[0].lastMessage).toMatchObject({ seq: 3, editedAt: null, deleted: false });
    });
  });

  describe('edits and deletes in real time', () => {
    it('reach both participants\u2019 connections on the session topic and /user/queue/messages, by the old and the seeds\u2019 names', async () => {
      const [alice, bob] = [await user('alice'), await user('bob')];
      const sessionId = await sessionBetween(alice, bob);
      const [a, b] = [await connect(alice.token), await connect(bob.token)];
      const names = [`/topic/session.${sessionId}`, `/topic/chat/${sessionId}`, '/user/queue/messages', '/user/queue/notifications'];
      for (const c of [a, b]) for (const name of names) await c.subscribe(name);
      await a.subscribe('/user/queue/ack');

      a.send('/app/chat.send', { sessionId, content: 'hello', clientMessageId: newId() });
      await expect.poll(() => a.on('/user/queue/ack').length).toBe(1);
      const { messageId } = a.on('/user/queue/ack')[0]!.body as { messageId: string };
      await a.sendWithReceipt('/app/chat.edit', { sessionId, messageId, content: 'hello, edited' });
      await a.sendWithReceipt('/app/chat.delete', { sessionId, messageId });

      for (const c of [a, b]) {
        for (const name of names) {
          // Bob's queues also had the message itself; alice's own send is acked, not on her messages queue.
          await expect.poll(() => c.on(name).filter((m) => m.headers['event-type'] !== 'message').length, { timeout: 5000 }).toBe(2);
          const [edited, deleted] = c.on(name).filter((m) => m.headers['event-type'] !== 'message');
          expect(edited!.headers).toMatchObject({ 'event-type': 'edit', 'session-id': sessionId, seq: '1', destination: name });
          expect(edited!.body).toMatchObject({ messageId, seq: 1, content: 'hello, edited', deleted: false });
          expect(deleted!.headers).toMatchObject({ 'event-type': 'delete', seq: '1' });
          expect(deleted!.body).toMatchObject({ messageId, seq: 1, content: '', deleted: true });
        }
      }
      // The seeds' names receive exactly what the old names receive.
      for (const c of [a, b]) {
        const bodies = (name: string) => c.on(name).map((m) => [m.headers['event-type'], m.body]);
        expect(bodies(`/topic/chat/${sessionId}`)).toEqual(bodies(`/topic/session.${sessionId}`));
        expect(bodies('/user/queue/notifications')).toEqual(bodies('/user/queue/messages'));
      }

      // A repeated delete emits nothing more.
      await a.sendWithReceipt('/app/chat.delete', { sessionId, messageId });
      a.send('/app/chat.send', { sessionId, content: 'after', clientMessageId: newId() });
      await expect.poll(() => b.on('/user/queue/messages').length).toBe(4);
      expect(b.on('/user/queue/messages').map((m) => m.headers['event-type'])).toEqual(['message', 'edit', 'delete', 'message']);
    });

    it('answers a refused edit or delete on /user/queue/error, and refuses the seeds\u2019 topic name to a non-participant', async () => {
      const [alice, bob, carol] = [await user('alice'), await user('bob'), await user('carol')];
      const sessionId = await sessionBetween(alice, bob);
      const { messageId } = await send(alice, sessionId, 'mine');
      const [b, c] = [await connect(bob.token), await connect(carol.token)];
      for (const client of [b, c]) await client.subscribe('/user/queue/error');
      await b.sendWithReceipt('/app/chat.edit', { sessionId, messageId, content: 'not yours' });
      await b.sendWithReceipt('/app/chat.delete', { sessionId, messageId });
      await b.sendWithReceipt('/app/chat.edit', { sessionId, messageId: newId(), content: 'x' });
      await c.sendWithReceipt('/app/chat.edit', { sessionId, messageId, content: 'x' });
      await c.sendWithReceipt('/app/chat.delete', { sessionId, messageId });
      expect(b.on('/user/queue/error').map((m) => m.body.code)).toEqual(['NOT_MESSAGE_SENDER', 'NOT_MESSAGE_SENDER', 'MESSAGE_NOT_FOUND']);
      expect(c.on('/user/queue/error').map((m) => m.body.code)).toEqual(['NOT_A_PARTICIPANT', 'NOT_A_PARTICIPANT']);

      c.client.subscribe(`/topic/chat/${sessionId}`, () => undefined);
      await expect.poll(() => c.on('/user/queue/error').map((m) => m.body.code)).toEqual(['NOT_A_PARTICIPANT', 'NOT_A_PARTICIPANT', 'NOT_A_PARTICIPANT']);
      expect((await history(alice, sessionId))[0]).toMatchObject({ content: 'mine', deleted: false, editedAt: null });
    });
  });

  describe('sync', () => {
    async function syncAll(by: { token: string }, since: string, limit?: number) {
      const events: SyncEventBody[] = [];
      let next = since;
      let calls = 0;
      for (;;) {
        const res = await t.call('GET', `/api/chat/sync?since=${encodeURIComponent(next)}${limit ? `&limit=${limit}` : ''}`, { token: by.token });
        expect(res.status).toBe(200);
        calls++;
        events.push(...res.body.events);
        next = res.body.next;
        if (!res.body.hasMore) return { events, next, calls };
      }
    }

    it('brings a client that was offline to exactly the server\u2019s state, in pages', async () => {
      const [alice, bob, carol, dave] = [await user('alice'), await user('bob'), await user('carol'), await user('dave')];
      const sessions = [await sessionBetween(alice, bob), await sessionBetween(carol, alice), await sessionBetween(alice, dave)];
      const peers = [bob, carol, dave];
      const replica = new SyncReplica();
      // A client starts with a token, then loads what is there.
      const start = await t.call('GET', '/api/chat/sync', { token: alice.token });
      expect(start.body).toMatchObject({ events: [], hasMore: false });
      for (const s of sessions) await send(alice, s, `before ${s}`);
      for (const s of sessions) replica.load(await history(alice, s));

      // Offline: 30 sends (some from alice's other device), 5 edits, 3 deletes, a seen in each session.
      const sent: Array<{ by: { token: string }; sessionId: string; messageId: string }> = [];
      for (let i = 0; i < 30; i++) {
        const sessionId = sessions[i % 3]!;
        const by = i % 5 === 0 ? alice : peers[i % 3]!;
        sent.push({ by, sessionId, messageId: (await send(by, sessionId, `m${i}`)).messageId });
      }
      for (const i of [1, 6, 10, 17, 29]) expect((await edit(sent[i]!.by, sent[i]!.sessionId, sent[i]!.messageId, `m${i} edited`)).status).toBe(200);
      for (const i of [2, 6, 20]) expect((await remove(sent[i]!.by, sent[i]!.sessionId, sent[i]!.messageId)).status).toBe(200);
      await t.call('POST', `/api/chat/${sessions[0]}/seen`, { token: bob.token, body: { upToSeq: 5 } });
      await t.call('POST', `/api/chat/${sessions[1]}/seen`, { token: carol.token, body: { upToSeq: 8 } });
      await t.call('POST', `/api/chat/${sessions[2]}/seen`, { token: alice.token, body: { upToSeq: 6 } });

      const { events, next, calls } = await syncAll(alice, start.body.next as string, 7);
      expect(calls).toBeGreaterThan(1);
      expect(new Set(events.map((e) => e.type))).toEqual(new Set(['message', 'edit', 'delete', 'receipt']));
      expect(events.filter((e) => e.type === 'receipt').map((e) => e.type === 'receipt' && e.receipt.status)).toContain('seen');
      replica.apply(events);
      for (const s of sessions) expect(replica.messages(s)).toEqual(await history(alice, s));

      // Nothing new: nothing again. A new change: only it.
      expect((await syncAll(alice, next)).events).toEqual([]);
      await send(bob, sessions[0]!, 'later');
      const later = await syncAll(alice, next);
      expect(later.events).toMatchObject([{ type: 'message', sessionId: sessions[0], message: { content: 'later' } }]);
      // Someone else's sync sees none of alice's sessions with carol and dave.
      const bobsView = await syncAll(bob, start.body.next as string, 500);
      expect(new Set(bobsView.events.map((e) => e.sessionId))).toEqual(new Set([sessions[0]]));
    });

    it('refuses a malformed token and a limit over 500', async () => {
      const alice = await user('alice');
      for (const since of ['garbage!', 'bm9wZQ', Buffer.from('v1.1.x').toString('base64url'), Buffer.from('v1.99999999999999999999999.1').toString('base64url')]) {
        const res = await t.call('GET', `/api/chat/sync?since=${encodeURIComponent(since)}`, { token: alice.token });
        expect(res.status).toBe(400);
        expect(res.headers.get('content-type')).toMatch(/application\/problem\+json/);
      }
      expect((await t.call('GET', '/api/chat/sync?limit=501', { token: alice.token })).status).toBe(400);
      expect((await t.call('GET', '/api/chat/sync')).status).toBe(401);
    });
  });
}

describe('on PGlite', () => describeChanges('PGlite'));
describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => describeChanges('PostgreSQL'));
