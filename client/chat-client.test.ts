/**
 * ChatClient against the real service, in-process: raw WebSocket through test sockets that can be
 * cut at chosen moments, and SockJS as browsers use it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../test/support/test-app.js';
import { ChatClient, type ChatClientOptions, type ConnectionState } from './chat-client.js';
import type { ChatMessage, Receipt, TypingSignal } from './chat-types.js';
import { isMessageTo, SocketPlant } from './testing/socket-plant.js';

let t: TestApp;
const clients: ChatClient[] = [];

beforeAll(async () => {
  t = await startTestApp();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});
afterAll(async () => {
  await t?.close();
});

async function pair() {
  const alice = uniqueEmail('alice');
  const bob = uniqueEmail('bob');
  const [aliceToken, bobToken] = await Promise.all([t.token(alice, 'Alice'), t.token(bob, 'Bob')]);
  const init = await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'dating' } });
  return { alice, bob, aliceToken, bobToken, sessionId: init.body.sessionId as string };
}

/** A client recording what it hands to the application. */
function client(email: string, options: Partial<ChatClientOptions> & { plant?: SocketPlant } = {}) {
  const plant = options.plant ?? new SocketPlant();
  const c = new ChatClient({
    baseUrl: t.url,
    tokenProvider: () => t.token(email),
    webSocketFactory: plant.factory,
    reconnect: { initialMs: 50, maxMs: 400 },
    ...options,
  });
  clients.push(c);
  const messages: ChatMessage[] = [];
  const states: ConnectionState[] = [];
  const receipts: Receipt[] = [];
  const typing: TypingSignal[] = [];
  const errors: string[] = [];
  c.on('message', (m) => messages.push(m));
  c.on('state', (s) => states.push(s));
  c.on('receipt', (r) => receipts.push(r));
  c.on('typing', (s) => typing.push(s));
  c.on('error', (e) => errors.push(e.code));
  return { c, plant, messages, states, receipts, typing, errors };
}

async function restSend(token: string, sessionId: string, content: string): Promise<ChatMessage> {
  const res = await t.call('POST', '/api/chat/message', { token, body: { sessionId, content, clientMessageId: newId() } });
  expect(res.status).toBe(201);
  return res.body as ChatMessage;
}

async function connected(c: ChatClient): Promise<void> {
  c.connect();
  await expect.poll(() => c.state, { timeout: 10_000 }).toBe('connected');
}

