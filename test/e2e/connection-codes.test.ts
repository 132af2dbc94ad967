/**
 * Every code of the STOMP connection catalogue (src/realtime/stomp/connection-codes.ts), provoked
 * from outside and read by a real client: the ERROR frame that ends the connection carries the
 * code and the catalogue's `reconnect` in headers, the old `message` header, and the problem as
 * its body; and the SDK's copy of the catalogue draws the same conclusion from the code alone.
 * @stomp/stompjs over `ws` wherever a real client can send what it takes, raw frames where only a
 * broken client would. Codes nobody outside can provoke are listed at the end, with why.
 */
import type { Socket } from 'node:net';
import { Client, type IFrame, Versions } from '@stomp/stompjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { CONNECTION_CODES, type ConnectionCode } from '../../src/realtime/stomp/connection-codes.js';
import { isTerminal } from '../../client/connection-codes.js';
import { commandsOf, openRawStomp, type RawStomp } from '../support/raw-stomp.js';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';

const GOOD_ORIGIN = 'https://chat.example.com';

/** What each code was provoked by; the last test checks nothing is missing. */
const provoked = new Map<string, string>();
const clients: Client[] = [];
const sockets: RawStomp[] = [];
afterAll(async () => {
  for (const s of sockets) s.ws.terminate();
  await Promise.all(clients.map((c) => c.deactivate()));
});

interface Ending {
  headers: Record<string, string | undefined>;
  body: string;
}

/** Asserts the frame that ended a connection says `code` the way the catalogue does. */
function expectEnded(ending: Ending, code: ConnectionCode, how: string): void {
  const { headers } = ending;
  expect(headers.code).toBe(code);
  expect(headers.reconnect).toBe(String(CONNECTION_CODES[code].reconnect));
  // The SDK, from the code alone, concludes what the frame says.
  expect(isTerminal(headers.code!)).toBe(headers.reconnect === 'false');
  // Before CONNECTED no STOMP version is agreed, so a client may leave `:` escaped as `\c`.
  expect(headers.message?.replaceAll('\\c', ':')).toMatch(new RegExp(`^${code}: \\S`));
  expect(JSON.parse(ending.body)).toMatchObject({ code, type: `urn:chat-service:problem:${code.toLowerCase().replaceAll('_', '-')}`, detail: expect.any(String) });
  provoked.set(code, how);
}

interface StompjsRun {
  client: Client;
  connected: Promise<void>;
  /** The ERROR frame that ended the connection. */
  ended: Promise<Ending>;
}

/** A @stomp/stompjs client over `ws`, as mobile and server clients connect. */
function stompjs(t: TestApp, options: { token?: string; versions?: string[] } = {}): StompjsRun {
  const versions = new Versions(options.versions ?? ['1.2', '1.1']);
  let onConnected!: () => void;
  let onEnded!: (ending: Ending) => void;
  const connected = new Promise<void>((resolve) => (onConnected = resolve));
  const ended = new Promise<Ending>((resolve) => (onEnded = resolve));
  const client = new Client({
    webSocketFactory: () => new WebSocket(`${t.url.replace(/^http/, 'ws')}/ws`, versions.protocolVersions()),
    stompVersions: versions,
    connectHeaders: options.token ? { Authorization: `Bearer ${options.token}` } : {},
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    debug: () => undefined,
    onConnect: () => onConnected(),
    onStompError: (frame: IFrame) => onEnded({ headers: frame.headers, body: frame.body }),
  });
  clients.push(client);
  client.activate();
  return { client, connected, ended };
}

async function raw(t: TestApp, path?: string): Promise<RawStomp> {
  const socket = await openRawStomp(t.url, path ? { path } : {});
  sockets.push(socket);
  return socket;
}

async function rawConnected(t: TestApp, token: string, heartBeat = '0,0'): Promise<RawStomp> {
  const socket = await raw(t);
  socket.send('CONNECT', [['accept-version', '1.2'], ['host', 'chat'], ['heart-beat', heartBeat], ['Authorization', `Bearer ${token}`]]);
  await expect.poll(() => commandsOf(socket)).toEqual(['CONNECTED']);
  return socket;
}

