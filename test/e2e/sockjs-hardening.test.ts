/**
 * The /ws surface against an attacker who has no token: URL spellings that sockjs-node would
 * route differently from us, anonymous floods of sessions and sockets, oversized bodies and
 * messages, and frames posted into someone else's SockJS session. Real sockets, real sockjs-client;
 * memory deltas and timings are printed, and asserted only against generous bounds.
 */
import http from 'node:http';
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config/config.js';
import { connectStomp, type StompTransportKind } from '../support/stomp-client.js';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';

const GOOD_ORIGIN = 'https://chat.example.com';
const MiB = 1024 * 1024;

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const heapMiB = (): number => {
  gc();
  return process.memoryUsage().heapUsed / MiB;
};

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP request with the path sent byte for byte as given (no URL parsing on our side). */
function request(base: string, method: string, path: string, headers: Record<string, string> = {}, body?: string, timeoutMs = 5000): Promise<Reply> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method, path, headers, agent: false }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no complete answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A WebSocket upgrade written by hand, so that any path spelling goes out as is; resolves with the status line. */
function upgrade(base: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; head: string; socket: net.Socket }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname);
    let head = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      head += chunk;
      const end = head.indexOf('\r\n\r\n');
      if (end !== -1) {
        socket.removeAllListeners('data');
        resolve({ status: Number(head.slice(9, 12)), head, socket });
      }
    });
    socket.on('error', reject);
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n${extra}\r\n`,
    );
  });
}

/** The status an upgrade gets; the socket is closed right after. */
async function upgradeStatus(base: string, path: string, headers: Record<string, string> = {}): Promise<number> {
  const reply = await upgrade(base, path, headers);
  reply.socket.destroy();
  return reply.status;
}

const connectFrame = (token: string): string => `CONNECT\naccept-version:1.2\nheart-beat:0,0\nAuthorization:Bearer ${token}\n\n\u0000`;
const sendFrame = (body: unknown, receipt?: string): string =>
  `SEND\ndestination:/app/chat.send\ncontent-type:application/json\n${receipt ? `receipt:${receipt}\n` : ''}\n${JSON.stringify(body)}\u0000`;

/** A SockJS xhr-streaming session driven by hand, so a test controls every header of every request. */
class HandDrivenSockJs {
  readonly messages: string[] = [];
  closeFrame: string | undefined;
  private constructor(
    private readonly base: string,
    readonly id: string,
    private readonly headers: Record<string, string>,
    private readonly req: http.ClientRequest,
  ) {}

  static open(base: string, headers: Record<string, string>, id = `s${newId().replaceAll('-', '').slice(0, 12)}`): Promise<HandDrivenSockJs> {
    const { hostname, port } = new URL(base);
    return new Promise((resolve, reject) => {
      const req = http.request({ host: hostname, port, method: 'POST', path: `/ws/000/${id}/xhr_streaming`, headers, agent: false });
      const session = new HandDrivenSockJs(base, id, headers, req);
      req.on('response', (res) => {
        if (res.statusCode !== 200) return reject(new Error(`xhr_streaming refused: ${res.statusCode}`));
        let buffered = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffered += chunk;
          for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
            const line = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 1);
            if (line === 'o') resolve(session);
            else if (line.startsWith('a')) session.messages.push(...(JSON.parse(line.slice(1)) as string[]));
            else if (line.startsWith('c')) session.closeFrame = line;
          }
        });
      });
      req.on('error', reject);
      req.end();
    });
  }

  /** STOMP commands received, in order. */
  get commands(): string[] {
    return this.messages.map((m) => m.split('\n', 1)[0]!);
  }

  post(frames: string[], headers: Record<string, string> = this.headers, path = `/ws/000/${this.id}/xhr_send`): Promise<Reply> {
    return request(this.base, 'POST', path, { 'content-type': 'text/plain', ...headers }, JSON.stringify(frames));
  }

  close(): void {
    this.req.destroy();
  }
}

let t: TestApp;
let aliceToken: string;
const cleanups: Array<() => void> = [];

beforeAll(async () => {
  t = await startTestApp({ ALLOWED_ORIGINS: GOOD_ORIGIN });
  aliceToken = await t.token(uniqueEmail('alice'));
});
afterAll(async () => {
  for (const cleanup of cleanups) cleanup();
  await t?.close();
});

const expectOurRefusal = (reply: { status: number; headers: http.IncomingHttpHeaders }, what: string) => {
  // sockjs-node never answers with problem+json: this proves the request did not reach it.
  expect({ what, status: reply.status >= 400 && reply.status < 500, type: reply.headers['content-type']?.split(';')[0] }).toEqual({ what, status: true, type: 'application/problem+json' });
};

describe('URL spellings', () => {
  const TRANSPORTS: Array<[string, string]> = [
    ['xhr', 'POST'], ['xhr_send', 'POST'], ['xhr_streaming', 'POST'], ['eventsource', 'GET'], ['websocket', 'GET'],
    ['jsonp', 'GET'], ['jsonp_send', 'POST'], ['htmlfile', 'GET'],
  ];
  const SPELLINGS: Array<[string, (id: string, transport: string) => string]> = [
    ['backslashes', (id, tr) => `/ws\\000\\${id}\\${tr}`],
    ['a backslash before the transport', (id, tr) => `/ws/000/${id}\\${tr}`],
    ['a fragment', (id, tr) => `/ws/000/${id}/${tr}#x`],
    ['a fragment hiding a suffix', (id, tr) => `/ws/000/${id}/${tr}#/../xhr`],
    ['%2f', (id, tr) => `/ws/000%2f${id}/${tr}`],
    ['%2F before the transport', (id, tr) => `/ws/000/${id}%2F${tr}`],
    ['%5c', (id, tr) => `/ws/000/${id}%5c${tr}`],
    ['..', (id, tr) => `/ws/000/x/../${id}/${tr}`],
    ['a doubled slash', (id, tr) => `/ws//000/${id}/${tr}`],
    ['a doubled slash before the session', (id, tr) => `/ws/000//${id}/${tr}`],
    ['a leading doubled slash', (id, tr) => `//ws/000/${id}/${tr}`],
    ['an upper-case prefix', (id, tr) => `/WS/000/${id}/${tr}`],
    ['an upper-case transport', (id, tr) => `/ws/000/${id}/${tr.toUpperCase()}`],
    ['a trailing slash', (id, tr) => `/ws/000/${id}/${tr}/`],
    ['a quote in the session id', (id, tr) => `/ws/000/${id}'/${tr}`],
  ];

  it.each(SPELLINGS)('%s: refused by us on every transport, never answered by sockjs-node', async (_name, spell) => {
    // A live session to aim at, so that a spelling that got through would really deliver or poll.
    const victim = await HandDrivenSockJs.open(t.url, { 'user-agent': 'victim-browser' });
    cleanups.push(() => victim.close());
    for (const [transport, method] of TRANSPORTS) {
      const body = method === 'POST' ? JSON.stringify([connectFrame(aliceToken)]) : undefined;
      const reply = await request(t.url, method, `${spell(victim.id, transport)}?c=cb`, { 'user-agent': 'attacker', 'content-type': 'text/plain' }, body, 3000);
      expectOurRefusal(reply, `${method} ${spell(victim.id, transport)}`);
    }
    const ws = await upgrade(t.url, spell(victim.id, 'websocket'));
    ws.socket.destroy();
    expect(ws.status, spell(victim.id, 'websocket')).toBeGreaterThanOrEqual(400);
    expect(ws.head, spell(victim.id, 'websocket')).toContain('application/problem+json');
    expect(victim.commands).toEqual([]);
  });

  it('refuses raw WebSocket upgrades on any spelling but /ws and /ws/websocket', async () => {
    for (const path of ['/ws\\websocket', '/ws#', '/ws/websocket#x', '/WS', '//ws', '/ws/websocket/', '/ws/', '/ws/info', '/ws%2fwebsocket']) {
      const reply = await upgrade(t.url, path);
      reply.socket.destroy();
      expect(reply.status, path).toBeGreaterThanOrEqual(400);
      expect(reply.head, path).toContain('application/problem+json');
    }
    for (const path of ['/ws', '/ws/websocket', '/ws?x=1']) {
      const reply = await upgrade(t.url, path);
      reply.socket.destroy();
      expect(reply.status, path).toBe(101);
    }
  });

  it('does not let a backslash spelling post frames into an authenticated session (nothing is stored as its user)', async () => {
    const [alice, bob] = [uniqueEmail('alice'), uniqueEmail('bob')];
    const token = await t.token(alice);
    const sessionId = (await t.call('POST', '/api/chat/init', { token, body: { toEmail: bob, intent: 'dating' } })).body.sessionId;
    const victim = await HandDrivenSockJs.open(t.url, { 'user-agent': 'victim-browser' });
    cleanups.push(() => victim.close());
    expect((await victim.post([connectFrame(token)])).status).toBe(204);
    await expect.poll(() => victim.commands).toEqual(['CONNECTED']);

    const forged = await victim.post([sendFrame({ sessionId, content: 'forged by an attacker', clientMessageId: newId() })], { 'user-agent': 'attacker' }, `/ws/000\\${victim.id}\\xhr_send`);
    expectOurRefusal(forged, 'backslash xhr_send');

    // Frames of one connection are handled in order: once this one's RECEIPT is back, an earlier forged SEND would be stored.
    expect((await victim.post([sendFrame({ sessionId, content: 'from the real client', clientMessageId: newId() }, 'r1')])).status).toBe(204);
    await expect.poll(() => victim.commands.includes('RECEIPT')).toBe(true);
    const history = await t.call('GET', `/api/chat/${sessionId}/history`, { token });
    expect(history.body.messages.map((m: { content: string }) => m.content)).toEqual(['from the real client']);
  });

  it('serves the canonical spellings', async () => {
    expect((await request(t.url, 'GET', '/ws/info?t=1', { origin: GOOD_ORIGIN })).status).toBe(200);
    expect((await request(t.url, 'OPTIONS', '/ws/info', { origin: GOOD_ORIGIN })).status).toBe(204);
    expect((await request(t.url, 'OPTIONS', '/ws/000/abcdefgh/xhr_send', { origin: GOOD_ORIGIN })).status).toBe(204);
    const polled = await request(t.url, 'POST', `/ws/000/${newId().slice(0, 8)}/xhr`, { 'user-agent': 'x' });
    expect([polled.status, polled.body]).toEqual([200, 'o\n']);
  });
});

