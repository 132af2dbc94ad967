/**
 * Block, report, read state across devices, unread totals and token refresh, end to end over REST
 * and real STOMP clients, in-process on the embedded default.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatError } from '../../src/chat/chat-errors.js';
import type { BusEnvelope, EventBus } from '../../src/chat/ports.js';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import { devIssuerToken } from '../support/dev-token.js';
import { busWith } from '../support/bus-with.js';

let t: TestApp;
/** Every envelope the outbox relay hands to the bus, local deliveries and publishes alike. */
const relayed: Array<{ how: 'local' | 'published'; envelope: BusEnvelope }> = [];
const clients: TestStompClient[] = [];

function recording(bus: EventBus): EventBus {
  return busWith(bus, {
    publishBatch: async (envelopes, options) => {
      await bus.publishBatch(envelopes, options);
      for (const envelope of envelopes) relayed.push({ how: 'published', envelope });
    },
    deliverLocally: (envelope) => {
      relayed.push({ how: 'local', envelope });
      bus.deliverLocally(envelope);
    },
  });
}

beforeAll(async () => {
  t = await startTestApp({}, {}, { stomp: { heartbeatSendMs: 100, heartbeatReceiveMs: 100 }, faults: { relayBus: recording } });
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  await t?.close();
});

async function connect(token: string): Promise<TestStompClient> {
  const client = await connectStomp({ baseUrl: t.url, token, transport: 'ws' });
  clients.push(client);
  return client;
}

async function pair() {
  const alice = uniqueEmail('alice');
  const bob = uniqueEmail('bob');
  const [aliceToken, bobToken] = await Promise.all([t.token(alice, 'Alice'), t.token(bob, 'Bob')]);
  const sessionId = (await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'dating' } })).body.sessionId as string;
  return { alice, bob, aliceToken, bobToken, sessionId, topic: `/topic/session.${sessionId}` };
}

const send = (token: string, sessionId: string, content: string) =>
  t.call('POST', '/api/chat/message', { token, body: { sessionId, content, clientMessageId: newId() } });