/** The ERROR frame that ended a raw connection, once the server has closed it. */
async function rawEnding(socket: RawStomp): Promise<Ending> {
  await expect.poll(() => commandsOf(socket).at(-1), { timeout: 10_000 }).toBe('ERROR');
  await expect.poll(() => socket.closed).toBe(true);
  const frame = socket.frames.at(-1)!;
  const headers: Record<string, string> = {};
  for (const [name, value] of frame.headers) headers[name] ??= value;
  return { headers, body: frame.body.toString('utf8') };
}

/** A refused WebSocket handshake: its status and problem+json body. */
function refusedHandshake(t: TestApp, headers: Record<string, string>): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${t.url.replace(/^http/, 'ws')}/ws`, ['v12.stomp'], { headers });
    ws.once('open', () => reject(new Error('the handshake was accepted')));
    ws.once('error', () => undefined);
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
  });
}

/** A WebSocket that has not sent CONNECT, so it holds a pending slot; from `address` as the trusted proxy says. */
function pendingFrom(t: TestApp, address: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${t.url.replace(/^http/, 'ws')}/ws`, ['v12.stomp'], { headers: { 'x-forwarded-for': address } });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

describe('at CONNECT and on the frames after it', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ ALLOWED_ORIGINS: GOOD_ORIGIN, MAX_CONNECTIONS_PER_USER: '1' }, {}, { stomp: { connectTimeoutMs: 1000, heartbeatReceiveMs: 100 } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('UNAUTHENTICATED (terminal): no token, a forged one, one expired before CONNECT', async () => {
    const expired = (await t.app.devIssuer!.issue(uniqueEmail('late'), undefined, -120)).token;
    for (const token of [undefined, 'not-a-jwt', expired]) {
      expectEnded(await stompjs(t, { token }).ended, 'UNAUTHENTICATED', 'stompjs CONNECT without a token, with a forged one, with an expired one');
    }
  });

  it('TOKEN_EXPIRED (reconnect): the token runs out while connected', async () => {
    const { token } = await t.app.devIssuer!.issue(uniqueEmail('brief'), undefined, 2);
    const run = stompjs(t, { token });
    await run.connected;
    expectEnded(await run.ended, 'TOKEN_EXPIRED', 'stompjs connected with a token that lives 2 s');
  });

  it('IDENTITY_CHANGED (terminal): SEND /app/auth.refresh with another user\u2019s token', async () => {
    const run = stompjs(t, { token: await t.token(uniqueEmail('first')) });
    await run.connected;
    run.client.publish({ destination: '/app/auth.refresh', headers: { authorization: `Bearer ${await t.token(uniqueEmail('second'))}` } });
    expectEnded(await run.ended, 'IDENTITY_CHANGED', 'stompjs refreshing its connection with a token for another user');
  });

  it('UNSUPPORTED_VERSION (terminal): a client that speaks only STOMP 1.0', async () => {
    expectEnded(await stompjs(t, { token: await t.token(uniqueEmail('old')), versions: ['1.0'] }).ended, 'UNSUPPORTED_VERSION', 'stompjs with stompVersions 1.0');
  });

  it('TOO_MANY_CONNECTIONS (reconnect): a second connection over MAX_CONNECTIONS_PER_USER=1', async () => {
    const token = await t.token(uniqueEmail('twice'));
    await stompjs(t, { token }).connected;
    expectEnded(await stompjs(t, { token }).ended, 'TOO_MANY_CONNECTIONS', 'a second stompjs client on the same token');
  });

  it('CONNECT_TIMEOUT (reconnect), NOT_CONNECTED and ALREADY_CONNECTED (terminal)', async () => {
    expectEnded(await rawEnding(await raw(t)), 'CONNECT_TIMEOUT', 'a WebSocket that sends nothing');
    const early = await raw(t);
    early.send('SUBSCRIBE', [['id', '1'], ['destination', '/user/queue/ack']]);
    expectEnded(await rawEnding(early), 'NOT_CONNECTED', 'SUBSCRIBE before CONNECT');
    const twice = await rawConnected(t, await t.token(uniqueEmail('again')));
    twice.send('CONNECT', [['accept-version', '1.2'], ['host', 'chat']]);
    expectEnded(await rawEnding(twice), 'ALREADY_CONNECTED', 'a second CONNECT');
  });

  it('UNSUPPORTED (terminal): a transaction', async () => {
    const run = stompjs(t, { token: await t.token(uniqueEmail('tx')) });
    await run.connected;
    run.client.begin();
    expectEnded(await run.ended, 'UNSUPPORTED', 'stompjs client.begin()');
  });

  it('FRAME_TOO_LARGE, TOO_MANY_HEADERS, HEADER_TOO_LONG (terminal): what stompjs will publish', async () => {
    const cases: Array<[ConnectionCode, (c: Client) => void]> = [
      ['FRAME_TOO_LARGE', (c) => c.publish({ destination: '/app/chat.send', body: 'x'.repeat(64 * 1024) })],
      ['TOO_MANY_HEADERS', (c) => c.publish({ destination: '/app/chat.typing', headers: Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`x-${i}`, '1'])) })],
      ['HEADER_TOO_LONG', (c) => c.publish({ destination: '/app/chat.typing', headers: { 'x-long': 'x'.repeat(9 * 1024) } })],
    ];
    for (const [code, publish] of cases) {
      const run = stompjs(t, { token: await t.token(uniqueEmail('big')) });
      await run.connected;
      publish(run.client);
      expectEnded(await run.ended, code, `stompjs publish: ${code}`);
    }
  });

  it('the decoder’s other codes (terminal): frames only a broken client sends', async () => {
    const cases: Array<[ConnectionCode, string | Buffer]> = [
      ['COMMAND_TOO_LONG', `${'SEND'.repeat(20)}\n\n\0`],
      ['UNKNOWN_COMMAND', 'HELLO\n\n\0'],
      ['BAD_ESCAPE', 'SUBSCRIBE\nid:1\ndestination:/user/queue/\\tack\n\n\0'],
      ['BAD_CONTENT_LENGTH', 'SEND\ndestination:/app/chat.typing\ncontent-length:-1\n\n\0'],
      ['INVALID_UTF8', Buffer.concat([Buffer.from('SEND\ndestination:/app/chat.typing\nx-name:'), Buffer.from([0xc3, 0x28]), Buffer.from('\n\n\0')])],
      ['UNEXPECTED_BODY', 'SUBSCRIBE\nid:1\ndestination:/user/queue/ack\n\nbody\0'],
      ['MALFORMED_FRAME', 'SEND\ndestination\n\n\0'],
    ];
    for (const [code, bytes] of cases) {
      const socket = await rawConnected(t, await t.token(uniqueEmail('bytes')));
      socket.sendRaw(bytes);
      expectEnded(await rawEnding(socket), code, 'raw bytes after CONNECT');
    }
  });

  it('HEARTBEAT_TIMEOUT (reconnect): a client that promised heart-beats and went quiet', async () => {
    const socket = await rawConnected(t, await t.token(uniqueEmail('quiet')), '100,0');
    expectEnded(await rawEnding(socket), 'HEARTBEAT_TIMEOUT', 'raw CONNECT with heart-beat:100,0, then silence');
  });

  it('TOO_MANY_FRAMES (reconnect): 2,000 frames packed in one WebSocket message', async () => {
    const socket = await rawConnected(t, await t.token(uniqueEmail('packed')));
    socket.sendRaw(Buffer.from('NACK\nid:x\n\n\0'.repeat(2000)));
    expectEnded(await rawEnding(socket), 'TOO_MANY_FRAMES', 'raw: more frames ahead of their handling than the backlog takes');
  });

  it('a refused frame is not a connection code: its own code, and reconnect (without that frame)', async () => {
    const run = stompjs(t, { token: await t.token(uniqueEmail('astray')) });
    await run.connected;
    run.client.publish({ destination: '/topic/elsewhere', body: '{}' });
    const { headers, body } = await run.ended;
    expect(headers).toMatchObject({ code: 'DESTINATION_FORBIDDEN', reconnect: 'true' });
    expect(headers.message).toMatch(/^DESTINATION_FORBIDDEN: /);
    expect(JSON.parse(body)).toMatchObject({ code: 'DESTINATION_FORBIDDEN', status: 403 });
    expect(CONNECTION_CODES).not.toHaveProperty('DESTINATION_FORBIDDEN');
    expect(isTerminal('DESTINATION_FORBIDDEN')).toBe(false);
  });

  it('ORIGIN_NOT_ALLOWED (terminal): the handshake is refused, as problem+json', async () => {
    const refused = await refusedHandshake(t, { origin: 'https://evil.example.com' });
    expect(refused).toMatchObject({ status: 403, body: { code: 'ORIGIN_NOT_ALLOWED' } });
    expect(CONNECTION_CODES.ORIGIN_NOT_ALLOWED.sentAs).toBe('handshake');
    expect(isTerminal(refused.body.code)).toBe(!CONNECTION_CODES.ORIGIN_NOT_ALLOWED.reconnect);
    provoked.set('ORIGIN_NOT_ALLOWED', 'a WebSocket handshake with a foreign Origin');
  });
});

