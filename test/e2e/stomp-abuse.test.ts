/**
 * What one abusive STOMP client can take from an instance: frames it floods in, frames of any kind
 * beyond its budget, connections on one token, sends split across REST and STOMP, and a socket it
 * holds open in silence. Each is bounded, and other users keep chatting.
 */
import { randomUUID } from 'node:crypto';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { encodeFrame } from '../../src/realtime/stomp/frame-encoder.js';
import { commandsOf, firstHeader, openRawStomp, type RawStomp } from '../support/raw-stomp.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';

v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const MiB = 1024 * 1024;

const sockets: RawStomp[] = [];
const clients: TestStompClient[] = [];
afterAll(async () => {
  for (const s of sockets) s.ws.terminate();
  await Promise.all(clients.map((c) => c.close()));
});

async function pair(t: TestApp): Promise<{ a: string; b: string; aToken: string; bToken: string; sessionId: string }> {
  const [a, b] = [uniqueEmail('a'), uniqueEmail('b')];
  const [aToken, bToken] = await Promise.all([t.token(a), t.token(b)]);
  const init = await t.call('POST', '/api/chat/init', { token: aToken, body: { toEmail: b, intent: 'dating' } });
  expect(init.status).toBe(200);
  return { a, b, aToken, bToken, sessionId: init.body.sessionId };
}

async function rawConnected(t: TestApp, token: string, heartBeat = '0,0'): Promise<RawStomp> {
  const raw = await openRawStomp(t.url);
  sockets.push(raw);
  raw.send('CONNECT', [['accept-version', '1.2'], ['host', 'chat'], ['heart-beat', heartBeat], ['Authorization', `Bearer ${token}`]]);
  await expect.poll(() => commandsOf(raw).length).toBeGreaterThan(0);
  return raw;
}

async function stomp(t: TestApp, token: string): Promise<TestStompClient> {
  const client = await connectStomp({ baseUrl: t.url, token });
  clients.push(client);
  return client;
}

/** SEND frames the server has read off its sockets (decoded), whether handled yet or not. */
async function sendFramesRead(t: TestApp): Promise<number> {
  const metrics = (await t.call('GET', '/metrics')).body as string;
  return Number(/chat_stomp_frames_total\{direction="in",command="SEND"\} (\d+)/.exec(metrics)?.[1] ?? 0);
}

async function storedCount(t: TestApp, sessionId: string, token: string): Promise<number> {
  return (await t.call('GET', `/api/chat/${sessionId}/history?limit=1`, { token })).body.messages[0]?.seq ?? 0;
}

const errorMessageOf = (raw: RawStomp): string | undefined => firstHeader(raw.frames.findLast((f) => f.command === 'ERROR'), 'message');

