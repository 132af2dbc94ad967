/** The STOMP server's protocol edges, at the byte level (the SockJS surface: sockjs-hardening.test.ts). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';
import { commandsOf, firstHeader, openRawStomp, type RawStomp } from '../support/raw-stomp.js';

const GOOD_ORIGIN = 'https://chat.example.com';
let t: TestApp;
let aliceToken: string;
let foreignSessionId: string;
const sockets: RawStomp[] = [];

beforeAll(async () => {
  t = await startTestApp({ ALLOWED_ORIGINS: GOOD_ORIGIN }, {}, { stomp: { connectTimeoutMs: 300, heartbeatSendMs: 100, heartbeatReceiveMs: 100 } });
  aliceToken = await t.token(uniqueEmail('alice'));
  const [x, y] = [uniqueEmail('x'), uniqueEmail('y')];
  foreignSessionId = (await t.call('POST', '/api/chat/init', { token: await t.token(x), body: { toEmail: y, intent: 'dating' } })).body.sessionId;
});
afterAll(async () => {
  for (const s of sockets) s.close();
  await t?.close();
});

async function open(options: Parameters<typeof openRawStomp>[1] = {}): Promise<RawStomp> {
  const raw = await openRawStomp(t.url, options);
  sockets.push(raw);
  return raw;
}

async function connected(heartBeat = '0,0'): Promise<RawStomp> {
  const raw = await open();
  raw.send('CONNECT', [['accept-version', '1.2'], ['host', 'chat'], ['heart-beat', heartBeat], ['Authorization', `Bearer ${aliceToken}`]]);
  await expect.poll(() => commandsOf(raw)).toEqual(['CONNECTED']);
  return raw;
}

const expectError = async (raw: RawStomp, code: string) => {
  await expect.poll(() => commandsOf(raw).at(-1)).toBe('ERROR');
  expect(firstHeader(raw.frames.at(-1), 'message')).toContain(code);
  await expect.poll(() => raw.closed).toBe(true);
};

describe('handshake', () => {
  it('negotiates v12.stomp whatever the order offered, on /ws and /ws/websocket', async () => {
    expect((await open({ protocols: ['v10.stomp', 'v11.stomp', 'v12.stomp'] })).protocol).toBe('v12.stomp');
    expect((await open({ path: '/ws/websocket', protocols: ['v11.stomp', 'v12.stomp'] })).protocol).toBe('v12.stomp');
  });

  it('answers CONNECT with version, heart-beat and user-name', async () => {
    const raw = await connected('1000,1000');
    const frame = raw.frames[0]!;
    expect(firstHeader(frame, 'version')).toBe('1.2');
    expect(firstHeader(frame, 'heart-beat')).toBe('100,100');
    expect(firstHeader(frame, 'user-name')).toMatch(/^alice\./);
  });

  it('closes a connection that sends no CONNECT in time', async () => {
    const raw = await open();
    await expectError(raw, 'CONNECT_TIMEOUT');
  });

  it('refuses frames before CONNECT and unsupported versions', async () => {
    const early = await open();
    early.send('SUBSCRIBE', [['id', '1'], ['destination', '/user/queue/messages']]);
    await expectError(early, 'NOT_CONNECTED');
    const old = await open();
    old.send('CONNECT', [['accept-version', '1.0'], ['Authorization', `Bearer ${aliceToken}`]]);
    await expectError(old, 'UNSUPPORTED_VERSION');
  });

  it('refuses a foreign Origin on the WebSocket handshake, and accepts an allowed one', async () => {
    await expect(openRawStomp(t.url, { origin: 'https://evil.example.com' })).rejects.toThrow(/403/);
    expect((await open({ origin: GOOD_ORIGIN })).protocol).toBe('v12.stomp');
  });
});

describe('frames', () => {
  it('refuses a frame over the 64 KiB limit with an ERROR and a close', async () => {
    const raw = await connected();
    raw.send('SEND', [['destination', '/app/chat.send']], 'x'.repeat(64 * 1024));
    await expectError(raw, 'FRAME_TOO_LARGE');
  });

  it('refuses an undefined escape in a header', async () => {
    const raw = await connected();
    raw.sendRaw('SUBSCRIBE\nid:1\ndestination:/user/queue/\\tmessages\n\n\u0000');
    await expectError(raw, 'BAD_ESCAPE');
  });

  it('takes the first of repeated headers for authorisation and routing alike', async () => {
    const raw = await connected();
    raw.send('SUBSCRIBE', [['id', '1'], ['destination', `/topic/session.${foreignSessionId}`], ['destination', '/user/queue/messages']]);
    await expectError(raw, 'NOT_A_PARTICIPANT');
  });

  it('refuses the 101st subscription on a connection', async () => {
    const raw = await connected();
    for (let i = 0; i < 100; i++) raw.send('SUBSCRIBE', [['id', `s${i}`], ['destination', '/user/queue/messages'], ['receipt', `r${i}`]]);
    await expect.poll(() => commandsOf(raw).filter((c) => c === 'RECEIPT').length).toBe(100);
    raw.send('SUBSCRIBE', [['id', 's100'], ['destination', '/user/queue/messages']]);
    await expectError(raw, 'VALIDATION_FAILED');
  });

  it('honours RECEIPT on DISCONNECT and then closes', async () => {
    const raw = await connected();
    raw.send('DISCONNECT', [['receipt', 'bye']]);
    await expect.poll(() => commandsOf(raw)).toEqual(['CONNECTED', 'RECEIPT']);
    expect(firstHeader(raw.frames[1], 'receipt-id')).toBe('bye');
    await expect.poll(() => raw.closed).toBe(true);
  });

  it('sends heart-beats to an idle client and drops one that stops sending them', async () => {
    const raw = await connected('100,100');
    let beats = 0;
    raw.ws.on('message', (data: Buffer) => {
      if (data.toString() === '\n') beats++;
    });
    await expect.poll(() => beats, { timeout: 2000 }).toBeGreaterThanOrEqual(2);
    // We never send a heart-beat: after twice the agreed interval the server gives up on us.
    await expectError(raw, 'HEARTBEAT_TIMEOUT');
  });

  it('survives garbage bytes without affecting other connections', async () => {
    const victim = await connected();
    const raw = await connected();
    raw.sendRaw(Buffer.from([0xff, 0xfe, 0x00, 0x0a, 0x41]));
    await expect.poll(() => raw.closed).toBe(true);
    victim.send('SUBSCRIBE', [['id', '1'], ['destination', '/user/queue/ack'], ['receipt', 'ok']]);
    await expect.poll(() => commandsOf(victim)).toEqual(['CONNECTED', 'RECEIPT']);
  });
});
