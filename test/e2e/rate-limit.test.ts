/** A user who floods the API or the send destination is slowed down, alone, and nothing half-happens. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectStomp } from '../support/stomp-client.js';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';

const LIMIT = 5;
let t: TestApp;

beforeAll(async () => {
  t = await startTestApp({ RATE_LIMIT_PER_MINUTE: String(LIMIT) });
});
afterAll(async () => {
  await t?.close();
});

/** A session between two fresh users; `init` takes one request of the first user's budget. */
async function session(): Promise<{ aliceToken: string; bobToken: string; sessionId: string }> {
  const [alice, bob] = [uniqueEmail('alice'), uniqueEmail('bob')];
  const [aliceToken, bobToken] = await Promise.all([t.token(alice), t.token(bob)]);
  const init = await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'dating' } });
  expect(init.status).toBe(200);
  return { aliceToken, bobToken, sessionId: init.body.sessionId };
}

describe('HTTP', () => {
  it('answers 429 problem+json with Retry-After once a user spent the budget; nothing of the refused send is stored', async () => {
    const { aliceToken, bobToken, sessionId } = await session();
    const sent: string[] = [];
    for (let i = 1; i < LIMIT; i++) {
      const id = newId();
      const res = await t.call('POST', '/api/chat/message', { token: aliceToken, body: { sessionId, content: `m${i}`, clientMessageId: id } });
      expect(res.status).toBe(201);
      sent.push(id);
    }
    const refused = await t.call('POST', '/api/chat/message', { token: aliceToken, body: { sessionId, content: 'one too many', clientMessageId: newId() } });
    expect(refused.status).toBe(429);
    expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(refused.body).toMatchObject({ code: 'RATE_LIMITED', status: 429, retryAfterSeconds: expect.any(Number) });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(refused.headers.get('retry-after'))).toBeLessThanOrEqual(60);

    // Bob has his own budget, and sees exactly what was accepted.
    const history = await t.call('GET', `/api/chat/${sessionId}/history`, { token: bobToken });
    expect(history.status).toBe(200);
    expect(history.body.messages.map((m: { clientMessageId: string }) => m.clientMessageId).reverse()).toEqual(sent);
  });

  it('counts only authenticated requests: a bad token is 401, not a spent budget', async () => {
    for (let i = 0; i < LIMIT + 2; i++) expect((await t.call('GET', '/api/chat/sessions', { token: 'not.a.token' })).status).toBe(401);
    const token = await t.token(uniqueEmail('fresh'));
    expect((await t.call('GET', '/api/chat/sessions', { token })).status).toBe(200);
  });
});

describe('STOMP', () => {
  it('answers sends over the budget on /user/queue/error with RATE_LIMITED; the connection stays usable and nothing extra is stored', async () => {
    const { aliceToken, bobToken, sessionId } = await session();
    const alice = await connectStomp({ baseUrl: t.url, token: aliceToken });
    try {
      await alice.subscribe('/user/queue/ack');
      await alice.subscribe('/user/queue/error');
      const ids = Array.from({ length: LIMIT + 2 }, () => newId());
      for (const [i, id] of ids.entries()) await alice.sendWithReceipt('/app/chat.send', { sessionId, content: `s${i}`, clientMessageId: id });

      await expect.poll(() => alice.on('/user/queue/ack').length).toBe(LIMIT);
      await expect.poll(() => alice.on('/user/queue/error').length).toBe(2);
      const errors = alice.on('/user/queue/error');
      expect(errors.map((m) => m.body.code)).toEqual(['RATE_LIMITED', 'RATE_LIMITED']);
      expect(errors.map((m) => m.headers['client-message-id'])).toEqual(ids.slice(LIMIT));
      expect(alice.closed).toBe(false);

      // Typing and seen are not sends: they still go through.
      await alice.sendWithReceipt('/app/chat.typing', { sessionId, typing: true });
      expect(alice.on('/user/queue/error')).toHaveLength(2);

      const history = await t.call('GET', `/api/chat/${sessionId}/history`, { token: bobToken });
      expect(history.body.messages.map((m: { clientMessageId: string }) => m.clientMessageId).reverse()).toEqual(ids.slice(0, LIMIT));
    } finally {
      await alice.close();
    }
  });
});