describe('an inbound frame flood', () => {
  let t: TestApp;
  beforeAll(async () => {
    // Neither budget may end the flood early: this is about what the connection itself holds.
    t = await startTestApp({ RATE_LIMIT_PER_MINUTE: '0', STOMP_FRAMES_PER_SECOND: '0' });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('is held back by pausing the socket: the heap stays a few MB up and another user’s sends keep arriving', async () => {
    const flood = await pair(t);
    const other = await pair(t);
    const flooder = await rawConnected(t, flood.aToken);
    expect(commandsOf(flooder)).toEqual(['CONNECTED']);
    const sender = await stomp(t, other.aToken);
    const recipient = await stomp(t, other.bToken);
    await recipient.subscribe('/user/queue/messages');

    const FLOOD_BYTES = 20 * MiB;
    const FLOOD_MS = 8_000;
    const content = 'x'.repeat(200);
    const readBefore = await sendFramesRead(t);
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    let heapPeak = heapBefore;
    const sampler = setInterval(() => {
      // After a full collection: what is retained, not garbage not yet collected.
      gc();
      heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
    }, 250);
    // Another user chats through the flood, one send every 200 ms.
    const otherIds: string[] = [];
    const sentAt = new Map<string, number>();
    const chatter = setInterval(() => {
      const id = newId();
      otherIds.push(id);
      sentAt.set(id, performance.now());
      sender.send('/app/chat.send', { sessionId: other.sessionId, content: `during the flood ${otherIds.length}`, clientMessageId: id });
    }, 200);

    const started = performance.now();
    let pushed = 0;
    let frames = 0;
    let stalledMs = 0;
    try {
      // As fast as the socket takes them: write whenever the client's own buffer is nearly empty.
      while (pushed < FLOOD_BYTES && performance.now() - started < FLOOD_MS && !flooder.closed) {
        if (flooder.ws.bufferedAmount < 256 * 1024) {
          // Mostly typing signals (small frames: cheap to send, the most costly per byte to hold), every tenth a message.
          const frame =
            frames % 10 === 0
              ? encodeFrame({
                  command: 'SEND',
                  headers: [['destination', '/app/chat.send'], ['content-type', 'application/json']],
                  body: Buffer.from(JSON.stringify({ sessionId: flood.sessionId, content, clientMessageId: randomUUID() })),
                })
              : encodeFrame({
                  command: 'SEND',
                  headers: [['destination', '/app/chat.typing'], ['content-type', 'application/json']],
                  body: Buffer.from(JSON.stringify({ sessionId: flood.sessionId, typing: frames % 2 === 0 })),
                });
          flooder.ws.send(frame);
          pushed += frame.length;
          frames++;
        } else {
          const waitStart = performance.now();
          await new Promise((resolve) => setImmediate(resolve));
          stalledMs += performance.now() - waitStart;
        }
      }
    } finally {
      clearInterval(chatter);
      clearInterval(sampler);
    }
    const floodEnd = performance.now();
    const floodMs = floodEnd - started;
    const read = (await sendFramesRead(t)) - readBefore;
    gc();
    const heapAfter = process.memoryUsage().heapUsed;
    const stored = await storedCount(t, flood.sessionId, flood.aToken);
    flooder.ws.terminate();
    const latencies = recipient
      .on('/user/queue/messages')
      .filter((m) => m.receivedAt <= floodEnd)
      .map((m) => m.receivedAt - sentAt.get(m.body.clientMessageId)!)
      .sort((x, y) => x - y);

    console.log(
      `flood: pushed ${(pushed / MiB).toFixed(1)} MiB (${frames} frames: typing, every tenth a send) in ${(floodMs / 1000).toFixed(1)} s, ` +
        `client stalled on a full socket for ${(stalledMs / 1000).toFixed(1)} s; the server read ${read} of them (the rest waits in TCP buffers) and stored ${stored} sends; ` +
        `heap retained: peak +${((heapPeak - heapBefore) / MiB).toFixed(1)} MiB, after +${((heapAfter - heapBefore) / MiB).toFixed(1)} MiB; ` +
        `flooder ${flooder.closed ? 'dropped' : 'still connected'}; another user's sends delivered during the flood: ${latencies.length} of ${otherIds.length}, ` +
        `send→deliver p50 ${latencies[Math.floor(latencies.length / 2)]?.toFixed(0)} ms, max ${latencies.at(-1)?.toFixed(0)} ms`,
    );
    // Before backpressure the server read all 20 MB at once and held every frame. Held back, it holds at most
    // the pause mark (32 frames / 256 KiB) plus one read from the socket.
    expect(heapPeak - heapBefore).toBeLessThan(8 * MiB);
    expect(read).toBeLessThan(frames);

    // The other user chatted on during the flood: what was sent in its first half arrived before its end.
    const firstHalf = otherIds.filter((id) => sentAt.get(id)! - started < floodMs / 2);
    expect(firstHalf.length).toBeGreaterThan(5);
    expect(latencies.length).toBeGreaterThanOrEqual(firstHalf.length);
    await vi.waitFor(() => expect(recipient.on('/user/queue/messages').map((m) => m.body.clientMessageId)).toEqual(otherIds), { timeout: 30_000, interval: 100 });
  }, 90_000);


  it('drops a client that packs more than 1024 frames into one WebSocket message with TOO_MANY_FRAMES', async () => {
    const { aToken, bToken, sessionId } = await pair(t);
    const raw = await rawConnected(t, aToken);
    // 2,000 tiny frames in one 24 KiB message: pausing the socket cannot stop what one read already holds.
    raw.sendRaw(Buffer.from('NACK\nid:x\n\n\0'.repeat(2000)));
    await expect.poll(() => raw.closed).toBe(true);
    expect(errorMessageOf(raw)).toMatch(/^TOO_MANY_FRAMES: more than 1024 frames/);
    const bob = await stomp(t, bToken);
    await bob.sendWithReceipt('/app/chat.typing', { sessionId, typing: true });
  });
});

describe('a SockJS frame flood', () => {
  let t: TestApp;
  beforeAll(async () => {
    // Its own instance: what another flooder left in TCP buffers would still be read, in order, and counted.
    t = await startTestApp({ RATE_LIMIT_PER_MINUTE: '0', STOMP_FRAMES_PER_SECOND: '0' });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('pauses a SockJS flooder over WebSocket too: it is read only a backlog ahead of what is handled', async () => {
    const { aToken, sessionId } = await pair(t);
    const flooder = await connectStomp({ baseUrl: t.url, token: aToken, transport: 'sockjs' });
    clients.push(flooder);
    expect((flooder.client.webSocket as unknown as { transport?: string }).transport).toBe('websocket');
    const readBefore = await sendFramesRead(t);
    const SENDS = 3000;
    for (let i = 0; i < SENDS; i++) {
      flooder.client.publish({ destination: '/app/chat.send', body: JSON.stringify({ sessionId, content: `flood ${i}`, clientMessageId: newId() }) });
    }
    await expect.poll(() => storedCount(t, sessionId, aToken), { timeout: 30_000 }).toBeGreaterThanOrEqual(200);
    const read = (await sendFramesRead(t)) - readBefore;
    const stored = await storedCount(t, sessionId, aToken);
    console.log(`SockJS WebSocket flood: ${SENDS} sends published; the server had read ${read} when it had stored ${stored}`);
    // Unpaused it would have read all of them at once; paused, at most the pause mark plus one socket read ahead.
    expect(read - stored).toBeLessThan(1024);
    expect(flooder.closed).toBe(false);
    // Not a DISCONNECT: it would wait behind the thousands of sends still in the socket.
    flooder.client.forceDisconnect();
  });

  it('drops a SockJS flooder over HTTP, which cannot be paused, with TOO_MANY_FRAMES once 1024 frames wait', async () => {
    const { aToken, bToken, sessionId } = await pair(t);
    const flooder = await connectStomp({ baseUrl: t.url, token: aToken, transport: 'sockjs-xhr-streaming' });
    clients.push(flooder);
    // sockjs-client batches what is published while a send is in flight: 1,499 sends in one xhr_send
    // (~320 KiB, under the xhr_send cap).
    for (let i = 0; i < 1500; i++) {
      flooder.client.publish({ destination: '/app/chat.send', body: JSON.stringify({ sessionId, content: `f${i}`, clientMessageId: newId() }) });
    }
    await expect.poll(() => flooder.closed, { timeout: 10_000 }).toBe(true);
    console.log(`SockJS xhr-streaming flood: 1500 sends published, ${await storedCount(t, sessionId, aToken)} stored, then ${flooder.errors.at(-1)?.headers.message}`);
    expect(flooder.errors.at(-1)?.headers.message).toMatch(/^TOO_MANY_FRAMES: more than 1024 frames or 1048576 bytes/);

    const bob = await stomp(t, bToken);
    await bob.sendWithReceipt('/app/chat.typing', { sessionId, typing: true });
  });
});

describe('the per-connection frame budget', () => {
  const PER_SECOND = 20;
  const BURST = 20;
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ STOMP_FRAMES_PER_SECOND: String(PER_SECOND), STOMP_FRAME_BURST: String(BURST) });
  });
  afterAll(async () => {
    await t?.close();
  });

  /** Every kind of frame counts, not only sends: typing, seen, ACK, NACK, SUBSCRIBE and UNSUBSCRIBE. */
  function mixedFrame(raw: RawStomp, i: number, sessionId: string): void {
    const receipt: [string, string] = ['receipt', `r${i}`];
    switch (i % 6) {
      case 0:
        return raw.send('SEND', [['destination', '/app/chat.typing'], receipt], JSON.stringify({ sessionId, typing: true }));
      case 1:
        return raw.send('SEND', [['destination', '/app/chat.seen'], receipt], JSON.stringify({ sessionId, upToSeq: 0 }));
      case 2:
        return raw.send('ACK', [['id', `nothing-${i}`], receipt]);
      case 3:
        return raw.send('NACK', [['id', `nothing-${i}`], receipt]);
      case 4:
        return raw.send('SUBSCRIBE', [['id', `s${i}`], ['destination', `/topic/session.${sessionId}`], receipt]);
      default:
        return raw.send('UNSUBSCRIBE', [['id', `s${i - 1}`], receipt]);
    }
  }

  it('refuses frames over the budget on /user/queue/error, in order, and drops a connection that keeps sending', async () => {
    const { aToken, bToken, sessionId } = await pair(t);
    const raw = await rawConnected(t, aToken);
    raw.send('SUBSCRIBE', [['id', 'err'], ['destination', '/user/queue/error'], ['receipt', 'sub-err']]);
    await expect.poll(() => raw.frames.some((f) => firstHeader(f, 'receipt-id') === 'sub-err')).toBe(true);

    // Far more than a burst, as fast as the socket takes them.
    const SENT = 200;
    for (let i = 0; i < SENT; i++) mixedFrame(raw, i, sessionId);
    await expect.poll(() => raw.closed, { timeout: 10_000 }).toBe(true);

    const refusals = raw.frames.filter((f) => f.command === 'MESSAGE' && firstHeader(f, 'error-code') === 'RATE_LIMITED');
    const receipts = raw.frames.filter((f) => f.command === 'RECEIPT').map((f) => firstHeader(f, 'receipt-id'));
    console.log(`frame budget ${PER_SECOND}/s, burst ${BURST}: ${SENT} frames sent, ${receipts.length - 1} answered, ${refusals.length} refused, then ${errorMessageOf(raw)}`);
    expect(refusals.length).toBeGreaterThan(0);
    expect(JSON.parse(refusals[0]!.body.toString())).toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: expect.any(Number) });
    expect(errorMessageOf(raw)).toMatch(/^TOO_MANY_FRAMES: /);
    // Refused or not, frames are answered strictly in the order they were sent.
    const order = receipts.slice(1).map((r) => Number(r!.slice(1)));
    expect(order).toEqual([...order].sort((x, y) => x - y));
    // Roughly a burst accepted and a burst refused; a few tokens refill while the frames go out.
    expect(refusals.length).toBeLessThanOrEqual(BURST);
    expect(receipts.length).toBeLessThan(3 * BURST);

    // Bob, on the same instance, is not affected.
    const bob = await stomp(t, bToken);
    await bob.sendWithReceipt('/app/chat.typing', { sessionId, typing: true });
    expect(bob.closed).toBe(false);
  });

  it('answers the first frame over the budget with an ERROR frame when nobody listens on /user/queue/error', async () => {
    const { aToken, sessionId } = await pair(t);
    const raw = await rawConnected(t, aToken);
    for (let i = 0; i < BURST + 5; i++) raw.send('SEND', [['destination', '/app/chat.typing']], JSON.stringify({ sessionId, typing: i % 2 === 0 }));
    await expect.poll(() => raw.closed, { timeout: 10_000 }).toBe(true);
    expect(errorMessageOf(raw)).toMatch(/^RATE_LIMITED: at most 20 frames per second/);
  });

  it('lets a client that stays within the budget chat on: a burst, then half the sustained rate', async () => {
    const { aToken, sessionId } = await pair(t);
    const alice = await stomp(t, aToken);
    await alice.subscribe('/user/queue/error'); // one frame of the budget
    const typing = (i: number) => alice.sendWithReceipt('/app/chat.typing', { sessionId, typing: i % 2 === 0 });
    const answered: Array<Promise<void>> = [];
    for (let i = 0; i < BURST - 2; i++) answered.push(typing(i));
    await Promise.all(answered);
    // Paced by a timer, as a typing indicator is: this is the client's rate, not a wait for the server.
    await new Promise<void>((resolve) => {
      let sent = 0;
      const pacer = setInterval(() => {
        answered.push(typing(sent));
        if (++sent === PER_SECOND) {
          clearInterval(pacer);
          resolve();
        }
      }, 2000 / PER_SECOND);
    });
    await Promise.all(answered);
    expect(alice.on('/user/queue/error')).toEqual([]);
    expect(alice.closed).toBe(false);
  });
});

