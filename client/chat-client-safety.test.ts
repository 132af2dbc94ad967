/**
 * ChatClient's block, report and unread totals, my reads reaching my other devices, and a token
 * refreshed on the open connection: against the real service, in-process.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { devIssuerToken } from '../test/support/dev-token.js';
import { startTestApp, type TestApp, uniqueEmail } from '../test/support/test-app.js';
import { ChatClient, type ChatClientOptions } from './chat-client.js';
import type { Receipt } from './chat-types.js';
import { tokenExpiry } from './stomp-link.js';
import { SocketPlant } from './testing/socket-plant.js';

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
  const aliceToken = await t.token(alice, 'Alice');
  const init = await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'dating' } });
  return { alice, bob, sessionId: init.body.sessionId as string };
}

function client(email: string, options: Partial<ChatClientOptions> = {}) {
  const plant = new SocketPlant();
  const c = new ChatClient({ baseUrl: t.url, tokenProvider: () => t.token(email), webSocketFactory: plant.factory, reconnect: { initialMs: 50, maxMs: 400 }, ...options });
  clients.push(c);
  const receipts: Receipt[] = [];
  const errors: string[] = [];
  c.on('receipt', (r) => receipts.push(r));
  c.on('error', (e) => errors.push(e.code));
  return { c, plant, receipts, errors };
}

async function connected(c: ChatClient): Promise<void> {
  c.connect();
  await expect.poll(() => c.state, { timeout: 10_000 }).toBe('connected');
}

describe('ChatClient safety', () => {
  it('blocks and unblocks: the peer\u2019s send is refused with PEER_BLOCKED, and goes through after the unblock', async () => {
    const p = await pair();
    const alice = client(p.alice);
    const bob = client(p.bob);
    await Promise.all([connected(alice.c), connected(bob.c)]);
    expect(await alice.c.block(p.sessionId)).toEqual({ blocked: true });
    expect((await alice.c.listSessions())[0]).toMatchObject({ sessionId: p.sessionId, blockedByMe: true });

    await expect(bob.c.send(p.sessionId, 'are you there?').acked).rejects.toMatchObject({ code: 'PEER_BLOCKED', status: 403 });
    expect(bob.errors).toContain('PEER_BLOCKED');

    expect(await alice.c.unblock(p.sessionId)).toEqual({ blocked: false });
    expect(await bob.c.send(p.sessionId, 'there you are').acked).toMatchObject({ seq: 1, content: 'there you are' });
  });

  it('reports a message and counts unread over all sessions', async () => {
    const p = await pair();
    const alice = client(p.alice);
    const bob = client(p.bob);
    await Promise.all([connected(alice.c), connected(bob.c)]);
    const nasty = await bob.c.send(p.sessionId, 'nasty').acked;
    await bob.c.send(p.sessionId, 'nastier').acked;
    expect(await alice.c.unreadCount()).toEqual({ total: 2, sessions: 1 });
    expect(await alice.c.report(p.sessionId, 'abuse', nasty.messageId)).toEqual({ reportId: expect.any(String) });
    await expect(alice.c.report(p.sessionId, '')).rejects.toMatchObject({ code: 'CONTENT_EMPTY' });
  });

  it('hears what I read on another device, once, whether or not the session is open here', async () => {
    const p = await pair();
    const alice = client(p.alice);
    const bobPhone = client(p.bob);
    const bobLaptop = client(p.bob);
    await Promise.all([connected(alice.c), connected(bobPhone.c), connected(bobLaptop.c)]);
    await bobLaptop.c.openSession(p.sessionId, { lastSeq: 0 });
    const hi = await alice.c.send(p.sessionId, 'hi').acked;

    await bobPhone.c.markSeen(p.sessionId, hi.seq);
    const mine = (r: Receipt[]) => r.filter((x) => x.readerEmail === p.bob && x.status === 'seen');
    await expect.poll(() => mine(bobLaptop.receipts).map((r) => r.upToSeq)).toEqual([hi.seq]);
    await expect.poll(() => mine(bobPhone.receipts).map((r) => r.upToSeq)).toEqual([hi.seq]);
    expect(await bobLaptop.c.unreadCount()).toEqual({ total: 0, sessions: 0 });
    // A little later, still once: the topic's copy is not reported again.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(mine(bobLaptop.receipts)).toHaveLength(1);
  });

  it('refreshes its token on the open connection before it expires, without reconnecting', async () => {
    const p = await pair();
    const lifetimes = [3, 3600];
    const issued: string[] = [];
    const alice = client(p.alice, {
      tokenProvider: async () => {
        const token = await devIssuerToken(t, p.alice, lifetimes.shift() ?? 3600);
        issued.push(token);
        return token;
      },
      tokenRefreshLeadMs: 1000,
    });
    let refreshed = 0;
    await connected(alice.c);
    alice.c.on('state', () => refreshed++);
    await new Promise((resolve) => setTimeout(resolve, 4500));
    expect(alice.c.state).toBe('connected');
    expect(alice.plant.sockets).toHaveLength(1);
    expect(refreshed).toBe(0); // no state change: never reconnected
    expect(issued).toHaveLength(2);
    expect(alice.errors).toEqual([]);
    expect((await alice.c.send(p.sessionId, 'still connected').acked).content).toBe('still connected');
  });

  it('reads a JWT\u2019s expiry, and nothing from what is not one', async () => {
    const token = await devIssuerToken(t, uniqueEmail('exp'), 120);
    expect(tokenExpiry(token)! - Date.now()).toBeGreaterThan(100_000);
    expect(tokenExpiry(token)! - Date.now()).toBeLessThanOrEqual(120_000);
    for (const bad of ['not-a-jwt', 'a.b.c', 'a.eyJ4IjoxfQ.c', '']) expect(tokenExpiry(bad)).toBeUndefined();
  });
});
