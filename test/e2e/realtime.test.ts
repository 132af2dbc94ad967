/**
 * Real time end to end, in-process, with the real clients: @stomp/stompjs over `ws` and over
 * sockjs-client. Delivery goes the whole way: STOMP SEND → store + outbox → relay → bus → sockets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';
import { connectStomp, type StompTransportKind, type TestStompClient } from '../support/stomp-client.js';

let t: TestApp;
const clients: TestStompClient[] = [];
beforeAll(async () => {
  t = await startTestApp({}, {}, { stomp: { heartbeatSendMs: 100, heartbeatReceiveMs: 100 } });
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  await t?.close();
});

async function connect(token: string | undefined, transport: StompTransportKind = 'ws', extra: { heartbeatMs?: number; asPasscode?: boolean } = {}): Promise<TestStompClient> {
  const client = await connectStomp({ baseUrl: t.url, token, transport, ...extra });
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

describe.each<StompTransportKind>(['ws', 'sockjs'])('chat over STOMP (%s for bob\u2019s second connection)', (transport) => {
  it('delivers alice\u2019s send to bob on the session topic and on every connection\u2019s /user/queue/messages, and acks alice', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    const bob1 = await connect(p.bobToken, 'ws');
    const bob2 = await connect(p.bobToken, transport);
    await alice.subscribe('/user/queue/ack');
    await bob1.subscribe(p.topic);
    await bob1.subscribe('/user/queue/messages');
    await bob2.subscribe('/user/queue/messages');

    const clientMessageId = newId();
    alice.send('/app/chat.send', { sessionId: p.sessionId, content: 'hello bob', clientMessageId });

    await expect.poll(() => bob1.on(p.topic).length, { timeout: 5000 }).toBe(1);
    await expect.poll(() => bob1.on('/user/queue/messages').length).toBe(1);
    await expect.poll(() => bob2.on('/user/queue/messages').length).toBe(1);
    await expect.poll(() => alice.on('/user/queue/ack').length).toBe(1);
    const delivered = bob2.on('/user/queue/messages')[0]!;
    expect(delivered.body).toMatchObject({ sessionId: p.sessionId, seq: 1, content: 'hello bob', clientMessageId, senderEmail: p.alice, senderDisplayName: 'Alice' });
    expect(delivered.headers).toMatchObject({ 'event-type': 'message', seq: '1', 'content-type': 'application/json' });
    expect(alice.on('/user/queue/ack')[0]!.body).toMatchObject({ clientMessageId, seq: 1 });
  });
});

describe('sending over STOMP', () => {
  it('stores a repeated clientMessageId once and acks every repeat', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    await alice.subscribe('/user/queue/ack');
    const clientMessageId = newId();
    for (let i = 0; i < 3; i++) await alice.sendWithReceipt('/app/chat.send', { sessionId: p.sessionId, content: 'once', clientMessageId });
    await expect.poll(() => alice.on('/user/queue/ack').length).toBe(3);
    expect(new Set(alice.on('/user/queue/ack').map((m) => m.body.messageId)).size).toBe(1);
    const history = await t.call('GET', `/api/chat/${p.sessionId}/history`, { token: p.aliceToken });
    expect(history.body.messages).toHaveLength(1);
  });

  it('answers invalid sends on /user/queue/error keyed by clientMessageId, and the connection stays usable', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    await alice.subscribe('/user/queue/error');
    await alice.subscribe('/user/queue/ack');
    const emptyId = newId();
    await alice.sendWithReceipt('/app/chat.send', { sessionId: p.sessionId, content: '', clientMessageId: emptyId });
    await alice.sendWithReceipt('/app/chat.send', { sessionId: 'nope', content: 'x', clientMessageId: newId() });
    await alice.sendWithReceipt('/app/chat.send', 'not json');
    await alice.sendWithReceipt('/app/chat.unknown', {});
    await expect.poll(() => alice.on('/user/queue/error').length).toBe(4);
    const [empty, badId, notJson, unknown] = alice.on('/user/queue/error').map((m) => m.body);
    expect(empty).toMatchObject({ code: 'CONTENT_EMPTY', clientMessageId: emptyId, status: 400 });
    expect(alice.on('/user/queue/error')[0]!.headers['client-message-id']).toBe(emptyId);
    expect(badId).toMatchObject({ code: 'VALIDATION_FAILED', field: 'sessionId' });
    expect(notJson).toMatchObject({ code: 'MALFORMED_JSON' });
    expect(unknown).toMatchObject({ code: 'UNKNOWN_DESTINATION' });

    const clientMessageId = newId();
    alice.send('/app/chat.send', { sessionId: p.sessionId, content: 'still works', clientMessageId });
    await expect.poll(() => alice.on('/user/queue/ack').map((m) => m.body.clientMessageId)).toEqual([clientMessageId]);
    expect(alice.closed).toBe(false);
  });

  it('ignores client-set senderId, seq and sentAt', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    await alice.subscribe('/user/queue/ack');
    alice.send('/app/chat.send', { sessionId: p.sessionId, content: 'forged?', clientMessageId: newId(), senderId: newId(), seq: 999, sentAt: '2000-01-01T00:00:00Z', senderEmail: p.alice });
    await expect.poll(() => alice.on('/user/queue/ack').length).toBe(1);
    const ack = alice.on('/user/queue/ack')[0]!.body;
    expect(ack.seq).toBe(1);
    expect(ack.sentAt).not.toBe('2000-01-01T00:00:00.000Z');
    const me = (await t.call('GET', '/api/chat/sessions', { token: p.aliceToken })).body.sessions[0].me;
    expect(ack.senderId).toBe(me.profileId);
  });

  it('refuses a body identity that differs from the token', async () => {
    const p = await pair();
    const bob = await connect(p.bobToken);
    await bob.subscribe('/user/queue/error');
    await bob.sendWithReceipt('/app/chat.send', { sessionId: p.sessionId, content: 'spoof', clientMessageId: newId(), senderEmail: p.alice });
    await expect.poll(() => bob.on('/user/queue/error').map((m) => m.body.code)).toEqual(['IDENTITY_MISMATCH']);
  });

  it('refuses SEND outside /app/** with an ERROR frame', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    alice.send(p.topic, { content: 'direct to topic' });
    await expect.poll(() => alice.errors.length).toBe(1);
    expect(alice.errors[0]!.headers.message).toContain('DESTINATION_FORBIDDEN');
    await expect.poll(() => alice.closed).toBe(true);
  });
});

describe('who receives what', () => {
  it('refuses carol\u2019s subscription to alice and bob\u2019s session, and carol receives nothing', async () => {
    const p = await pair();
    const carolToken = await t.token(uniqueEmail('carol'));
    const carol = await connect(carolToken);
    await carol.subscribe('/user/queue/error');
    await carol.subscribe('/user/queue/messages');
    carol.client.subscribe(p.topic, (m) => carol.messages.push({ destination: p.topic, headers: m.headers, body: m.body, raw: m, receivedAt: performance.now() }));
    await expect.poll(() => carol.on('/user/queue/error').map((m) => m.body.code)).toEqual(['NOT_A_PARTICIPANT']);

    const alice = await connect(p.aliceToken);
    await alice.subscribe('/user/queue/ack');
    await alice.sendWithReceipt('/app/chat.send', { sessionId: p.sessionId, content: 'private', clientMessageId: newId() });
    await expect.poll(() => alice.on('/user/queue/ack').length).toBe(1);
    // The ack went through the same relay pass, so anything for carol would have arrived by now.
    expect(carol.messages.filter((m) => m.destination !== '/user/queue/error')).toEqual([]);
  });

  it('closes a connection that subscribes to a foreign session without an error subscription', async () => {
    const p = await pair();
    const carol = await connect(await t.token(uniqueEmail('carol')));
    carol.client.subscribe(p.topic, () => undefined);
    await expect.poll(() => carol.errors.map((e) => e.headers.message)).toEqual([expect.stringContaining('NOT_A_PARTICIPANT')]);
  });

  it('refuses a CONNECT without a token, with a bad token, and accepts the token as passcode', async () => {
    await expect(connectStomp({ baseUrl: t.url })).rejects.toThrow(/UNAUTHENTICATED/);
    await expect(connectStomp({ baseUrl: t.url, token: 'garbage' })).rejects.toThrow(/UNAUTHENTICATED/);
    const p = await pair();
    const viaPasscode = await connect(p.aliceToken, 'ws', { asPasscode: true });
    expect(viaPasscode.closed).toBe(false);
  });
});

describe('receipts, typing and acknowledgements', () => {
  it('marks a message delivered when bob ACKs it and tells alice', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    await alice.subscribe('/user/queue/receipts');
    const bob = await connect(p.bobToken);
    bob.client.subscribe('/user/queue/messages', (m) => m.ack(), { ack: 'client-individual' });
    await bob.sendWithReceipt('/app/chat.typing', { sessionId: p.sessionId, typing: false }); // orders after SUBSCRIBE
    await alice.sendWithReceipt('/app/chat.send', { sessionId: p.sessionId, content: 'ack me', clientMessageId: newId() });
    await expect.poll(() => alice.on('/user/queue/receipts').map((m) => m.body.status)).toEqual(['delivered']);
    const history = await t.call('GET', `/api/chat/${p.sessionId}/history`, { token: p.aliceToken });
    expect(history.body.messages[0]).toMatchObject({ delivered: true, seen: false });
  });

  it('fans typing out to the session topic, and seen over STOMP emits a receipt', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    const bob = await connect(p.bobToken);
    await alice.subscribe(p.topic);
    await alice.subscribe('/user/queue/receipts');
    await bob.sendWithReceipt('/app/chat.typing', { sessionId: p.sessionId, typing: true });
    await expect.poll(() => alice.on(p.topic).filter((m) => m.headers['event-type'] === 'typing').map((m) => m.body)).toEqual([{ sessionId: p.sessionId, email: p.bob, typing: true }]);

    await alice.sendWithReceipt('/app/chat.send', { sessionId: p.sessionId, content: 'see me', clientMessageId: newId() });
    await bob.sendWithReceipt('/app/chat.seen', { sessionId: p.sessionId, upToSeq: 1 });
    await expect.poll(() => alice.on('/user/queue/receipts').map((m) => m.body)).toEqual([expect.objectContaining({ status: 'seen', upToSeq: 1, readerEmail: p.bob })]);
  });
});

describe('heart-beats', () => {
  it('keep an idle connection open', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken, 'ws', { heartbeatMs: 100 });
    await new Promise((resolve) => setTimeout(resolve, 1000)); // idle on purpose: ten heart-beat periods
    expect(alice.closed).toBe(false);
    await alice.subscribe('/user/queue/ack');
  });
});

describe('delivery latency (reported, not asserted)', () => {
  it('prints send→deliver p50/p99 over 300 sends', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    const bob = await connect(p.bobToken);
    await bob.subscribe('/user/queue/messages');
    const sentAt = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      const clientMessageId = newId();
      sentAt.set(clientMessageId, performance.now());
      alice.send('/app/chat.send', { sessionId: p.sessionId, content: `m${i}`, clientMessageId });
      if (i % 10 === 9) await expect.poll(() => bob.on('/user/queue/messages').length, { timeout: 10_000 }).toBe(i + 1);
    }
    const received = bob.on('/user/queue/messages');
    expect(received.map((m) => m.body.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    const latencies = received.map((m) => m.receivedAt - sentAt.get(m.body.clientMessageId)!).sort((a, b) => a - b);
    const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!.toFixed(1);
    console.log(`STOMP send→deliver latency over ${latencies.length} sends (in-process, PGlite): p50 ${at(0.5)} ms, p99 ${at(0.99)} ms`);
  });
});