describe('SockJS basics', () => {
  it('serves /ws/info to an allowed Origin and refuses a foreign one', async () => {
    expect((await request(t.url, 'GET', '/ws/info', { origin: GOOD_ORIGIN })).status).toBe(200);
    expect((await request(t.url, 'GET', '/ws/info', { origin: 'https://evil.example.com' })).status).toBe(403);
    expect((await request(t.url, 'POST', '/ws/000/abcdefgh/xhr_streaming', { origin: 'https://evil.example.com' })).status).toBe(403);
  });

  it('has the JSONP and htmlfile transports and the iframe page turned off', async () => {
    expect((await request(t.url, 'GET', '/ws/000/jsonpsess/jsonp?c=cb')).status).toBe(404);
    expect((await request(t.url, 'POST', '/ws/000/jsonpsess/jsonp_send', { 'content-type': 'text/plain' }, 'd=[]')).status).toBe(404);
    expect((await request(t.url, 'GET', '/ws/000/htmlsess/htmlfile?c=cb')).status).toBe(404);
    expect((await request(t.url, 'GET', '/ws/iframe.html')).status).toBe(404);
  });

  it.each<StompTransportKind>(['sockjs', 'sockjs-xhr-streaming', 'sockjs-xhr-polling', 'sockjs-eventsource'])('carries a real send with sockjs-client over %s', async (transport) => {
    const [alice, bob] = [uniqueEmail('alice'), uniqueEmail('bob')];
    const token = await t.token(alice);
    const sessionId = (await t.call('POST', '/api/chat/init', { token, body: { toEmail: bob, intent: 'dating' } })).body.sessionId;
    const client = await connectStomp({ baseUrl: t.url, token, transport });
    try {
      await client.subscribe('/user/queue/ack');
      client.send('/app/chat.send', { sessionId, content: `over ${transport}`, clientMessageId: newId() });
      await expect.poll(() => client.on('/user/queue/ack').map((m) => m.body.content), { timeout: 5000 }).toEqual([`over ${transport}`]);
    } finally {
      await client.close();
    }
  });
});