describe('connections per user', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  it('accepts 20 connections on one token, refuses the 21st with TOO_MANY_CONNECTIONS, and takes a new one once one closes', async () => {
    const { aToken, bToken } = await pair(t);
    const open: RawStomp[] = [];
    for (let i = 0; i < 20; i++) {
      const raw = await rawConnected(t, aToken);
      expect(commandsOf(raw)).toEqual(['CONNECTED']);
      open.push(raw);
    }
    const refused = await rawConnected(t, aToken);
    expect(commandsOf(refused)).toEqual(['ERROR']);
    expect(errorMessageOf(refused)).toMatch(/^TOO_MANY_CONNECTIONS: at most 20 connections per user/);
    await expect.poll(() => refused.closed).toBe(true);

    // Another user is not counted against alice.
    expect(commandsOf(await rawConnected(t, bToken))).toEqual(['CONNECTED']);

    open[0]!.send('DISCONNECT', [['receipt', 'bye']]);
    await expect.poll(() => open[0]!.closed).toBe(true);
    expect(commandsOf(await rawConnected(t, aToken))).toEqual(['CONNECTED']);
  });

  it('counts CONNECTs that arrive together: 30 at once get exactly 20 CONNECTED', async () => {
    const { aToken } = await pair(t);
    const raws = await Promise.all(Array.from({ length: 30 }, () => rawConnected(t, aToken)));
    const outcome = raws.map((r) => commandsOf(r)[0]);
    expect(outcome.filter((c) => c === 'CONNECTED')).toHaveLength(20);
    expect(outcome.filter((c) => c === 'ERROR')).toHaveLength(10);
  });
});