describe('block', () => {
  it('refuses REST sends both ways with 403 PEER_BLOCKED while blocked, keeps history readable, and unblock restores sending', async () => {
    const p = await pair();
    expect((await send(p.bobToken, p.sessionId, 'hi alice')).status).toBe(201);

    for (let i = 0; i < 2; i++) {
      const blocked = await t.call('POST', `/api/chat/${p.sessionId}/block`, { token: p.aliceToken });
      expect(blocked).toMatchObject({ status: 200, body: { blocked: true } });
    }
    // However a client frames the empty request: no content type, an empty JSON body, or `{}`.
    expect(await t.call('POST', `/api/chat/${p.sessionId}/block`, { token: p.aliceToken, rawBody: '' })).toMatchObject({ status: 200, body: { blocked: true } });
    expect(await t.call('POST', `/api/chat/${p.sessionId}/block`, { token: p.aliceToken, body: {} })).toMatchObject({ status: 200, body: { blocked: true } });
    const refused = await send(p.bobToken, p.sessionId, 'let me in');
    expect(refused.status).toBe(403);
    expect(refused.headers.get('content-type')).toContain('application/problem+json');
    expect(refused.body).toMatchObject({ code: 'PEER_BLOCKED', status: 403 });
    expect((await send(p.aliceToken, p.sessionId, 'the blocker cannot send either')).body).toMatchObject({ code: 'PEER_BLOCKED' });

    for (const token of [p.aliceToken, p.bobToken]) {
      const history = await t.call('GET', `/api/chat/${p.sessionId}/history`, { token });
      expect(history.status).toBe(200);
      expect(history.body.messages.map((m: { content: string }) => m.content)).toEqual(['hi alice']);
    }
    const aliceSessions = (await t.call('GET', '/api/chat/sessions', { token: p.aliceToken })).body.sessions;
    const bobSessions = (await t.call('GET', '/api/chat/sessions', { token: p.bobToken })).body.sessions;
    expect(aliceSessions[0]).toMatchObject({ sessionId: p.sessionId, blockedByMe: true });
    expect(bobSessions[0]).toMatchObject({ sessionId: p.sessionId, blockedByMe: false });

    expect(await t.call('DELETE', `/api/chat/${p.sessionId}/block`, { token: p.aliceToken })).toMatchObject({ status: 200, body: { blocked: false } });
    expect(await t.call('DELETE', `/api/chat/${p.sessionId}/block`, { token: p.aliceToken, rawBody: '' })).toMatchObject({ status: 200, body: { blocked: false } });
    expect(await send(p.bobToken, p.sessionId, 'back again')).toMatchObject({ status: 201, body: { seq: 2 } });
    expect((await t.call('GET', '/api/chat/sessions', { token: p.aliceToken })).body.sessions[0]).toMatchObject({ blockedByMe: false });
  });

  it('refuses a blocked peer\u2019s STOMP send on /user/queue/error, delivers nothing to the blocker, and drops its typing', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    const bob = await connect(p.bobToken);
    await alice.subscribe(p.topic);
    await alice.subscribe('/user/queue/messages');
    await bob.subscribe('/user/queue/error');
    await bob.subscribe('/user/queue/ack');
    expect((await t.call('POST', `/api/chat/${p.sessionId}/block`, { token: p.aliceToken })).status).toBe(200);

    const clientMessageId = newId();
    await bob.sendWithReceipt('/app/chat.send', { sessionId: p.sessionId, content: 'blocked?', clientMessageId });
    await bob.sendWithReceipt('/app/chat.typing', { sessionId: p.sessionId, typing: true });
    await expect.poll(() => bob.on('/user/queue/error').length).toBe(1);
    const error = bob.on('/user/queue/error')[0]!;
    expect(error.body).toMatchObject({ code: 'PEER_BLOCKED', status: 403, clientMessageId });
    expect(error.headers['client-message-id']).toBe(clientMessageId);

    await t.call('DELETE', `/api/chat/${p.sessionId}/block`, { token: p.aliceToken });
    await bob.sendWithReceipt('/app/chat.typing', { sessionId: p.sessionId, typing: false });
    const afterId = newId();
    await bob.sendWithReceipt('/app/chat.send', { sessionId: p.sessionId, content: 'unblocked', clientMessageId: afterId });
    await expect.poll(() => alice.on('/user/queue/messages').length).toBe(1);
    // Events of one session arrive in order: the typing sent after the unblock is there, the one before is not.
    await expect.poll(() => alice.on(p.topic).filter((m) => m.headers['event-type'] === 'typing').map((m) => m.body.typing)).toEqual([false]);
    expect(alice.on('/user/queue/messages')[0]!.body).toMatchObject({ content: 'unblocked', seq: 1, clientMessageId: afterId });
    expect(alice.on(p.topic).filter((m) => m.headers['event-type'] === 'message').map((m) => m.body.content)).toEqual(['unblocked']);
  });

  it('is for participants only: others are refused block, unblock and report', async () => {
    const p = await pair();
    const carolToken = await t.token(uniqueEmail('carol'));
    for (const [method, path, body] of [
      ['POST', 'block', undefined],
      ['DELETE', 'block', undefined],
      ['POST', 'report', { reason: 'nosy' }],
    ] as const) {
      const res = await t.call(method, `/api/chat/${p.sessionId}/${path}`, { token: carolToken, ...(body ? { body } : {}) });
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(res.body.code).toBe('NOT_A_PARTICIPANT');
    }
    expect((await t.call('POST', `/api/chat/${newId()}/block`, { token: carolToken })).body.code).toBe('SESSION_NOT_FOUND');
    expect((await t.call('POST', `/api/chat/not-a-uuid/block`, { token: carolToken })).body).toMatchObject({ status: 400, code: 'VALIDATION_FAILED' });
    expect((await t.call('POST', `/api/chat/${p.sessionId}/block`)).status).toBe(401);
  });
});