describe('xhr_send bodies', () => {
  /** Streams `total` bytes of a JSON array and resolves with the status and how long the refusal took. */
  const postHuge = (path: string, total: number, headers: Record<string, string>, chunked: boolean) =>
    new Promise<{ status: number; ms: number; sent: number }>((resolve, reject) => {
      const { hostname, port } = new URL(t.url);
      const started = performance.now();
      let sent = 0;
      let answered = false;
      const req = http.request({ host: hostname, port, method: 'POST', path, agent: false, headers: { 'content-type': 'text/plain', ...headers, ...(chunked ? {} : { 'content-length': String(total) }) } });
      req.on('response', (res) => {
        answered = true;
        resolve({ status: res.statusCode ?? 0, ms: performance.now() - started, sent });
        res.resume();
        req.destroy();
      });
      req.on('error', (err) => (answered ? undefined : reject(err)));
      const chunk = Buffer.alloc(64 * 1024, 'x');
      const pump = (): void => {
        while (!answered && sent < total) {
          const piece = sent === 0 ? Buffer.concat([Buffer.from('["'), chunk.subarray(2)]) : chunk;
          sent += piece.length;
          if (!req.write(piece)) return void req.once('drain', pump);
        }
        if (!answered) req.end();
      };
      pump();
    });

  it('refuses 32 MiB, chunked or with a Content-Length, on a valid session, quickly, while /health/live stays responsive', async () => {
    const owner = { 'user-agent': 'big-sender' };
    const session = await HandDrivenSockJs.open(t.url, owner);
    cleanups.push(() => session.close());
    expect((await session.post([connectFrame(aliceToken)])).status).toBe(204);
    await expect.poll(() => session.commands).toEqual(['CONNECTED']);

    const liveness: number[] = [];
    let probing = true;
    const probe = (async () => {
      while (probing) {
        const started = performance.now();
        await request(t.url, 'GET', '/health/live');
        liveness.push(performance.now() - started);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const results: Record<string, { status: number; ms: number; sent: number }> = {};
    try {
      for (const [name, path] of [['canonical', `/ws/000/${session.id}/xhr_send`], ['backslash', `/ws/000\\${session.id}\\xhr_send`]] as const) {
        results[`${name} chunked`] = await postHuge(path, 32 * MiB, owner, true);
        results[`${name} content-length`] = await postHuge(path, 32 * MiB, owner, false);
      }
    } finally {
      probing = false;
      await probe;
    }
    for (const [name, r] of Object.entries(results)) {
      console.log(`32 MiB xhr_send (${name}): ${r.status} after ${r.ms.toFixed(0)} ms, ${(r.sent / MiB).toFixed(2)} MiB written by then`);
    }
    const worst = Math.max(...liveness);
    console.log(`/health/live during the refusals: ${liveness.length} probes, worst ${worst.toFixed(1)} ms`);
    expect(Object.values(results).map((r) => r.status)).toEqual([413, 413, 404, 404]);
    for (const r of Object.values(results)) expect(r.ms).toBeLessThan(5000);
    expect(worst).toBeLessThan(1000);
    // The session survived its refused bodies.
    expect((await session.post([sendFrame({ sessionId: newId(), content: 'x', clientMessageId: newId() }, 'after')])).status).toBe(204);
  });

  it('takes one frame before CONNECT and a batch after it', async () => {
    const owner = { 'user-agent': 'cap-check' };
    const session = await HandDrivenSockJs.open(t.url, owner);
    cleanups.push(() => session.close());
    const big = 'x'.repeat(100 * 1024);
    expect((await session.post([big])).status).toBe(413);
    expect((await session.post([connectFrame(aliceToken)])).status).toBe(204);
    await expect.poll(() => session.commands).toEqual(['CONNECTED']);
    // 100 KiB of heart-beat EOLs: over the pre-CONNECT cap, a harmless batch after it.
    expect((await session.post(['\n'.repeat(100 * 1024)])).status).toBe(204);
    expect((await session.post(['\n'.repeat(400 * 1024)])).status).toBe(413);
  });

  it('refuses malformed bodies without disturbing the session', async () => {
    const owner = { 'user-agent': 'malformed' };
    const session = await HandDrivenSockJs.open(t.url, owner);
    cleanups.push(() => session.close());
    expect((await request(t.url, 'POST', `/ws/000/${session.id}/xhr_send`, owner, 'not json')).status).toBe(400);
    expect((await request(t.url, 'POST', `/ws/000/${session.id}/xhr_send`, owner, '[1, {"a": 2}]')).status).toBe(400);
    expect((await request(t.url, 'POST', `/ws/000/${newId().slice(0, 8)}/xhr_send`, owner, '[]')).status).toBe(404);
    expect((await session.post([connectFrame(aliceToken)])).status).toBe(204);
    await expect.poll(() => session.commands).toEqual(['CONNECTED']);
  });
});

describe("SockJS's own WebSocket transport", () => {
  const openSockJsWebSocket = async () => {
    const ws = new WebSocket(`${t.url.replace(/^http/, 'ws')}/ws/000/${newId().slice(0, 8)}/websocket`);
    const frames: string[] = [];
    ws.on('message', (data: Buffer) => frames.push(data.toString()));
    const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
    ws.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    await expect.poll(() => frames[0]).toBe('o');
    return { ws, frames, closed };
  };

  it.each([
    ['before CONNECT', false],
    ['after CONNECT', true],
  ])('closes a connection sending 16 MiB messages %s without assembling them, and memory stays flat', async (_when, authenticate) => {
    const payload = `["${'x'.repeat(16 * MiB)}"]`;
    const heapBefore = heapMiB();
    const rssBefore = process.memoryUsage().rss / MiB;
    const outcomes = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const { ws, frames, closed } = await openSockJsWebSocket();
        if (authenticate) {
          ws.send(JSON.stringify([connectFrame(aliceToken)]));
          await expect.poll(() => frames.some((f) => f.includes('CONNECTED'))).toBe(true);
        }
        ws.send(payload);
        const code = await closed;
        return { code, stompError: frames.some((f) => f.includes('ERROR')) };
      }),
    );
    const heapAfter = heapMiB();
    const rssAfter = process.memoryUsage().rss / MiB;
    console.log(`4 × 16 MiB SockJS WebSocket messages ${_when}: closes ${outcomes.map((c) => c.code).join(',')}; heap ${heapBefore.toFixed(1)} → ${heapAfter.toFixed(1)} MiB, RSS ${rssBefore.toFixed(0)} → ${rssAfter.toFixed(0)} MiB`);
    // Never assembled, parsed or decoded: no STOMP ERROR about a large frame, the socket itself is closed.
    // After CONNECT that is faye-websocket's maxLength (1009, message too big); before it, the
    // pre-CONNECT byte cap may cut the socket first (1006).
    for (const outcome of outcomes) {
      expect(outcome.stompError).toBe(false);
      expect(authenticate ? [1009] : [1009, 1006]).toContain(outcome.code);
    }
    expect(heapAfter - heapBefore).toBeLessThan(32);
  });

  it('still carries a full-size frame', async () => {
    const { ws, frames, closed } = await openSockJsWebSocket();
    ws.send(JSON.stringify([connectFrame(aliceToken)]));
    await expect.poll(() => frames.some((f) => f.includes('CONNECTED'))).toBe(true);
    // 60 KiB of body: within the 64 KiB frame limit once unwrapped, so STOMP (not the socket) answers it.
    ws.send(JSON.stringify([sendFrame({ sessionId: newId(), content: 'y'.repeat(60 * 1024), clientMessageId: newId() })]));
    await expect.poll(() => frames.length).toBeGreaterThan(2);
    ws.close();
    expect(await closed).not.toBe(1009);
  });
});