describe('ChatClient recovery', () => {
  it('recovers the messages sent while it was disconnected: each once, in seq order', async () => {
    const p = await pair();
    let gate: Promise<void> = Promise.resolve();
    let release = (): void => undefined;
    const alice = client(p.alice, {
      tokenProvider: async () => {
        await gate;
        return t.token(p.alice);
      },
    });
    await connected(alice.c);
    await alice.c.openSession(p.sessionId, { lastSeq: 0 });
    await restSend(p.bobToken, p.sessionId, 'm1');
    await restSend(p.bobToken, p.sessionId, 'm2');
    await expect.poll(() => alice.messages.map((m) => m.content)).toEqual(['m1', 'm2']);

    // Cut the connection and hold the reconnect until bob has sent more.
    gate = new Promise((resolve) => (release = resolve));
    alice.plant.current.kill();
    await expect.poll(() => alice.c.state).toBe('reconnecting');
    for (let i = 3; i <= 7; i++) await restSend(p.bobToken, p.sessionId, `m${i}`);
    // Live sends right after the reconnect race the history pages of the recovery.
    const live = new Promise<void>((resolve) => {
      const off = alice.c.on('state', (state) => {
        if (state !== 'connected') return;
        off();
        void (async () => {
          for (let i = 8; i <= 12; i++) await restSend(p.bobToken, p.sessionId, `m${i}`);
          resolve();
        })();
      });
    });
    release();
    await live;

    const expected = Array.from({ length: 12 }, (_, i) => `m${i + 1}`);
    await expect.poll(() => alice.messages.map((m) => m.content), { timeout: 10_000 }).toEqual(expected);
    expect(alice.messages.map((m) => m.seq)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(new Set(alice.messages.map((m) => m.messageId)).size).toBe(12);
    expect(alice.plant.sockets).toHaveLength(2);
    expect(alice.states).toContain('reconnecting');
  });

  it('recovers a session it never opened once it has seen it, and recovers messages of my own sent elsewhere', async () => {
    const p = await pair();
    const alice = client(p.alice);
    await connected(alice.c);
    alice.c.trackSession(p.sessionId, 0);
    alice.plant.current.kill();
    await restSend(p.aliceToken, p.sessionId, 'from my other device');
    await restSend(p.bobToken, p.sessionId, 'from bob');
    await expect.poll(() => alice.messages.map((m) => `${m.seq}:${m.content}`), { timeout: 10_000 }).toEqual(['1:from my other device', '2:from bob']);
  });
});

describe('ChatClient sends', () => {
  it('re-sends an unacknowledged send after the connection drops, and the service stores it once', async () => {
    const p = await pair();
    const plant = new SocketPlant();
    let cut = false;
    // The service stores the send and acks it; the connection dies before the ack reaches the client.
    plant.filter = (frame) => {
      if (!cut && isMessageTo(frame, '/user/queue/ack')) {
        cut = true;
        return 'drop-and-kill';
      }
      return 'pass';
    };
    const alice = client(p.alice, { plant });
    await connected(alice.c);
    const out = alice.c.send(p.sessionId, 'exactly once');
    const stored = await out.acked;

    expect(cut).toBe(true);
    expect(plant.sockets).toHaveLength(2);
    const sends = plant.framesSent('SEND').filter((f) => f.includes(out.clientMessageId));
    expect(sends).toHaveLength(2); // the original and the retry, with the same clientMessageId
    expect(stored).toMatchObject({ clientMessageId: out.clientMessageId, content: 'exactly once', seq: 1 });
    const history = await t.call('GET', `/api/chat/${p.sessionId}/history`, { token: p.aliceToken });
    expect(history.body.messages).toHaveLength(1);
    expect(alice.c.pendingSends).toBe(0);
  });

  it('re-sends on a live connection when the ack does not come, without duplicating', async () => {
    const p = await pair();
    const plant = new SocketPlant();
    let dropped = 0;
    plant.filter = (frame) => (isMessageTo(frame, '/user/queue/ack') && dropped++ === 0 ? 'drop' : 'pass');
    const alice = client(p.alice, { plant, resendAfterMs: 200 });
    await connected(alice.c);
    const bob = client(p.bob);
    await connected(bob.c);
    bob.c.trackSession(p.sessionId, 0);

    const out = alice.c.send(p.sessionId, 'once, please');
    await out.acked;
    expect(plant.sockets).toHaveLength(1);
    expect(plant.framesSent('SEND').filter((f) => f.includes(out.clientMessageId)).length).toBeGreaterThanOrEqual(2);
    await expect.poll(() => bob.messages.map((m) => m.content)).toEqual(['once, please']);
    const history = await t.call('GET', `/api/chat/${p.sessionId}/history`, { token: p.aliceToken });
    expect(history.body.messages).toHaveLength(1);
  });

  it('queues sends made while offline and sends them on connect', async () => {
    const p = await pair();
    const alice = client(p.alice);
    const first = alice.c.send(p.sessionId, 'one');
    const second = alice.c.send(p.sessionId, 'two');
    alice.c.connect();
    const [a, b] = await Promise.all([first.acked, second.acked]);
    expect([a.seq, b.seq]).toEqual([1, 2]);
  });

  it('rejects a send the service refuses, with its code', async () => {
    const p = await pair();
    const alice = client(p.alice);
    await connected(alice.c);
    await expect(alice.c.send(p.sessionId, '   ').acked).rejects.toMatchObject({ code: 'CONTENT_EMPTY', status: 400 });
    expect(alice.c.pendingSends).toBe(0);
    expect(alice.errors).toContain('CONTENT_EMPTY');
  });

  it('rejects pending sends when closed', async () => {
    const p = await pair();
    const alice = client(p.alice);
    const out = alice.c.send(p.sessionId, 'never connected');
    await alice.c.close();
    await expect(out.acked).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
  });
});

describe.each(['sockjs-xhr-streaming', 'sockjs', 'websocket'] as const)('ChatClient over %s', (transport) => {
  it('chats both ways with delivered and seen receipts and typing, ACKing each delivery', async () => {
    const p = await pair();
    const alice = client(p.alice, { transport });
    const bob = client(p.bob, { transport });
    await Promise.all([connected(alice.c), connected(bob.c)]);
    await Promise.all([alice.c.openSession(p.sessionId, { lastSeq: 0 }), bob.c.openSession(p.sessionId, { lastSeq: 0 })]);

    const hi = await alice.c.send(p.sessionId, 'hi bob').acked;
    await expect.poll(() => bob.messages.map((m) => m.content)).toEqual(['hi bob']);
    await expect.poll(() => alice.receipts.map((r) => r.status)).toEqual(['delivered']);
    expect(alice.receipts[0]).toMatchObject({ readerEmail: p.bob, messageIds: [hi.messageId] });

    bob.c.typing(p.sessionId, true);
    await expect.poll(() => alice.typing).toEqual([{ sessionId: p.sessionId, email: p.bob, typing: true }]);
    expect(bob.typing).toEqual([]); // my own typing is not reported back to me

    await bob.c.markSeen(p.sessionId, hi.seq);
    await expect.poll(() => alice.receipts.map((r) => r.status)).toEqual(['delivered', 'seen']);
    await bob.c.send(p.sessionId, 'hi alice').acked;
    await expect.poll(() => alice.messages.map((m) => m.content)).toEqual(['hi bob', 'hi alice']);
    expect(bob.messages.map((m) => m.content)).toEqual(['hi bob', 'hi alice']);
  });
});

describe('ChatClient connection', () => {
  it('fetches a fresh token for each attempt', async () => {
    const p = await pair();
    let calls = 0;
    const alice = client(p.alice, {
      tokenProvider: () => {
        calls++;
        return t.token(p.alice);
      },
    });
    await connected(alice.c);
    alice.plant.current.kill();
    await expect.poll(() => alice.plant.sockets.length).toBe(2);
    await expect.poll(() => alice.c.state).toBe('connected');
    expect(calls).toBe(2);
    expect(alice.c.userEmail).toBe(p.alice);
  });

  it('ends disconnected, saying why, when the service keeps refusing the token', async () => {
    const alice = client('nobody@example.com', { tokenProvider: async () => 'not-a-jwt', maxAuthFailures: 2 });
    alice.c.connect();
    await expect.poll(() => alice.c.state).toBe('disconnected');
    expect(alice.errors).toEqual(['UNAUTHENTICATED', 'UNAUTHENTICATED']);
    expect(alice.plant.sockets).toHaveLength(2);
  });

  it('keeps retrying with backoff while the token provider fails', async () => {
    const p = await pair();
    let fail = 2;
    const alice = client(p.alice, {
      tokenProvider: async () => {
        if (fail-- > 0) throw new Error('identity provider down');
        return t.token(p.alice);
      },
    });
    await connected(alice.c);
    expect(alice.errors).toEqual(['TOKEN_UNAVAILABLE', 'TOKEN_UNAVAILABLE']);
  });
});

describe('ChatClient REST helpers', () => {
  it('lists sessions with unread counts, pages history back, reads unread', async () => {
    const p = await pair();
    const bob = client(p.bob);
    for (let i = 1; i <= 5; i++) await restSend(p.aliceToken, p.sessionId, `n${i}`);
    const [session] = await bob.c.listSessions();
    expect(session).toMatchObject({ sessionId: p.sessionId, unreadCount: 5, lastSeq: 5, peer: { email: p.alice } });
    const newest = await bob.c.history(p.sessionId, { limit: 2 });
    expect(newest.messages.map((m) => m.seq)).toEqual([5, 4]);
    const older = await bob.c.history(p.sessionId, { limit: 2, before: newest.nextCursor! });
    expect(older.messages.map((m) => m.seq)).toEqual([3, 2]);
    expect((await bob.c.unread(p.sessionId)).count).toBe(5);
    await expect(bob.c.initSession(p.bob, 'dating')).rejects.toMatchObject({ code: 'SELF_CHAT', status: 400 });
  });
});

describe('ChatClient edits, deletes and sync', () => {
  /** What the application shows: each message by id as the client last told it. */
  function shown(c: ChatClient) {
    const byId = new Map<string, ChatMessage>();
    const changes: ChatMessage[] = [];
    c.on('message', (m) => byId.set(m.messageId, m));
    c.on('change', (m) => {
      changes.push(m);
      byId.set(m.messageId, m);
    });
    return { byId, changes, of: (sessionId: string) => [...byId.values()].filter((m) => m.sessionId === sessionId).sort((x, y) => y.seq - x.seq) };
  }

  it('applies an edit and a delete in place for the peer and for the sender, each once', async () => {
    const p = await pair();
    const alice = client(p.alice);
    const bob = client(p.bob);
    const [aliceView, bobView] = [shown(alice.c), shown(bob.c)];
    await Promise.all([connected(alice.c), connected(bob.c)]);
    await Promise.all([alice.c.openSession(p.sessionId), bob.c.openSession(p.sessionId)]);
    const sent = await restSend(p.bobToken, p.sessionId, 'helo');
    await expect.poll(() => alice.messages.map((m) => m.content)).toEqual(['helo']);

    const edited = await bob.c.editMessage(p.sessionId, sent.messageId, 'hello');
    expect(edited).toMatchObject({ messageId: sent.messageId, seq: 1, content: 'hello' });
    await expect.poll(() => aliceView.changes.map((m) => m.content)).toEqual(['hello']);
    await bob.c.deleteMessage(p.sessionId, sent.messageId);
    await expect.poll(() => aliceView.changes.map((m) => [m.content, m.deleted])).toEqual([['hello', false], ['', true]]);
    // The sender's own REST answer and the live events of the same change count once.
    await expect.poll(() => bobView.changes.map((m) => [m.content, m.deleted])).toEqual([['hello', false], ['', true]]);
    await bob.c.deleteMessage(p.sessionId, sent.messageId);
    await restSend(p.aliceToken, p.sessionId, 'next');
    await expect.poll(() => bob.messages.map((m) => m.content)).toEqual(['helo', 'next']);
    expect(bobView.changes).toHaveLength(2);
    expect(aliceView.of(p.sessionId).map((m) => [m.seq, m.content, m.deleted])).toEqual([[2, 'next', false], [1, '', true]]);
    await expect(alice.c.editMessage(p.sessionId, sent.messageId, 'not mine')).rejects.toMatchObject({ code: 'NOT_MESSAGE_SENDER', status: 403 });
  });

  it('catches up after being offline during 30 sends, 5 edits, 3 deletes and a seen in 3 sessions with sync alone, to the server\u2019s state', async () => {
    const alice = uniqueEmail('alice');
    const aliceToken = await t.token(alice, 'Alice');
    const peers = await Promise.all(['bob', 'carol', 'dave'].map(async (name) => {
      const email = uniqueEmail(name);
      return { email, token: await t.token(email, name) };
    }));
    const sessions: string[] = [];
    for (const peer of peers) sessions.push((await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: peer.email, intent: 'dating' } })).body.sessionId as string);
    for (const s of sessions) await restSend(aliceToken, s, 'before');

    const urls: string[] = [];
    let gate: Promise<void> = Promise.resolve();
    let release = (): void => undefined;
    const a = client(alice, {
      fetch: (input, init) => {
        urls.push(String(input));
        return globalThis.fetch(input, init);
      },
      tokenProvider: async () => {
        await gate;
        return t.token(alice);
      },
    });
    const view = shown(a.c);
    await connected(a.c);
    for (const s of sessions) await a.c.openSession(s);
    await expect.poll(() => a.messages.length).toBe(3);
    await expect.poll(() => a.c.syncToken).toBeDefined();

    gate = new Promise((resolve) => (release = resolve));
    a.plant.current.kill();
    await expect.poll(() => a.c.state).toBe('reconnecting');
    const cut = urls.length;
    const sent: Array<{ token: string; sessionId: string; messageId: string }> = [];
    for (let i = 0; i < 30; i++) {
      const sessionId = sessions[i % 3]!;
      const token = i % 4 === 0 ? aliceToken : peers[i % 3]!.token;
      sent.push({ token, sessionId, messageId: (await restSend(token, sessionId, `m${i}`)).messageId });
    }
    for (const i of [0, 5, 9, 13, 22]) {
      const res = await t.call('PATCH', `/api/chat/${sent[i]!.sessionId}/messages/${sent[i]!.messageId}`, { token: sent[i]!.token, body: { content: `m${i} edited` } });
      expect(res.status).toBe(200);
    }
    for (const i of [5, 7, 29]) expect((await t.call('DELETE', `/api/chat/${sent[i]!.sessionId}/messages/${sent[i]!.messageId}`, { token: sent[i]!.token })).status).toBe(200);
    for (const [i, s] of sessions.entries()) await t.call('POST', `/api/chat/${s}/seen`, { token: peers[i]!.token, body: { upToSeq: 6 } });
    release();

    await expect.poll(() => a.c.state, { timeout: 10_000 }).toBe('connected');
    for (const s of sessions) {
      const history = (await t.call('GET', `/api/chat/${s}/history?limit=200`, { token: aliceToken })).body.messages as ChatMessage[];
      const state = (m: ChatMessage) => [m.messageId, m.seq, m.content, m.deleted, m.editedAt];
      await expect.poll(() => view.of(s).map(state), { timeout: 10_000 }).toEqual(history.map(state));
    }
    // The seq order and each message once still hold; the catch-up was sync, not history.
    for (const s of sessions) {
      const seqs = a.messages.filter((m) => m.sessionId === s).map((m) => m.seq);
      expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    }
    const after = urls.slice(cut);
    expect(after.filter((u) => u.includes('/api/chat/sync?since='))).not.toHaveLength(0);
    expect(after.filter((u) => u.includes('/history'))).toEqual([]);
    // Each peer read alice's messages up to seq 6: a receipt up to her last one there.
    const seen = a.receipts.filter((r) => r.status === 'seen');
    expect(seen.map((r) => r.sessionId).sort()).toEqual([...sessions].sort());
    for (const r of seen) {
      const history = (await t.call('GET', `/api/chat/${r.sessionId}/history?limit=200`, { token: aliceToken })).body.messages as ChatMessage[];
      expect(r.upToSeq).toBe(Math.max(...history.filter((m) => m.senderEmail === alice && m.seq <= 6).map((m) => m.seq)));
    }
    expect(a.errors).toEqual([]);
  });
});

describe('ChatClient presence', () => {
  it('hands the peer’s presence changes to the application and reads it over REST', async () => {
    const p = await pair();
    const alice = client(p.alice);
    const changes: Array<{ email: string; online: boolean; lastSeenAt: string | null }> = [];
    alice.c.on('presence', (presence) => changes.push(presence));
    await connected(alice.c);
    expect(await alice.c.presence(p.sessionId)).toEqual({ online: false, lastSeenAt: null });

    const bob = client(p.bob);
    await connected(bob.c);
    await expect.poll(() => changes, { timeout: 10_000 }).toEqual([{ email: p.bob, online: true, lastSeenAt: null }]);
    expect(await alice.c.presence(p.sessionId)).toMatchObject({ online: true });
  });
});