describe('one send budget for REST and STOMP', () => {
  const LIMIT = 6;
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ RATE_LIMIT_PER_MINUTE: String(LIMIT) });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('counts REST and STOMP sends of one user together, and keeps the request budget for the other routes', async () => {
    const { aToken, bToken, sessionId } = await pair(t); // 1 request
    for (let i = 0; i < 3; i++) {
      const res = await t.call('POST', i % 2 ? '/api/chat/send' : '/api/chat/message', { token: aToken, body: { sessionId, content: `rest ${i}`, clientMessageId: newId() } });
      expect(res.status).toBe(201); // requests 2-4, sends 1-3
    }
    const alice = await stomp(t, aToken);
    await alice.subscribe('/user/queue/ack');
    await alice.subscribe('/user/queue/error');
    const ids = Array.from({ length: 4 }, () => newId());
    for (const [i, id] of ids.entries()) await alice.sendWithReceipt('/app/chat.send', { sessionId, content: `stomp ${i}`, clientMessageId: id });
    await expect.poll(() => alice.on('/user/queue/ack').length).toBe(3); // sends 4-6
    await expect.poll(() => alice.on('/user/queue/error').length).toBe(1);
    expect(alice.on('/user/queue/error')[0]!.body).toMatchObject({ code: 'RATE_LIMITED', clientMessageId: ids[3] });

    const rest = await t.call('POST', '/api/chat/message', { token: aToken, body: { sessionId, content: 'one too many', clientMessageId: newId() } });
    expect(rest.status).toBe(429); // request 5 is within the request budget: the send budget refused it
    expect(rest.body).toMatchObject({ code: 'RATE_LIMITED' });
    expect(rest.body.detail).toMatch(/sends per minute/);
    expect((await t.call('GET', `/api/chat/${sessionId}/history`, { token: aToken })).status).toBe(200); // request 6

    const history = await t.call('GET', `/api/chat/${sessionId}/history`, { token: bToken });
    expect(history.body.messages).toHaveLength(LIMIT);
  });
});