describe('SockJS session binding', () => {
  it('refuses frames posted to an unauthenticated session by another user agent, Origin or address', async () => {
    const owner = { 'user-agent': 'owner-browser', origin: GOOD_ORIGIN, 'x-forwarded-for': '203.0.113.7' };
    const session = await HandDrivenSockJs.open(t.url, owner);
    cleanups.push(() => session.close());
    const frame = [connectFrame(aliceToken)];
    expect((await session.post(frame, { ...owner, 'user-agent': 'attacker' })).status).toBe(403);
    expect((await session.post(frame, { ...owner, origin: 'http://localhost:1234' })).status).toBe(403);
    expect((await session.post(frame, { ...owner, 'x-forwarded-for': '198.51.100.9' })).status).toBe(403);
    expect(session.commands).toEqual([]);
    expect((await session.post(frame, owner)).status).toBe(204);
    await expect.poll(() => session.commands).toEqual(['CONNECTED']);
  });

  it('tells clients behind one proxy apart by the address the proxy reports', async () => {
    const [alice, bob] = [uniqueEmail('alice'), uniqueEmail('bob')];
    const token = await t.token(alice);
    const sessionId = (await t.call('POST', '/api/chat/init', { token, body: { toEmail: bob, intent: 'dating' } })).body.sessionId;
    // Same browser build, same proxy (loopback, trusted by default), different clients behind it.
    const victimHeaders = { 'user-agent': 'Mozilla/5.0 same-build', 'x-forwarded-for': '203.0.113.10' };
    const victim = await HandDrivenSockJs.open(t.url, victimHeaders);
    cleanups.push(() => victim.close());
    expect((await victim.post([connectFrame(token)])).status).toBe(204);
    await expect.poll(() => victim.commands).toEqual(['CONNECTED']);

    const attacker = { ...victimHeaders, 'x-forwarded-for': '203.0.113.11' };
    expect((await victim.post([sendFrame({ sessionId, content: 'forged', clientMessageId: newId() })], attacker)).status).toBe(403);
    const stream = await request(t.url, 'POST', `/ws/000/${victim.id}/xhr`, attacker);
    expect(stream.status).toBe(403);
    expect((await victim.post([sendFrame({ sessionId, content: 'genuine', clientMessageId: newId() }, 'r')])).status).toBe(204);
    await expect.poll(() => victim.commands.includes('RECEIPT')).toBe(true);
    expect((await t.call('GET', `/api/chat/${sessionId}/history`, { token })).body.messages.map((m: { content: string }) => m.content)).toEqual(['genuine']);
  });

  it('forgets a session once it has closed, so its id binds nobody afterwards', async () => {
    const first = { 'user-agent': 'first-client' };
    const session = await HandDrivenSockJs.open(t.url, first);
    expect((await session.post([connectFrame(aliceToken)])).status).toBe(204);
    await expect.poll(() => session.commands).toEqual(['CONNECTED']);
    expect((await session.post(['DISCONNECT\n\n\u0000'])).status).toBe(204);
    session.close();
    // sockjs-node closes the session after its 5 s disconnect delay; then the id is free again.
    await expect
      .poll(async () => (await request(t.url, 'POST', `/ws/000/${session.id}/xhr`, { 'user-agent': 'second-client' })).status, { timeout: 15_000, interval: 500 })
      .toBe(200);
  });
});