describe('report', () => {
  it('answers 202 with a reportId and writes its event, with the message\u2019s content as it was, through the outbox to nobody', async () => {
    const p = await pair();
    const nasty = (await send(p.bobToken, p.sessionId, 'something nasty')).body;
    const res = await t.call('POST', `/api/chat/${p.sessionId}/report`, { token: p.aliceToken, body: { messageId: nasty.messageId, reason: 'harassment \u{1F620}' } });
    expect(res.status).toBe(202);
    expect(res.body).toEqual({ reportId: expect.stringMatching(/^[0-9a-f-]{36}$/) });

    const ofReport = () => relayed.filter((r) => r.envelope.event.type === 'report' && r.envelope.event.sessionId === p.sessionId);
    await expect.poll(() => ofReport().map((r) => r.how).sort()).toEqual(['local', 'published']);
    const { envelope } = ofReport()[0]!;
    expect(envelope.recipients).toEqual([]);
    expect(envelope.event).toMatchObject({
      type: 'report',
      sessionId: p.sessionId,
      destinations: [],
      report: { reportId: res.body.reportId, sessionId: p.sessionId, reporterEmail: p.alice, messageId: nasty.messageId, reason: 'harassment \u{1F620}', content: 'something nasty' },
    });

    const whole = await t.call('POST', `/api/chat/${p.sessionId}/report`, { token: p.bobToken, body: { reason: 'spam' } });
    expect(whole.status).toBe(202);
    await expect.poll(() => ofReport().filter((r) => r.envelope.event.type === 'report' && r.envelope.event.report.reportId === whole.body.reportId).length).toBe(2);
    // The relay marked the rows processed: the outbox drains (readiness would show the lag otherwise).
    await expect.poll(async () => (await t.call('GET', '/metrics')).body as string).toMatch(/chat_outbox_rows\{state="pending"\} 0\b/);
  });

  it('refuses a message of another session (404 MESSAGE_NOT_FOUND) and a reason that breaks the text rules', async () => {
    const p = await pair();
    const other = await pair();
    const foreign = (await send(other.aliceToken, other.sessionId, 'elsewhere')).body;
    const call = (body: unknown) => t.call('POST', `/api/chat/${p.sessionId}/report`, { token: p.aliceToken, body });
    expect((await call({ messageId: foreign.messageId, reason: 'x' })).body).toMatchObject({ status: 404, code: 'MESSAGE_NOT_FOUND' });
    expect((await call({ messageId: newId(), reason: 'x' })).body).toMatchObject({ status: 404, code: 'MESSAGE_NOT_FOUND' });
    expect((await call({ reason: ' \n ' })).body).toMatchObject({ status: 400, code: 'CONTENT_EMPTY', field: 'reason' });
    expect((await call({ reason: 'x'.repeat(1001) })).body).toMatchObject({ status: 413, code: 'CONTENT_TOO_LONG', field: 'reason' });
    expect((await call({ reason: 'a\u0007b' })).body).toMatchObject({ status: 400, code: 'INVALID_CONTENT', field: 'reason' });
    expect((await call({})).status).toBe(400);
    expect((await call({ reason: '\u{1F600}'.repeat(1000) })).status).toBe(202);
  });
});

