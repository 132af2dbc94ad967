/**
 * Presence on the embedded default (one process, PGlite, in-process bus), with real STOMP clients:
 * REST and /user/queue/presence agree, a reconnect within the debounce is no news, and only
 * participants may ask. The cluster case (two instances, a SIGKILL) is test/cluster/presence.test.ts.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, infra } from '../support/infra.js';
import { startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';

const DEBOUNCE_MS = 600;

let t: TestApp;
const clients: TestStompClient[] = [];
beforeAll(async () => {
  t = await startTestApp({ PRESENCE_DEBOUNCE_MS: String(DEBOUNCE_MS) }, {}, { stomp: { heartbeatSendMs: 100, heartbeatReceiveMs: 100 } });
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
  const [alice, bob] = [uniqueEmail('alice'), uniqueEmail('bob')];
  const [aliceToken, bobToken] = await Promise.all([t.token(alice), t.token(bob)]);
  const sessionId = (await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'dating' } })).body.sessionId as string;
  return { alice, bob, aliceToken, bobToken, sessionId };
}

describe('presence on one instance', () => {
  it('shows the peer online while connected and offline with lastSeenAt after the debounce, live and over REST', async () => {
    const p = await pair();
    const peerOf = async () => (await t.call('GET', `/api/chat/${p.sessionId}/presence`, { token: p.aliceToken })).body;
    expect(await peerOf()).toEqual({ peer: { online: false, lastSeenAt: null } });

    const alice = await connect(p.aliceToken);
    await alice.subscribe('/user/queue/presence');
    const bob = await connect(p.bobToken);
    await expect.poll(() => alice.on('/user/queue/presence').length, { timeout: 5_000 }).toBe(1);
    const online = alice.on('/user/queue/presence')[0]!;
    expect(online.body).toEqual({ email: p.bob, online: true, lastSeenAt: null });
    expect(online.headers).toMatchObject({ 'event-type': 'presence', 'session-id': p.sessionId });
    expect((await peerOf()).peer).toMatchObject({ online: true, lastSeenAt: null });

    const closedAt = Date.now();
    await bob.close();
    // Within the debounce: still online.
    expect((await peerOf()).peer.online).toBe(true);
    await expect.poll(() => alice.on('/user/queue/presence').length, { timeout: DEBOUNCE_MS + 5_000 }).toBe(2);
    const offline = alice.on('/user/queue/presence')[1]!.body as { online: boolean; lastSeenAt: string };
    expect(offline.online).toBe(false);
    // lastSeenAt is when the connection closed, not when the debounce ended.
    expect(Math.abs(Date.parse(offline.lastSeenAt) - closedAt)).toBeLessThan(DEBOUNCE_MS / 2);
    expect((await peerOf()).peer).toEqual({ online: false, lastSeenAt: offline.lastSeenAt });
    const metrics = String((await t.call('GET', '/metrics')).body);
    for (const state of ['online', 'offline']) expect(metrics).toMatch(new RegExp(`chat_presence_changes_total\\{state="${state}",via="connection"\\} [1-9]`));
  });

  it('reports nothing for a reconnect within the debounce', async () => {
    const p = await pair();
    const alice = await connect(p.aliceToken);
    await alice.subscribe('/user/queue/presence');
    const bob = await connect(p.bobToken);
    await expect.poll(() => alice.on('/user/queue/presence').length, { timeout: 5_000 }).toBe(1);

    await bob.close();
    await connect(p.bobToken);
    await new Promise((resolve) => setTimeout(resolve, DEBOUNCE_MS * 2));
    expect(alice.on('/user/queue/presence')).toHaveLength(1);
    expect((await t.call('GET', `/api/chat/${p.sessionId}/presence`, { token: p.aliceToken })).body.peer.online).toBe(true);
  });

  it('refuses someone who shares no session with them, and tells nobody else', async () => {
    const p = await pair();
    const carol = uniqueEmail('carol');
    const carolToken = await t.token(carol);
    const refused = await t.call('GET', `/api/chat/${p.sessionId}/presence`, { token: carolToken });
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ code: 'NOT_A_PARTICIPANT' });
    expect(refused.headers.get('content-type')).toMatch(/application\/problem\+json/);
    expect((await t.call('GET', `/api/chat/${p.sessionId}/presence`)).status).toBe(401);

    const watcher = await connect(carolToken);
    await watcher.subscribe('/user/queue/presence');
    const alice = await connect(p.aliceToken);
    await alice.subscribe('/user/queue/presence');
    await connect(p.bobToken);
    await expect.poll(() => alice.on('/user/queue/presence').length, { timeout: 5_000 }).toBe(1);
    expect(watcher.on('/user/queue/presence')).toHaveLength(0);
  });
});

describe.skipIf(!infra.postgresUrl)('presence after a crash, on PostgreSQL', () => {
  it('a process restarted with the same INSTANCE_ID records offline the users its crashed predecessor held', async () => {
    const database = await createTestDatabase(infra.postgresUrl!);
    const env = { DATABASE_URL: database.url, INSTANCE_ID: 'chat-1', PRESENCE_DEAD_AFTER_MS: '600000' };
    let app: TestApp | undefined;
    try {
      app = await startTestApp(env);
      const [alice, bob] = [uniqueEmail('alice'), uniqueEmail('bob')];
      const aliceToken = await app.token(alice);
      const sessionId = (await app.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'dating' } })).body.sessionId as string;
      await app.close();
      app = undefined;
      // What a SIGKILL leaves: chat-1 alive a moment ago, with bob online on it.
      const db = new pg.Client({ connectionString: database.url });
      await db.connect();
      try {
        await db.query(`INSERT INTO chat_instances (id, alive_at) VALUES ('chat-1', now() - interval '1 second')`);
        await db.query(`INSERT INTO chat_presence (email, instance_id) VALUES ($1, 'chat-1')`, [bob]);
      } finally {
        await db.end();
      }

      const restartedAt = Date.now();
      app = await startTestApp(env);
      const token = await app.token(alice);
      const { peer } = (await app.call('GET', `/api/chat/${sessionId}/presence`, { token })).body;
      expect(peer.online).toBe(false);
      expect(Math.abs(Date.parse(peer.lastSeenAt) - restartedAt)).toBeLessThan(10_000);
    } finally {
      await app?.close();
      await database.drop();
    }
  });
});
