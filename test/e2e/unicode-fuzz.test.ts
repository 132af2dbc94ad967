/**
 * Fuzz the HTTP JSON bodies, queries and STOMP SEND frames with random Unicode: lone surrogates,
 * NUL, controls, bidi marks, zero-width characters, astral characters. Whatever arrives, the answer
 * is never a 500 (or an INTERNAL error frame), and every stored message is exactly the text that
 * was accepted: nothing PostgreSQL would refuse, nothing it would silently alter. Run on the
 * embedded default and on the machine's PostgreSQL; counts are bounded.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isWellFormedText } from '../../src/chat/text-rules.js';
import { infra } from '../support/infra.js';
import { openRawStomp } from '../support/raw-stomp.js';
import { newId, startTestApp, startTestAppOnPostgres, type TestApp, uniqueEmail } from '../support/test-app.js';

const NASTY = ['\u0000', '\uD800', '\uDBFF', '\uDC00', '\uDFFF', '\u202E', '\u200F', '\u200B', '\uFEFF', '\u0007', '\u001B', '\u2028', '\u0301', '\u212A', '\uFFFD', '\u{1F600}', '\u{10FFFF}', 'a', ' ', '"', '\\'];
const unit = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  // Any UTF-16 code unit, so lone surrogates come up on their own too.
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }).map((u) => String.fromCharCode(u)) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }) },
);
const text = (maxLength: number) => fc.string({ unit, maxLength });
/** Mostly plausible values with random Unicode spliced in, so requests get past the first check. */
const spliced = (valid: () => string) => fc.oneof(fc.constant(null).map(() => valid()), text(40), fc.tuple(text(4), text(4)).map(([a, b]) => a + valid() + b));

const RUNS = 120;

/** Percent-encodes the UTF-8 bytes a client would send (a lone surrogate goes as U+FFFD's bytes). */
const pct = (value: string): string => [...Buffer.from(value, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');

function describeFuzz(name: string, open: () => Promise<TestApp>): void {
  describe(`random Unicode on ${name}`, () => {
    let t: TestApp;
    let alice: string;
    let token: string;
    let sessionId: string;
    const accepted = new Set<string>();

    beforeAll(async () => {
      t = await open();
      alice = uniqueEmail('alice');
      token = await t.token(alice);
      sessionId = (await t.call('POST', '/api/chat/init', { token, body: { toEmail: uniqueEmail('bob'), intent: 'dating' } })).body.sessionId;
    });
    afterAll(async () => {
      await t?.close();
    });

    it('never answers an HTTP request with a 500, and stores accepted content unchanged', async () => {
      const statuses = new Map<number, number>();
      const count = (status: number) => statuses.set(status, (statuses.get(status) ?? 0) + 1);
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            content: spliced(() => 'hello'),
            clientMessageId: spliced(() => newId()),
            email: spliced(() => uniqueEmail('bob')),
            intent: spliced(() => 'dating'),
            displayName: text(20),
          }),
          async (input) => {
            const send = await t.call('POST', '/api/chat/message', { token, body: { sessionId, content: input.content, clientMessageId: input.clientMessageId } });
            count(send.status);
            expect(send.status, JSON.stringify(send.body)).toBeLessThan(500);
            if (send.status === 201) {
              expect(send.body.content).toBe(input.content);
              accepted.add(input.content);
            }
            const init = await t.call('POST', '/api/chat/init', { token, body: { toEmail: input.email, intent: input.intent } });
            count(init.status);
            expect(init.status, JSON.stringify(init.body)).toBeLessThan(500);
            const query = await t.call('GET', `/api/chat/${sessionId}/unread?readerEmail=${pct(input.email)}&intent=${pct(input.intent)}`, { token });
            count(query.status);
            expect(query.status, JSON.stringify(query.body)).toBeLessThan(500);
            const dev = await t.call('POST', '/dev/token', { body: { email: input.email, displayName: input.displayName } });
            count(dev.status);
            expect(dev.status, JSON.stringify(dev.body)).toBeLessThan(500);
            if (dev.status === 200) expect((await t.call('GET', '/api/chat/sessions', { token: dev.body.token })).status).toBe(200);
          },
        ),
        { numRuns: RUNS },
      );
      console.log(`[unicode fuzz, HTTP, ${name}] ${RUNS} runs; statuses: ${[...statuses].sort().map(([s, n]) => `${s}×${n}`).join(' ')}; ${accepted.size} distinct contents stored`);
    });

    it('never ends a STOMP connection with INTERNAL, and stores accepted content unchanged', async () => {
      const raw = await openRawStomp(t.url);
      try {
        raw.send('CONNECT', [['accept-version', '1.2'], ['host', 'chat'], ['Authorization', `Bearer ${token}`]]);
        await expect.poll(() => raw.frames.some((f) => f.command === 'CONNECTED')).toBe(true);
        raw.send('SUBSCRIBE', [['id', 'e'], ['destination', '/user/queue/error']]);
        let receipts = 0;
        await fc.assert(
          fc.asyncProperty(fc.record({ content: spliced(() => 'hi'), header: text(12).map((h) => h.replaceAll('\u0000', '')), id: spliced(() => newId()) }), async (input) => {
            const receipt = `r${++receipts}`;
            raw.send('SEND', [['destination', '/app/chat.send'], ['x-note', input.header], ['receipt', receipt]], JSON.stringify({ sessionId, content: input.content, clientMessageId: input.id }));
            await expect.poll(() => raw.frames.some((f) => f.command === 'ERROR' || f.headers.some(([k, v]) => (k === 'receipt-id') && v === receipt))).toBe(true);
            expect(raw.frames.filter((f) => f.command === 'ERROR')).toEqual([]);
            if (isWellFormedText(input.content)) accepted.add(input.content);
          }),
          { numRuns: RUNS },
        );
        const errors = raw.frames.filter((f) => f.command === 'MESSAGE').map((f) => JSON.parse(f.body.toString('utf8')) as { code: string });
        expect(errors.filter((e) => e.code === 'INTERNAL')).toEqual([]);
        console.log(`[unicode fuzz, STOMP, ${name}] ${RUNS} SEND frames; refusals: ${[...new Set(errors.map((e) => e.code))].join(', ')}`);
      } finally {
        raw.close();
      }
      // Every stored message is text that was sent and accepted, byte for byte.
      const history = await t.call('GET', `/api/chat/${sessionId}/history?limit=200`, { token });
      expect(history.status).toBe(200);
      for (const m of history.body.messages as Array<{ content: string }>) {
        expect(isWellFormedText(m.content)).toBe(true);
        expect(accepted.has(m.content), JSON.stringify(m.content)).toBe(true);
      }
      expect((await t.call('GET', '/health/live')).status).toBe(200);
    });
  });
}

describeFuzz('the embedded default', () => startTestApp({ RATE_LIMIT_PER_MINUTE: '0' }));

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  describeFuzz('PostgreSQL', () => startTestAppOnPostgres(infra.postgresUrl!, { RATE_LIMIT_PER_MINUTE: '0' }));
});