describe('idle connections', () => {
  const IDLE_MS = 300;
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ STOMP_IDLE_TIMEOUT_MS: String(IDLE_MS) });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('closes a heart-beat:0,0 connection that sends nothing with IDLE_TIMEOUT, and keeps one that sends anything', async () => {
    const { aToken, bToken } = await pair(t);
    const opened = performance.now();
    const silent = await rawConnected(t, aToken, '0,0');
    const chatty = await rawConnected(t, bToken, '0,0');
    expect(commandsOf(silent)).toEqual(['CONNECTED']);
    // A bare EOL is a heart-beat the client volunteers: proof enough that it is there.
    const beating = setInterval(() => chatty.sendRaw('\n'), IDLE_MS / 3);
    try {
      await expect.poll(() => silent.closed, { timeout: 10_000 }).toBe(true);
      console.log(`idle timeout ${IDLE_MS} ms: silent connection closed ${Math.round(performance.now() - opened)} ms after it sent CONNECT`);
      expect(errorMessageOf(silent)).toMatch(/^IDLE_TIMEOUT: /);
      // Wait past three timeouts for the chatty one, without sleeping: a third connection's close is the clock.
      const third = await rawConnected(t, aToken, '0,0');
      await expect.poll(() => third.closed, { timeout: 10_000 }).toBe(true);
      const fourth = await rawConnected(t, aToken, '0,0');
      await expect.poll(() => fourth.closed, { timeout: 10_000 }).toBe(true);
      expect(chatty.closed).toBe(false);
    } finally {
      clearInterval(beating);
    }
  });
});