describe('connections that have not authenticated', () => {
  let small: TestApp;
  beforeAll(async () => {
    small = await startTestApp({ MAX_PENDING_CONNECTIONS: '12', MAX_PENDING_CONNECTIONS_PER_ADDRESS: '4' }, {}, { stomp: { connectTimeoutMs: 1500 } });
  });
  afterAll(async () => {
    await small?.close();
  });

  it('are capped per address and globally, for SockJS sessions and raw WebSockets alike, with clear refusals', async () => {
    const from = (address: string) => ({ 'user-agent': 'flood', 'x-forwarded-for': address });
    const held: Array<() => void> = [];
    try {
      for (let i = 0; i < 2; i++) {
        const session = await HandDrivenSockJs.open(small.url, from('192.0.2.1'));
        held.push(() => session.close());
      }
      for (let i = 0; i < 2; i++) {
        const ws = await upgrade(small.url, '/ws', from('192.0.2.1'));
        expect(ws.status).toBe(101);
        held.push(() => ws.socket.destroy());
      }
      const perAddress = await request(small.url, 'POST', `/ws/000/${newId().slice(0, 8)}/xhr_streaming`, from('192.0.2.1'));
      expect([perAddress.status, JSON.parse(perAddress.body).code]).toEqual([429, 'TOO_MANY_PENDING_FROM_ADDRESS']);
      const refusedUpgrade = await upgrade(small.url, '/ws', from('192.0.2.1'));
      refusedUpgrade.socket.destroy();
      expect(refusedUpgrade.status).toBe(429);
      expect(refusedUpgrade.head).toContain('TOO_MANY_PENDING_FROM_ADDRESS');

      for (let i = 0; i < 8; i++) {
        const ws = await upgrade(small.url, '/ws/websocket', from(`192.0.2.${10 + (i % 2)}`));
        expect(ws.status).toBe(101);
        held.push(() => ws.socket.destroy());
      }
      const global = await request(small.url, 'POST', `/ws/000/${newId().slice(0, 8)}/xhr_streaming`, from('192.0.2.99'));
      expect([global.status, JSON.parse(global.body).code]).toEqual([503, 'TOO_MANY_PENDING_CONNECTIONS']);
      const sockjsWs = await upgrade(small.url, `/ws/000/${newId().slice(0, 8)}/websocket`, from('192.0.2.99'));
      sockjsWs.socket.destroy();
      expect(sockjsWs.status).toBe(503);
      const metrics = (await small.call('GET', '/metrics')).body as string;
      expect(metrics).toMatch(/chat_realtime_refusals_total\{reason="pending_limit"\} [1-9]/);
      expect(metrics).toMatch(/chat_realtime_refusals_total\{reason="pending_limit_per_address"\} [1-9]/);
    } finally {
      for (const close of held) close();
    }
    // Closed sockets give their slots back.
    await expect.poll(() => upgradeStatus(small.url, '/ws', from('192.0.2.1')), { timeout: 10_000 }).toBe(101);
  });

  it('give their slot back once CONNECT succeeds', async () => {
    const from = { 'user-agent': 'auth', 'x-forwarded-for': '192.0.2.50' };
    const token = await small.token(uniqueEmail('carol'));
    const sessions = await Promise.all(Array.from({ length: 4 }, () => HandDrivenSockJs.open(small.url, from)));
    cleanups.push(() => sessions.forEach((s) => s.close()));
    expect((await request(small.url, 'POST', `/ws/000/${newId().slice(0, 8)}/xhr`, from)).status).toBe(429);
    expect((await sessions[0]!.post([connectFrame(token)])).status).toBe(204);
    await expect.poll(() => sessions[0]!.commands).toEqual(['CONNECTED']);
    expect((await request(small.url, 'POST', `/ws/000/${newId().slice(0, 8)}/xhr`, from)).status).toBe(200);
  });

  it('expire when they never authenticate: a held-open xhr-streaming session is closed after the CONNECT timeout and its slot freed', async () => {
    const from = { 'user-agent': 'idle', 'x-forwarded-for': '192.0.2.60' };
    const sessions = await Promise.all(Array.from({ length: 4 }, () => HandDrivenSockJs.open(small.url, from)));
    cleanups.push(() => sessions.forEach((s) => s.close()));
    expect((await request(small.url, 'POST', `/ws/000/${newId().slice(0, 8)}/xhr`, from)).status).toBe(429);
    await expect.poll(() => sessions.map((s) => s.commands.at(-1)), { timeout: 5000 }).toEqual(['ERROR', 'ERROR', 'ERROR', 'ERROR']);
    const started = performance.now();
    await expect.poll(async () => (await request(small.url, 'POST', `/ws/000/${newId().slice(0, 8)}/xhr`, from)).status, { timeout: 15_000, interval: 250 }).toBe(200);
    console.log(`never-authenticated SockJS sessions: slots free ${(performance.now() - started).toFixed(0)} ms after their CONNECT timeout (1.5 s)`);
  });

  it('expire when they never authenticate: silent WebSockets (raw and SockJS) are cut soon after the CONNECT timeout, not held for a close handshake', async () => {
    const from = { 'user-agent': 'silent', 'x-forwarded-for': '192.0.2.70' };
    // Hand-written upgrades that never read or answer anything, as a slowloris client would.
    const silent = await Promise.all([
      upgrade(small.url, '/ws', from),
      upgrade(small.url, '/ws/websocket', from),
      upgrade(small.url, `/ws/000/${newId().slice(0, 8)}/websocket`, from),
      upgrade(small.url, `/ws/000/${newId().slice(0, 8)}/websocket`, from),
    ]);
    cleanups.push(() => silent.forEach((s) => s.socket.destroy()));
    expect(silent.map((s) => s.status)).toEqual([101, 101, 101, 101]);
    const started = performance.now();
    expect(await upgradeStatus(small.url, '/ws', from)).toBe(429);
    await expect.poll(() => Promise.all(silent.map((s) => s.socket.closed || s.socket.destroyed)), { timeout: 10_000, interval: 250 }).toEqual([true, true, true, true]);
    await expect.poll(() => upgradeStatus(small.url, '/ws', from), { timeout: 5_000, interval: 250 }).toBe(101);
    console.log(`silent pre-CONNECT WebSockets: cut and slots free ${(performance.now() - started).toFixed(0)} ms after opening (CONNECT timeout 1.5 s)`);
  });

  it('may send 16 KiB before CONNECT, then they are cut (raw and SockJS WebSockets, SockJS xhr_send)', async () => {
    const from = { 'user-agent': 'chatty', 'x-forwarded-for': '192.0.2.80' };
    for (const path of ['/ws', `/ws/000/${newId().slice(0, 8)}/websocket`]) {
      const reply = await upgrade(small.url, path, from);
      expect(reply.status).toBe(101);
      // One unmasked-length text frame header announcing 60 KiB, then 20 KiB of it: a message in progress.
      const header = Buffer.from([0x81, 0x80 | 126, 0xf0, 0x00, 0, 0, 0, 0]);
      reply.socket.write(Buffer.concat([header, Buffer.alloc(20 * 1024, 'z')]));
      await expect.poll(() => reply.socket.closed || reply.socket.destroyed, { timeout: 5000 }).toBe(true);
    }
    const session = await HandDrivenSockJs.open(small.url, from);
    cleanups.push(() => session.close());
    expect((await session.post(['x'.repeat(10 * 1024)])).status).toBe(204);
    expect((await session.post(['x'.repeat(10 * 1024)])).status).toBe(413);
    const metrics = (await small.call('GET', '/metrics')).body as string;
    expect(metrics).toMatch(/chat_realtime_refusals_total\{reason="pre_connect_bytes"\} 2/);
  });

  it('count the client address only from a trusted proxy', async () => {
    const strict = await startTestApp({ TRUST_PROXY: 'false', MAX_PENDING_CONNECTIONS_PER_ADDRESS: '2' });
    try {
      const held = await Promise.all([1, 2].map((i) => HandDrivenSockJs.open(strict.url, { 'user-agent': 'spoof', 'x-forwarded-for': `198.51.100.${i}` })));
      const spoofed = await request(strict.url, 'POST', `/ws/000/${newId().slice(0, 8)}/xhr`, { 'user-agent': 'spoof', 'x-forwarded-for': '198.51.100.3' });
      held.forEach((s) => s.close());
      expect(spoofed.status).toBe(429);
    } finally {
      await strict.close();
    }
  });
});

