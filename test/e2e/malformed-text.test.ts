/**
 * Text that is not well-formed Unicode (a lone surrogate, NUL) is refused where it enters, in every
 * field, and one user's bad send never fails or slows the sends of others that share its group
 * commit. Run on the embedded default and on the machine's PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { infra } from '../support/infra.js';
import { connectStomp } from '../support/stomp-client.js';
import { newId, startTestApp, startTestAppOnPostgres, type TestApp, uniqueEmail } from '../support/test-app.js';

const LONE_SURROGATE = 'bad \uD800 text';

/** The mean of two rounds' latency figures. */
const meanOf = (x: { p50: number; max: number }, y: { p50: number; max: number }) => ({ p50: (x.p50 + y.p50) / 2, max: (x.max + y.max) / 2 });

function describeOn(name: string, open: () => Promise<TestApp>): void {
  describe(`malformed text on ${name}`, () => {
    let t: TestApp;
    let alice: string;
    let aliceToken: string;
    let sessionId: string;

    beforeAll(async () => {
      t = await open();
      alice = uniqueEmail('alice');
      aliceToken = await t.token(alice);
      sessionId = (await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: uniqueEmail('bob'), intent: 'dating' } })).body.sessionId;
    });
    afterAll(async () => {
      await t?.close();
    });

    /** n senders, each in a session of their own, sending `perSender` messages at once. */
    async function bystanders(n: number) {
      return Promise.all(
        Array.from({ length: n }, async () => {
          const token = await t.token(uniqueEmail('by'));
          const init = await t.call('POST', '/api/chat/init', { token, body: { toEmail: uniqueEmail('peer'), intent: 'dating' } });
          return { token, sessionId: init.body.sessionId as string };
        }),
      );
    }

    it('refuses a poison send with INVALID_CONTENT while 50 concurrent bystander sends all succeed, no slower than without it', async () => {
      const senders = await bystanders(10);
      const round = async (withPoison: boolean) => {
        const started = performance.now();
        const sends = senders.flatMap((s) =>
          Array.from({ length: 5 }, async (_, i) => {
            const res = await t.call('POST', '/api/chat/message', { token: s.token, body: { sessionId: s.sessionId, content: `hello ${i}`, clientMessageId: newId() } });
            return { status: res.status, ms: performance.now() - started };
          }),
        );
        const poison = withPoison
          ? Array.from({ length: 5 }, () => t.call('POST', '/api/chat/message', { token: aliceToken, body: { sessionId, content: LONE_SURROGATE, clientMessageId: newId() } }))
          : [];
        const [bystanderResults, poisonResults] = await Promise.all([Promise.all(sends), Promise.all(poison)]);
        const ms = bystanderResults.map((r) => r.ms).sort((a, b) => a - b);
        return { statuses: bystanderResults.map((r) => r.status), poison: poisonResults, p50: ms[Math.floor(ms.length / 2)]!, max: ms.at(-1)! };
      };
      // Each round starts with the outbox drained, so the relay's work for the last round is not
      // charged to the next; rounds alternate so a slow moment of the machine hits both kinds.
      const settled = () =>
        expect.poll(async () => /chat_outbox_rows\{state="pending"\} (\d+)/.exec((await t.call('GET', '/metrics')).body)?.[1], { timeout: 10_000 }).toBe('0');
      const rounds: Array<Awaited<ReturnType<typeof round>>> = [];
      for (const withPoison of [false, false, true, false, true]) {
        await settled();
        rounds.push(await round(withPoison));
      }
      const [, clean, poisoned] = [rounds[0]!, meanOf(rounds[1]!, rounds[3]!), meanOf(rounds[2]!, rounds[4]!)];
      console.log(`[poison over REST, ${name}] 50 bystander sends: clean p50 ${clean.p50.toFixed(1)} ms max ${clean.max.toFixed(1)} ms; with poison p50 ${poisoned.p50.toFixed(1)} ms max ${poisoned.max.toFixed(1)} ms`);
      for (const r of rounds) expect(r.statuses).toEqual(Array(50).fill(201));
      for (const res of [...rounds[2]!.poison, ...rounds[4]!.poison]) expect(res).toMatchObject({ status: 400, body: { code: 'INVALID_CONTENT', field: 'content' } });
      // Within 2× of the clean run; the few milliseconds of slack absorb scheduler noise on a busy machine.
      expect(poisoned.p50).toBeLessThanOrEqual(2 * clean.p50 + 25);
      const history = await t.call('GET', `/api/chat/${sessionId}/history`, { token: aliceToken });
      expect(history.body.messages).toEqual([]);
    });

    it.each([
      ['content', () => ({ content: LONE_SURROGATE })],
      ['content', () => ({ content: 'nul \u0000 inside' })],
      ['clientMessageId', () => ({ clientMessageId: `${newId().slice(0, 35)}\uDC00` })],
      ['senderEmail', () => ({ senderEmail: 'alice\u0000@example.com' })],
      ['intent', () => ({ intent: 'dat\uD83Ding' })],
    ])('refuses a send whose %s is not well-formed, with 400 INVALID_CONTENT naming it', async (field, override) => {
      const res = await t.call('POST', '/api/chat/message', { token: aliceToken, body: { sessionId, content: 'ok', clientMessageId: newId(), ...override() } });
      expect(res).toMatchObject({ status: 400, body: { code: 'INVALID_CONTENT', field } });
    });

    it('refuses malformed emails and intents on init, in queries and on /dev/token, never with a 500', async () => {
      const cases = [
        await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: 'bo\uD800b@example.com', intent: 'dating' } }),
        await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: 'bob\u0000@example.com', intent: 'dating' } }),
        await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: uniqueEmail('bob'), intent: 'dating\u0000' } }),
        await t.call('GET', `/api/chat/${sessionId}/unread?readerEmail=${encodeURIComponent(alice)}%00`, { token: aliceToken }),
        await t.call('GET', `/api/chat/${sessionId}%00/history`, { token: aliceToken }),
        await t.call('POST', '/dev/token', { body: { email: 'eve\u0000@example.com' } }),
        await t.call('POST', '/dev/token', { body: { email: uniqueEmail('eve'), displayName: 'Eve \uDBFF' } }),
      ];
      for (const res of cases) {
        expect(res.status).toBe(400);
        expect(res.body.code).toBe('INVALID_CONTENT');
      }
    });

    it('answers a token whose claims hold NUL or a lone surrogate with 401, never a 500', async () => {
      const issuer = t.app.devIssuer!;
      const nulEmail = (await issuer.issue('mallory\u0000@example.com')).token;
      const badName = (await issuer.issue(uniqueEmail('mallory'), 'Mal\uD800')).token;
      for (const token of [nulEmail, badName]) {
        for (const res of [await t.call('GET', '/api/chat/sessions', { token }), await t.call('POST', '/api/chat/init', { token, body: { toEmail: uniqueEmail('x'), intent: 'dating' } })]) {
          expect(res.status).toBe(401);
          expect(res.body.code).toBe('UNAUTHENTICATED');
        }
      }
    });

    it('refuses content that shows nothing: white space, zero-width and filler characters only', async () => {
      for (const content of ['\u200B\u200B', ' \u00A0\u3000 ', '\u2060\uFEFF', '\u3164', '\u2800', '\u202E\u200F', '\u0301']) {
        const res = await t.call('POST', '/api/chat/message', { token: aliceToken, body: { sessionId, content, clientMessageId: newId() } });
        expect(res.status, JSON.stringify(content)).toBe(400);
        expect(res.body.code).toBe('CONTENT_EMPTY');
      }
      for (const content of ['\u2764\uFE0F', '\u05E9\u05DC\u05D5\u05DD \u200F!', 'e\u0301', '\u{1F1EB}\u{1F1F7}']) {
        const res = await t.call('POST', '/api/chat/message', { token: aliceToken, body: { sessionId, content, clientMessageId: newId() } });
        expect(res.status, JSON.stringify(content)).toBe(201);
        expect(res.body.content).toBe(content);
      }
    });

    it('answers a malformed STOMP send on /user/queue/error keyed by its clientMessageId, and the connection stays usable', async () => {
      const client = await connectStomp({ baseUrl: t.url, token: aliceToken });
      try {
        await client.subscribe('/user/queue/error');
        await client.subscribe('/user/queue/ack');
        const bad = newId();
        await client.sendWithReceipt('/app/chat.send', { sessionId, content: LONE_SURROGATE, clientMessageId: bad });
        await expect.poll(() => client.on('/user/queue/error').length).toBe(1);
        expect(client.on('/user/queue/error')[0]!.body).toMatchObject({ code: 'INVALID_CONTENT', field: 'content', clientMessageId: bad });
        const good = newId();
        await client.sendWithReceipt('/app/chat.send', { sessionId, content: 'still here', clientMessageId: good });
        await expect.poll(() => client.on('/user/queue/ack').map((m) => m.body.clientMessageId)).toContain(good);
      } finally {
        await client.close();
      }
    });
  });
}

describeOn('the embedded default', () => startTestApp());

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  describeOn('PostgreSQL', () => startTestAppOnPostgres(infra.postgresUrl!, { RATE_LIMIT_PER_MINUTE: '0' }));
});