describe('read state on every device', () => {
  it('sends the reader\u2019s own seen receipt to its other connections on /user/queue/receipts, and the author too', async () => {
    const p = await pair();
    const bob1 = await connect(p.bobToken);
    const bob2 = await connect(p.bobToken);
    const alice = await connect(p.aliceToken);
    for (const c of [bob1, bob2, alice]) await c.subscribe('/user/queue/receipts');
    for (let i = 0; i < 3; i++) await send(p.aliceToken, p.sessionId, `m${i}`);

    await bob1.sendWithReceipt('/app/chat.seen', { sessionId: p.sessionId, upToSeq: 2 });
    await expect.poll(() => bob2.on('/user/queue/receipts').length).toBe(1);
    expect(bob2.on('/user/queue/receipts')[0]!.body).toMatchObject({ sessionId: p.sessionId, readerEmail: p.bob, upToSeq: 2, status: 'seen' });
    await expect.poll(() => alice.on('/user/queue/receipts').length).toBe(1);

    // REST reads reach every device the same way.
    expect((await t.call('POST', `/api/chat/${p.sessionId}/seen`, { token: p.bobToken, body: { upToSeq: 3 } })).status).toBe(200);
    await expect.poll(() => bob1.on('/user/queue/receipts').map((m) => m.body.upToSeq)).toEqual([2, 3]);
    await expect.poll(() => bob2.on('/user/queue/receipts').map((m) => m.body.upToSeq)).toEqual([2, 3]);
  });

  it('counts unread messages from others over all sessions: GET /api/chat/unread-count', async () => {
    const me = uniqueEmail('me');
    const myToken = await t.token(me);
    const count = async () => (await t.call('GET', '/api/chat/unread-count', { token: myToken })).body;
    expect(await count()).toEqual({ total: 0, sessions: 0 });
    const peers = await Promise.all([uniqueEmail('x'), uniqueEmail('y')].map(async (email) => {
      const token = await t.token(email);
      const sessionId = (await t.call('POST', '/api/chat/init', { token, body: { toEmail: me, intent: 'dating' } })).body.sessionId as string;
      return { token, sessionId };
    }));
    for (let i = 0; i < 3; i++) await send(peers[0]!.token, peers[0]!.sessionId, `x${i}`);
    await send(peers[1]!.token, peers[1]!.sessionId, 'y');
    await send(myToken, peers[1]!.sessionId, 'mine never counts');
    expect(await count()).toEqual({ total: 4, sessions: 2 });
    await t.call('POST', `/api/chat/${peers[0]!.sessionId}/seen`, { token: myToken, body: { upToSeq: 3 } });
    expect(await count()).toEqual({ total: 1, sessions: 1 });
    expect((await t.call('GET', '/api/chat/unread-count', { token: peers[0]!.token })).body).toEqual({ total: 0, sessions: 0 });
    expect((await t.call('GET', '/api/chat/unread-count')).status).toBe(401);
  });
});

describe('token refresh without reconnecting', () => {
  it('extends a connection past its first token\u2019s expiry with SEND /app/auth.refresh', async () => {
    const p = await pair();
    const alice = await connect(await devIssuerToken(t, p.alice, 2));
    await alice.subscribe('/user/queue/error');
    await alice.subscribe('/user/queue/ack');
    await alice.sendWithReceipt('/app/auth.refresh', '', { authorization: `Bearer ${await devIssuerToken(t, p.alice, 4)}` });
    // As at CONNECT, the token may also come as passcode.
    await alice.sendWithReceipt('/app/auth.refresh', '', { passcode: await devIssuerToken(t, p.alice, 60) });
    await new Promise((resolve) => setTimeout(resolve, 4500));
    expect(alice.closed).toBe(false);
    expect(alice.errors).toEqual([]);
    const clientMessageId = newId();
    alice.send('/app/chat.send', { sessionId: p.sessionId, content: 'still here', clientMessageId });
    await expect.poll(() => alice.on('/user/queue/ack').map((m) => m.body.clientMessageId)).toEqual([clientMessageId]);
    expect(alice.on('/user/queue/error')).toEqual([]);
  });

  it('refuses an invalid or expired new token on /user/queue/error and keeps the old expiry', async () => {
    const p = await pair();
    const alice = await connect(await devIssuerToken(t, p.alice, 3));
    await alice.subscribe('/user/queue/error');
    await alice.sendWithReceipt('/app/auth.refresh', '', { authorization: 'Bearer not-a-jwt' });
    await alice.sendWithReceipt('/app/auth.refresh', '', { authorization: `Bearer ${await devIssuerToken(t, p.alice, -120)}` });
    // Expired, though within the verifier's allowance for clock skew.
    await alice.sendWithReceipt('/app/auth.refresh', '', { authorization: `Bearer ${await devIssuerToken(t, p.alice, -5)}` });
    await alice.sendWithReceipt('/app/auth.refresh', '');
    await expect.poll(() => alice.on('/user/queue/error').map((m) => m.body.code)).toEqual(['UNAUTHENTICATED', 'UNAUTHENTICATED', 'UNAUTHENTICATED', 'UNAUTHENTICATED']);
    expect(alice.closed).toBe(false);
    // The first token still governs: the connection ends when it expires.
    await expect.poll(() => alice.errors.map((e) => e.headers.code), { timeout: 6000 }).toEqual(['TOKEN_EXPIRED']);
    await expect.poll(() => alice.closed).toBe(true);
  });

  it('ends the connection with IDENTITY_CHANGED (terminal) when the new token names another user', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    await alice.subscribe('/user/queue/error');
    alice.send('/app/auth.refresh', '', { authorization: `Bearer ${p.bobToken}` });
    await expect.poll(() => alice.errors.length).toBe(1);
    expect(alice.errors[0]!.headers).toMatchObject({ code: 'IDENTITY_CHANGED', reconnect: 'false' });
    await expect.poll(() => alice.closed).toBe(true);
  });
});

