/**
 * StompLink against a scripted in-memory STOMP server: tokens per attempt, subscriptions made again
 * on every connection and confirmed by a RECEIPT, and which ERROR frames end it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ChatClientError } from './chat-client-error.js';
import { StompLink, stompErrorOutcome, type ConnectionState, type StompLinkOptions } from './stomp-link.js';
import { ScriptedStompServer } from './testing/scripted-stomp-server.js';

const links: StompLink[] = [];
afterEach(async () => {
  await Promise.all(links.splice(0).map((l) => l.close()));
});

function link(options: Partial<StompLinkOptions> & { server?: ScriptedStompServer } = {}) {
  const server = options.server ?? new ScriptedStompServer();
  let tokens = 0;
  const l = new StompLink({
    baseUrl: 'http://chat.test',
    tokenProvider: async () => `token-${++tokens}`,
    transport: 'websocket',
    webSocketFactory: server.factory,
    backoff: { initialMs: 1, maxMs: 5 },
    connectTimeoutMs: 2_000,
    heartbeatMs: 0,
    maxAuthFailures: 3,
    tokenRefreshLeadMs: 60_000,
    ...options,
  });
  links.push(l);
  const events: string[] = [];
  const states: ConnectionState[] = [];
  const errors: ChatClientError[] = [];
  const gaveUp: ChatClientError[] = [];
  l.on('up', () => events.push('up'));
  l.on('down', () => events.push('down'));
  l.on('state', (s) => states.push(s));
  l.on('error', (e) => errors.push(e));
  l.on('gaveUp', (e) => gaveUp.push(e));
  return { l, server, events, states, errors, gaveUp };
}

async function up(l: StompLink): Promise<void> {
  l.start();
  await expect.poll(() => l.ready).toBe(true);
}

describe('stompErrorOutcome', () => {
  it.each([
    // Codes in the catalogue decide, whatever the header says.
    [{ reconnect: 'false' }, 'TOKEN_EXPIRED', true, 'reconnect'],
    [{}, 'SERVER_SHUTDOWN', true, 'reconnect'],
    [{ reconnect: 'true' }, 'FRAME_TOO_LARGE', true, 'end'],
    [{}, 'ORIGIN_NOT_ALLOWED', false, 'end'],
    [{ reconnect: 'true' }, 'SLOW_CONSUMER', true, 'reconnect'],
    // A refused token at CONNECT: retried with fresh tokens, a bounded number of times.
    [{ reconnect: 'false' }, 'UNAUTHENTICATED', false, 'token-refused'],
    [{}, 'UNAUTHENTICATED', true, 'end'],
    // Codes newer than this SDK: the header decides, reconnecting by default.
    [{ reconnect: 'false' }, 'SOMETHING_NEW', false, 'end'],
    [{ reconnect: ' FALSE ' }, 'SOMETHING_NEW', true, 'end'],
    [{}, 'SOMETHING_NEW', true, 'reconnect'],
    [{ reconnect: 'maybe' }, 'SOMETHING_NEW', true, 'reconnect'],
  ] as const)('%j %s (connected: %s) → %s', (headers, code, connected, outcome) => {
    expect(stompErrorOutcome(headers, code, connected)).toBe(outcome);
  });
});

describe('StompLink', () => {
  it('connects with a fresh token each time and makes every subscription again, up only after the RECEIPT', async () => {
    const { l, server, events, states } = link();
    const seen: string[] = [];
    l.subscribe('/user/queue/ack', (m) => seen.push(`ack:${m.body}`));
    l.subscribe('/user/queue/messages', (m) => seen.push(`msg:${m.body}`), { ack: 'client-individual' });
    await up(l);
    server.current.cut();
    await expect.poll(() => events).toEqual(['up', 'down', 'up']);

    expect(server.framesReceived('CONNECT').map((f) => f.headers.Authorization)).toEqual(['Bearer token-1', 'Bearer token-2']);
    for (const socket of server.sockets) {
      const subscribes = socket.received.filter((f) => f.command === 'SUBSCRIBE');
      expect(subscribes.map((f) => [f.headers.destination, f.headers.ack, f.headers.receipt !== undefined])).toEqual([
        ['/user/queue/ack', undefined, false],
        ['/user/queue/messages', 'client-individual', true], // one RECEIPT proves both: frames are handled in order
      ]);
    }
    expect(states).toEqual(['connecting', 'connected', 'reconnecting', 'reconnecting', 'connected']);
    server.current.deliver('/user/queue/messages', 'hello');
    await expect.poll(() => seen).toEqual(['msg:hello']);
  });

  it('ends an attempt whose RECEIPT does not come, and tries again', async () => {
    const server = new ScriptedStompServer();
    server.answerReceipts = false;
    const { l, states } = link({ server, connectTimeoutMs: 100 });
    l.subscribe('/user/queue/ack', () => undefined);
    l.start();
    await expect.poll(() => server.framesReceived('SUBSCRIBE').length).toBe(1);
    expect([l.state, l.ready, l.publish('/app/x', {})]).toEqual(['connecting', false, false]);
    server.answerReceipts = true;
    await expect.poll(() => l.ready).toBe(true);
    expect(server.sockets).toHaveLength(2);
    expect(states.at(-1)).toBe('connected');
  });

  it('subscribes at once when connected, confirmed by a RECEIPT, and not again once unsubscribed', async () => {
    const { l, server } = link();
    l.subscribe('/user/queue/ack', () => undefined);
    await up(l);
    const seen: string[] = [];
    const topic = l.subscribe('/topic/session.s1', (m) => seen.push(m.body));
    await topic.live;
    expect(server.current.received.at(-1)).toMatchObject({ command: 'SUBSCRIBE', headers: { destination: '/topic/session.s1', receipt: expect.any(String) } });
    server.current.deliver('/topic/session.s1', 'typing');
    await expect.poll(() => seen).toEqual(['typing']);

    topic.unsubscribe();
    expect(server.current.received.at(-1)?.command).toBe('UNSUBSCRIBE');
    server.current.cut();
    await expect.poll(() => server.sockets.length).toBe(2);
    await expect.poll(() => l.ready).toBe(true);
    expect(server.sockets[1]!.received.filter((f) => f.command === 'SUBSCRIBE').map((f) => f.headers.destination)).toEqual(['/user/queue/ack']);
  });

  it('publishes JSON only while up', async () => {
    const { l, server } = link();
    expect(l.publish('/app/chat.typing', { typing: true })).toBe(false);
    await up(l);
    expect(l.publish('/app/chat.typing', { typing: true })).toBe(true);
    expect(server.current.received.at(-1)).toMatchObject({ command: 'SEND', headers: { destination: '/app/chat.typing', 'content-type': 'application/json' }, body: '{"typing":true}' });
    expect(l.userName).toBe('tester@example.com');
  });

  it('gives up at once on an ERROR the service marks reconnect: false, with its code header', async () => {
    const server = new ScriptedStompServer();
    server.answerConnect = () => ({ error: { code: 'ACCOUNT_CLOSED', reconnect: 'false', message: 'ACCOUNT_CLOSED: this account is closed' } });
    const { l, states, errors, gaveUp } = link({ server });
    l.start();
    await expect.poll(() => l.state).toBe('disconnected');
    expect(gaveUp.map((e) => [e.code, e.message])).toEqual([['ACCOUNT_CLOSED', 'this account is closed']]);
    expect(errors.map((e) => e.code)).toEqual(['ACCOUNT_CLOSED']);
    expect(states).toEqual(['connecting', 'disconnected']);
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(server.sockets).toHaveLength(1);
  });

  it('reconnects after a catalogue code marked reconnect, past maxAuthFailures', async () => {
    const server = new ScriptedStompServer();
    server.answerConnect = (_frame, index) => (index < 3 ? { error: { code: 'TOO_MANY_CONNECTIONS', reconnect: 'true', message: 'TOO_MANY_CONNECTIONS: later' } } : 'accept');
    const { l, gaveUp } = link({ server, maxAuthFailures: 2 });
    await up(l);
    expect(server.sockets).toHaveLength(4);
    expect(gaveUp).toEqual([]);
  });

  it('without the header, gives up after maxAuthFailures token refusals in a row, and retries any other ERROR', async () => {
    const server = new ScriptedStompServer();
    server.answerConnect = () => ({ error: { message: 'UNAUTHENTICATED\\c the token is not valid' } });
    const { l, gaveUp, states } = link({ server, maxAuthFailures: 2 });
    l.start();
    await expect.poll(() => l.state).toBe('disconnected');
    expect(server.sockets).toHaveLength(2);
    expect(gaveUp.map((e) => [e.code, e.message])).toEqual([['UNAUTHENTICATED', 'the token is not valid']]);
    expect(states.filter((s) => s === 'connecting').length).toBeGreaterThanOrEqual(3);

    const other = link();
    await up(other.l);
    other.server.current.write('ERROR', { message: 'TOKEN_EXPIRED: the token has expired; reconnect with a fresh one' });
    other.server.current.close();
    await expect.poll(() => other.server.sockets.length).toBe(2);
    await expect.poll(() => other.l.ready).toBe(true);
    expect(other.errors.map((e) => e.code)).toEqual(['TOKEN_EXPIRED']);
    expect(other.gaveUp).toEqual([]);
  });

  it('keeps trying while the token provider fails, saying so', async () => {
    let fail = 2;
    const { l, errors } = link({
      tokenProvider: async () => {
        if (fail-- > 0) throw new Error('identity provider down');
        return 'token';
      },
    });
    await up(l);
    expect(errors.map((e) => e.code)).toEqual(['TOKEN_UNAVAILABLE', 'TOKEN_UNAVAILABLE']);
  });

  it('close ends the connection, stops reconnecting and says disconnected', async () => {
    const { l, server, events, states } = link();
    await up(l);
    await l.close();
    expect(events).toEqual(['up', 'down']);
    expect(states.at(-1)).toBe('disconnected');
    expect(server.framesReceived('DISCONNECT')).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(server.sockets).toHaveLength(1);
  });
});