describe('idle connections and the frame budget', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ STOMP_IDLE_TIMEOUT_MS: '300', STOMP_FRAMES_PER_SECOND: '10', STOMP_FRAME_BURST: '10' });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('IDLE_TIMEOUT (reconnect): no heart-beats agreed and nothing sent', async () => {
    const run = stompjs(t, { token: await t.token(uniqueEmail('idle')) });
    await run.connected;
    expectEnded(await run.ended, 'IDLE_TIMEOUT', 'stompjs with heart-beats off, silent');
  });

  it('TOO_MANY_FRAMES (reconnect): a client that keeps sending while its frames are refused', async () => {
    const run = stompjs(t, { token: await t.token(uniqueEmail('flood')) });
    await run.connected;
    // Refusals go to /user/queue/error while the client listens there; one burst more ends it.
    run.client.subscribe('/user/queue/error', () => undefined);
    for (let i = 0; i < 40; i++) run.client.publish({ destination: '/app/chat.typing', body: JSON.stringify({ sessionId: newId(), typing: true }) });
    expectEnded(await run.ended, 'TOO_MANY_FRAMES', 'stompjs publishing 40 frames against a budget of 10');
  });

  it('a frame over the budget, with nobody listening for errors, is a refused frame: RATE_LIMITED and reconnect', async () => {
    const run = stompjs(t, { token: await t.token(uniqueEmail('hasty')) });
    await run.connected;
    for (let i = 0; i < 15; i++) run.client.subscribe('/user/queue/ack', () => undefined);
    const { headers } = await run.ended;
    expect(headers).toMatchObject({ code: 'RATE_LIMITED', reconnect: 'true' });
    expect(isTerminal('RATE_LIMITED')).toBe(false);
  });
});