describe('block, for sends that went through the send queue', () => {
  let q: TestApp;
  /** Sends whose first store attempt fails as in an outage, so they spill into the send queue. */
  const outageFor = new Set<string>();
  const queueClients: TestStompClient[] = [];

  beforeAll(async () => {
    q = await startTestApp({}, {}, {
      faults: {
        sendChat: (chat) => ({
          checkSend: (caller, input) => chat.checkSend(caller, input),
          sendMessage: (caller, input) => {
            if (typeof input.clientMessageId === 'string' && outageFor.delete(input.clientMessageId)) {
              return Promise.reject(new ChatError('STORE_UNAVAILABLE', 'injected outage'));
            }
            return chat.sendMessage(caller, input);
          },
          repeatAckEnvelope: (caller, message) => chat.repeatAckEnvelope(caller, message),
          sendFailedEnvelope: (caller, input, err) => chat.sendFailedEnvelope(caller, input, err),
        }),
      },
    });
  });
  afterAll(async () => {
    await Promise.all(queueClients.map((c) => c.close().catch(() => undefined)));
    await q?.close();
  });

  it('refuses a queued send of the blocked peer with PEER_BLOCKED on /user/queue/error when it is stored', async () => {
    const [alice, bob] = [uniqueEmail('alice'), uniqueEmail('bob')];
    const [aliceToken, bobToken] = await Promise.all([q.token(alice), q.token(bob)]);
    const sessionId = (await q.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'dating' } })).body.sessionId as string;
    const bobClient = await connectStomp({ baseUrl: q.url, token: bobToken, transport: 'ws' });
    queueClients.push(bobClient);
    await bobClient.subscribe('/user/queue/error');
    await bobClient.subscribe('/user/queue/ack');
    expect((await q.call('POST', `/api/chat/${sessionId}/block`, { token: aliceToken })).status).toBe(200);

    const clientMessageId = newId();
    outageFor.add(clientMessageId);
    await bobClient.sendWithReceipt('/app/chat.send', { sessionId, content: 'through the queue', clientMessageId });
    expect(outageFor.has(clientMessageId)).toBe(false); // the direct commit failed: it was queued
    await expect.poll(() => bobClient.on('/user/queue/error').map((m) => m.body), { timeout: 10_000 }).toEqual([
      expect.objectContaining({ code: 'PEER_BLOCKED', status: 403, clientMessageId }),
    ]);
    expect(bobClient.on('/user/queue/ack')).toEqual([]);
    expect((await q.call('GET', `/api/chat/${sessionId}/history`, { token: aliceToken })).body.messages).toEqual([]);
  });
});