describe('anonymous floods', () => {
  let flood: TestApp;
  beforeAll(async () => {
    // Production defaults for the caps (1,000 pending, 100 per address); the flood comes from 100 addresses.
    flood = await startTestApp({}, {}, { stomp: { connectTimeoutMs: 2000 } });
  });
  afterAll(async () => {
    await flood?.close();
  });

  const statuses = (replies: number[]) => replies.reduce<Record<number, number>>((acc, s) => ((acc[s] = (acc[s] ?? 0) + 1), acc), {});

  it('of raw WebSockets that never send CONNECT stay within the same cap', async () => {
    const heapBefore = heapMiB();
    const sockets: net.Socket[] = [];
    const replies: number[] = [];
    const ATTEMPTS = 3000;
    try {
      for (let i = 0; i < ATTEMPTS; i += 100) {
        const batch = await Promise.all(Array.from({ length: 100 }, (_, j) => upgrade(flood.url, '/ws', { 'x-forwarded-for': `10.8.${(i + j) % 100}.1` })));
        for (const reply of batch) {
          replies.push(reply.status);
          if (reply.status === 101) sockets.push(reply.socket);
          else reply.socket.destroy();
        }
      }
      const heapAfter = heapMiB();
      const counts = statuses(replies);
      console.log(`${ATTEMPTS} anonymous WebSocket upgrades held open: ${JSON.stringify(counts)}; heap +${(heapAfter - heapBefore).toFixed(1)} MiB (${(((heapAfter - heapBefore) * 1024) / Math.max(1, counts[101] ?? 0)).toFixed(1)} KiB per admitted socket, both ends in this process)`);
      expect(counts[101]).toBeLessThanOrEqual(1000);
      expect(counts[503]).toBeGreaterThanOrEqual(ATTEMPTS - 1000);
    } finally {
      for (const s of sockets) s.destroy();
    }
  });

  it('of real reconnecting clients, 500 at once from 50 addresses, all get through with the default caps', async () => {
    // A user per address, ten clients each: under MAX_CONNECTIONS_PER_USER (20) even if every one
    // of a user's clients is still open when the last connects. One user for all 500 measured how
    // fast clients close, not the caps this is about.
    const tokens = await Promise.all(Array.from({ length: 50 }, (_, k) => flood.token(uniqueEmail(`storm${k}`))));
    const wsUrl = `${flood.url.replace(/^http/, 'ws')}/ws`;
    const started = performance.now();
    const outcomes = await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        new Promise<string>((resolve) => {
          const ws = new WebSocket(wsUrl, ['v12.stomp'], { headers: { 'x-forwarded-for': `10.6.${i % 50}.1` } });
          ws.on('open', () => ws.send(connectFrame(tokens[i % 50]!)));
          ws.on('message', (data: Buffer) => {
            resolve(data.toString().split('\n', 1)[0]!);
            ws.close();
          });
          ws.on('unexpected-response', (_req, res) => resolve(String(res.statusCode)));
          ws.on('error', () => resolve('error'));
        }),
      ),
    );
    const counts = outcomes.reduce<Record<string, number>>((acc, o) => ((acc[o] = (acc[o] ?? 0) + 1), acc), {});
    console.log(`reconnect storm: 500 clients from 50 addresses in ${(performance.now() - started).toFixed(0)} ms: ${JSON.stringify(counts)}`);
    expect(counts).toEqual({ CONNECTED: 500 });
  });

  it('of SockJS sessions stay within the pending cap, and the memory they hold is bounded', async () => {
    const heapBefore = heapMiB();
    const started = performance.now();
    const replies: number[] = [];
    const REQUESTS = 6000;
    const CONCURRENCY = 64;
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < REQUESTS) {
          const i = next++;
          const reply = await request(flood.url, 'POST', `/ws/000/f${i.toString(36)}x${newId().slice(0, 6)}/xhr`, { 'x-forwarded-for': `10.9.${i % 100}.1` });
          replies.push(reply.status);
        }
      }),
    );
    const elapsed = performance.now() - started;
    const heapAfter = heapMiB();
    const counts = statuses(replies);
    console.log(
      `${REQUESTS} anonymous SockJS session opens in ${elapsed.toFixed(0)} ms: ${JSON.stringify(counts)}; heap ${heapBefore.toFixed(1)} → ${heapAfter.toFixed(1)} MiB ` +
        `(+${(heapAfter - heapBefore).toFixed(1)} MiB, ${(((heapAfter - heapBefore) * 1024) / Math.max(1, counts[200] ?? 0)).toFixed(1)} KiB per admitted session)`,
    );
    expect(counts[503]).toBeGreaterThan(0);
    // Sessions admitted can exceed the cap only by those that expired during the flood (5 s without a poll).
    expect(counts[200]).toBeLessThanOrEqual(1000 + Math.ceil(elapsed / 5000) * 1000);
    expect(heapAfter - heapBefore).toBeLessThan(64);
    // Unpolled sessions close after the SockJS disconnect delay and their entries go with them.
    await expect.poll(async () => (await request(flood.url, 'POST', `/ws/000/${newId().slice(0, 8)}/xhr`, {})).status, { timeout: 15_000, interval: 250 }).toBe(200);
    await expect.poll(() => heapMiB() - heapBefore, { timeout: 15_000, interval: 1000 }).toBeLessThan(16);
    console.log(`after expiry: heap ${heapMiB().toFixed(1)} MiB`);
  });

  it('of raw WebSockets each holding the most it can before CONNECT stay within the pending cap and a few tens of MB', async () => {
    const app = await startTestApp();
    // A client frame: FIN + text, masked with a zero key (so the payload goes as is), 16- or 64-bit length.
    const frameHeader = (length: number): Buffer => {
      const header = length < 65536 ? Buffer.alloc(8) : Buffer.alloc(14);
      header[0] = 0x81;
      if (length < 65536) {
        header[1] = 0x80 | 126;
        header.writeUInt16BE(length, 2);
      } else {
        header[1] = 0x80 | 127;
        header.writeBigUInt64BE(BigInt(length), 2);
      }
      return header;
    };
    // A STOMP frame whose body never ends (no NUL), then a WebSocket message that never ends: both are
    // buffered, and together they are just under the 16 KiB a connection may send before CONNECT.
    const stompPart = Buffer.concat([Buffer.from('CONNECT\naccept-version:1.2\n\n'), Buffer.alloc(8 * 1024, 'a')]);
    const payload = Buffer.concat([frameHeader(stompPart.length), stompPart, frameHeader(68 * 1024), Buffer.alloc(7 * 1024, 'b')]);
    const sockets: net.Socket[] = [];
    const statuses: Record<number, number> = {};
    /** Heap plus Buffers once repeated full collections stop changing it (ArrayBuffers are freed lazily). */
    const settled = async (): Promise<number> => {
      let last = Number.NaN;
      await expect
        .poll(() => {
          gc();
          const { heapUsed, external } = process.memoryUsage();
          const now = (heapUsed + external) / MiB;
          const still = Math.abs(now - last) < 1;
          last = now;
          return still;
        }, { timeout: 8000, interval: 300 })
        .toBe(true);
      return last;
    };
    try {
      const before = await settled();
      for (let i = 0; i < 1200; i += 100) {
        const batch = await Promise.all(Array.from({ length: 100 }, (_, j) => upgrade(app.url, '/ws', { 'x-forwarded-for': `10.7.${(i + j) % 20}.1` })));
        for (const reply of batch) {
          statuses[reply.status] = (statuses[reply.status] ?? 0) + 1;
          sockets.push(reply.socket);
          if (reply.status === 101) reply.socket.write(payload);
        }
      }
      const after = await settled();
      const admitted = statuses[101] ?? 0;
      console.log(
        `1200 pre-CONNECT WebSockets, each sending 8 KiB of a STOMP frame without its end and 7 KiB of a 68 KiB message: ${JSON.stringify(statuses)}; ` +
          `heap + Buffers ${before.toFixed(0)} → ${after.toFixed(0)} MiB (+${(after - before).toFixed(0)} MiB, ${(((after - before) * 1024) / Math.max(1, admitted)).toFixed(0)} KiB per admitted connection, client ends included)`,
      );
      expect(admitted).toBe(1000);
      expect(after - before).toBeLessThan(64);
    } finally {
      for (const s of sockets) s.destroy();
      await app.close();
    }
  }, 60_000);
});

describe('configuration', () => {
  it('reads TRUST_PROXY as a list of trusted proxies, loopback by default, and refuses "true"', () => {
    expect(loadConfig({}).trustProxy).toEqual(['loopback']);
    expect(loadConfig({ TRUST_PROXY: 'false' }).trustProxy).toEqual([]);
    expect(loadConfig({ TRUST_PROXY: '10.0.0.0/8, uniquelocal,192.0.2.1' }).trustProxy).toEqual(['10.0.0.0/8', 'uniquelocal', '192.0.2.1']);
    expect(() => loadConfig({ TRUST_PROXY: 'true' })).toThrow(/TRUST_PROXY/);
    expect(() => loadConfig({ TRUST_PROXY: 'proxy.internal' })).toThrow(/TRUST_PROXY/);
  });

  it('caps pending connections by default at 1000, 100 per address', () => {
    expect([loadConfig({}).maxPendingConnections, loadConfig({}).maxPendingConnectionsPerAddress]).toEqual([1000, 100]);
    expect(() => loadConfig({ MAX_PENDING_CONNECTIONS: '0' })).toThrow(/MAX_PENDING_CONNECTIONS/);
  });
});