describe('a client that does not read', () => {
  let t: TestApp;
  beforeAll(async () => {
    // 64 KiB instead of 4 MiB queued: the kernel's socket buffers still take their share first.
    t = await startTestApp({ RATE_LIMIT_PER_MINUTE: '0' }, {}, { stomp: { maxBufferedBytes: 64 * 1024 } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('SLOW_CONSUMER (reconnect): messages pile up for a reader that stopped reading', async () => {
    const [reader, writer] = [uniqueEmail('reader'), uniqueEmail('writer')];
    const [readerToken, writerToken] = await Promise.all([t.token(reader), t.token(writer)]);
    const sessionId = (await t.call('POST', '/api/chat/init', { token: writerToken, body: { toEmail: reader, intent: 'dating' } })).body.sessionId as string;
    const socket = await rawConnected(t, readerToken);
    socket.send('SUBSCRIBE', [['id', '1'], ['destination', '/user/queue/messages'], ['receipt', 'ready']]);
    await expect.poll(() => commandsOf(socket)).toEqual(['CONNECTED', 'RECEIPT']);
    const tcp = (socket.ws as unknown as { _socket: Socket })._socket;
    tcp.pause();

    const errorsSent = async () => Number(/chat_stomp_frames_total\{direction="out",command="ERROR"\} (\d+)/.exec((await t.call('GET', '/metrics')).body as string)?.[1] ?? 0);
    const before = await errorsSent();
    const content = 'x'.repeat(4000);
    let sent = 0;
    while ((await errorsSent()) === before) {
      expect(sent, 'the server never gave up on a reader that does not read').toBeLessThan(5000);
      await Promise.all(Array.from({ length: 50 }, () => t.call('POST', '/api/chat/message', { token: writerToken, body: { sessionId, content, clientMessageId: newId() } })));
      sent += 50;
    }
    tcp.resume();
    expectEnded(await rawEnding(socket), 'SLOW_CONSUMER', `a paused reader sent ${sent} messages of 4,000 characters`);
  }, 60_000);
});

describe('connections waiting to authenticate', () => {
  let t: TestApp;
  const waiting: WebSocket[] = [];
  beforeAll(async () => {
    t = await startTestApp({ MAX_PENDING_CONNECTIONS: '2', MAX_PENDING_CONNECTIONS_PER_ADDRESS: '1' });
  });
  afterAll(async () => {
    for (const ws of waiting) ws.terminate();
    await t?.close();
  });

  it('TOO_MANY_PENDING_FROM_ADDRESS and TOO_MANY_PENDING_CONNECTIONS (reconnect): the handshake is refused, as problem+json', async () => {
    waiting.push(await pendingFrom(t, '10.0.0.1'));
    const perAddress = await refusedHandshake(t, { 'x-forwarded-for': '10.0.0.1' });
    expect(perAddress).toMatchObject({ status: 429, body: { code: 'TOO_MANY_PENDING_FROM_ADDRESS' } });
    waiting.push(await pendingFrom(t, '10.0.0.2'));
    const total = await refusedHandshake(t, { 'x-forwarded-for': '10.0.0.3' });
    expect(total).toMatchObject({ status: 503, body: { code: 'TOO_MANY_PENDING_CONNECTIONS' } });
    for (const code of ['TOO_MANY_PENDING_FROM_ADDRESS', 'TOO_MANY_PENDING_CONNECTIONS'] as const) {
      expect(CONNECTION_CODES[code].sentAs).toBe('handshake');
      expect(isTerminal(code)).toBe(false);
      provoked.set(code, 'WebSocket handshakes over the pending caps');
    }
  });
});

describe('a server that stops', () => {
  it('SERVER_SHUTDOWN (reconnect): app.stop() ends every connection', async () => {
    const t = await startTestApp();
    const run = stompjs(t, { token: await t.token(uniqueEmail('left')) });
    await run.connected;
    await t.close();
    expectEnded(await run.ended, 'SERVER_SHUTDOWN', 'app.stop() with a stompjs client connected');
  });
});

describe('an administrator', () => {
  it('DISCONNECTED_BY_ADMIN (terminal): POST /admin/users/{email}/disconnect ends every connection of the user', async () => {
    const t = await startTestApp();
    try {
      const user = uniqueEmail('kicked');
      const run = stompjs(t, { token: await t.token(user) });
      await run.connected;
      const adminToken = await t.token(uniqueEmail('ops'), undefined, 'chat:admin');
      expect((await t.call('POST', `/admin/users/${encodeURIComponent(user)}/disconnect`, { token: adminToken })).status).toBe(202);
      expectEnded(await run.ended, 'DISCONNECTED_BY_ADMIN', 'POST /admin/users/{email}/disconnect with a chat:admin token');
    } finally {
      await t.close();
    }
  });
});

/** Codes no client can provoke, and why; each is still sent, with its headers, by the same `fail`. */
const NOT_PROVOKED: Partial<Record<ConnectionCode, string>> = {
  INTERNAL: 'a bug of ours, contained to one connection: nothing a client sends is meant to cause it',
  BUS_UNAVAILABLE: 'needs the broker to fail while a CONNECT registers its user; a client cannot do that (the fault tests in test/cluster/ cut the broker)',
};

describe('the catalogue', () => {
  it('has every code provoked above or listed as not provokable, and none both', () => {
    const all = Object.keys(CONNECTION_CODES).sort();
    const covered = [...provoked.keys(), ...Object.keys(NOT_PROVOKED)].sort();
    expect(covered).toEqual(all);
    console.log(`connection codes provoked: ${[...provoked].map(([code, how]) => `${code} (${how})`).join('; ')}`);
  });
});
