/**
 * The web chat page end to end in a real browser: alice and bob, each in their own browser
 * context, sign in with dev tokens and chat through the service in this process — over WebSocket
 * and over SockJS xhr-streaming. Screenshots go to docs/screenshots/.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';
import { attributes, buildPage, chromiumMissing, focusedId, launchChromium, screenshot, texts } from './browser-harness.js';

if (chromiumMissing) console.warn(`\n*** SKIPPING the browser tests: ${chromiumMissing} ***\n`);

type PageTransport = 'websocket' | 'sockjs-xhr-streaming';

describe.skipIf(!!chromiumMissing)(`web chat page in Chromium${chromiumMissing ? ` (skipped: ${chromiumMissing})` : ''}`, () => {
  let t: TestApp;
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  /** Every TCP connection the service accepted, so a test can cut them all like a network failure. */
  const connections = new Set<Socket>();

  beforeAll(async () => {
    await buildPage();
    t = await startTestApp();
    t.app.http.server.on('connection', (socket: Socket) => {
      connections.add(socket);
      socket.on('close', () => connections.delete(socket));
    });
    browser = await launchChromium();
  }, 180_000);

  afterAll(async () => {
    await Promise.all(contexts.map((c) => c.close().catch(() => undefined)));
    await browser?.close();
    await t?.close();
  });

  /** A fresh browser profile (its own storage) with a page that fails the test on script errors. */
  async function newPage(): Promise<{ page: Page; errors: string[]; requests: string[] }> {
    const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    contexts.push(context);
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('request', (req) => requests.push(req.url()));
    return { page, errors, requests };
  }

  async function signIn(page: Page, email: string, name: string, transport: PageTransport): Promise<void> {
    await page.goto(`${t.url}/?transport=${transport}`);
    await expect.poll(() => focusedId(page)).toBe('sign-in-email');
    await page.getByLabel('Email', { exact: true }).fill(email);
    await page.getByLabel('Display name').fill(name);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => texts(page, '#connection'), { timeout: 10_000 }).toEqual([expect.stringMatching(/^Connected/)]);
  }

  const composer = (page: Page) => page.getByLabel('Message', { exact: true });
  const conversationButton = (page: Page, name: string) => page.locator('.conversation__button', { hasText: name });

  describe.each<PageTransport>(['websocket', 'sockjs-xhr-streaming'])('over %s', (transport) => {
    it('lets alice and bob chat both ways, with unread badges, typing, seen ticks and history after a reload', async () => {
      const aliceEmail = uniqueEmail('alice');
      const bobEmail = uniqueEmail('bob');
      const alice = await newPage();
      const bob = await newPage();
      await signIn(bob.page, bobEmail, 'Bob', transport);
      await signIn(alice.page, aliceEmail, 'Alice', transport);
      if (transport === 'websocket') await screenshot(alice.page, 'signed-in-empty');
      expect(await texts(alice.page, '#connection')).toEqual([transport === 'websocket' ? 'Connected · WebSocket' : 'Connected · SockJS xhr-streaming']);

      // Alice starts a chat by email and intent; focus lands in the composer.
      await alice.page.getByLabel('Their email').fill(bobEmail);
      await alice.page.getByLabel('Intent').fill('dating');
      await alice.page.getByRole('button', { name: 'Start chat' }).click();
      // Bob has no profile for this intent yet, so the directory names him by his email.
      await expect.poll(() => texts(alice.page, '#conversation-title')).toEqual([bobEmail]);
      await expect.poll(() => focusedId(alice.page)).toBe('composer-input');

      // Enter sends.
      await composer(alice.page).fill('Hi Bob!');
      await composer(alice.page).press('Enter');
      await expect.poll(() => texts(alice.page, '.message--mine .message__text')).toEqual(['Hi Bob!']);
      expect(await composer(alice.page).inputValue()).toBe('');

      // Bob's list shows the new conversation with an unread badge, which clears when he opens it.
      await expect.poll(() => texts(bob.page, '.conversation__button .badge'), { timeout: 10_000 }).toEqual(['1']);
      expect(await texts(bob.page, '.conversation__name')).toEqual(['Alice']);
      expect(await texts(bob.page, '.conversation__last')).toEqual(['Hi Bob!']);
      await screenshot(bob.page, `${transport}-bob-unread`);
      await conversationButton(bob.page, 'Alice').click();
      await expect.poll(() => texts(bob.page, '.message--theirs .message__text')).toEqual(['Hi Bob!']);
      await expect.poll(() => texts(bob.page, '.conversation__button .badge')).toEqual([]);
      await expect.poll(() => focusedId(bob.page)).toBe('composer-input');

      // Alice sees her message seen.
      await expect.poll(() => attributes(alice.page, '.message--mine', 'data-status'), { timeout: 10_000 }).toEqual(['seen']);

      // Bob types: alice sees it; then he sends and she receives.
      await composer(bob.page).pressSequentially('Hello Al');
      await expect.poll(() => texts(alice.page, '.typing')).toEqual([`${bobEmail} is typing…`]);
      await composer(bob.page).pressSequentially('ice');
      await composer(bob.page).press('Enter');
      await expect.poll(() => texts(alice.page, '.message--theirs .message__text')).toEqual(['Hello Alice']);
      await expect.poll(() => texts(alice.page, '.typing')).toEqual(['']);
      await expect.poll(() => attributes(bob.page, '.message--mine', 'data-status'), { timeout: 10_000 }).toEqual(['seen']);
      await screenshot(alice.page, `${transport}-alice-conversation`);
      await screenshot(bob.page, `${transport}-bob-conversation`);

      // A reload keeps alice signed in, reopens the conversation and shows its history.
      await alice.page.reload();
      await expect.poll(() => texts(alice.page, '#connection'), { timeout: 10_000 }).toEqual([expect.stringMatching(/^Connected/)]);
      await expect.poll(() => texts(alice.page, '.message__text')).toEqual(['Hi Bob!', 'Hello Alice']);
      expect(await attributes(alice.page, '.message--mine', 'data-status')).toEqual(['seen']);

      // And it is live again: bob → alice after the reload.
      await composer(bob.page).fill('Still there?');
      await bob.page.getByRole('button', { name: 'Send', exact: true }).click();
      await expect.poll(() => texts(alice.page, '.message__text')).toEqual(['Hi Bob!', 'Hello Alice', 'Still there?']);

      if (transport === 'sockjs-xhr-streaming') {
        expect(alice.requests.some((url) => url.includes('/xhr_streaming'))).toBe(true);
        expect(alice.requests.some((url) => url.startsWith(t.url.replace('http', 'ws')))).toBe(false);
      }
      expect([...alice.errors, ...bob.errors]).toEqual([]);
    }, 90_000);
  });

  it('shows it is reconnecting when the connection drops, and catches up on what it missed', async () => {
    const aliceEmail = uniqueEmail('alice');
    const bobEmail = uniqueEmail('bob');
    const alice = await newPage();
    await signIn(alice.page, aliceEmail, 'Alice', 'websocket');
    const bobToken = await t.token(bobEmail, 'Bob');
    const sessionId = (await t.call('POST', '/api/chat/init', { token: bobToken, body: { toEmail: aliceEmail, intent: 'dating' } })).body.sessionId as string;
    const send = (content: string) => t.call('POST', '/api/chat/message', { token: bobToken, body: { sessionId, content, clientMessageId: crypto.randomUUID() } });
    await send('first');
    await expect.poll(() => texts(alice.page, '.conversation__button .badge'), { timeout: 10_000 }).toEqual(['1']);
    await conversationButton(alice.page, 'Bob').click();
    await expect.poll(() => texts(alice.page, '.message__text')).toEqual(['first']);

    // Refuse new connections and cut the open ones, as a network failure would.
    const refuse = (socket: Socket) => socket.destroy();
    t.app.http.server.prependListener('connection', refuse);
    for (const socket of connections) socket.destroy();
    await expect.poll(() => texts(alice.page, '#connection'), { timeout: 10_000 }).toEqual(['Reconnecting…']);
    await expect.poll(() => texts(alice.page, '#banner')).toEqual([expect.stringContaining('reconnecting')]);
    await screenshot(alice.page, 'reconnecting');

    t.app.http.server.off('connection', refuse);
    await send('while you were away'); // the harness's own call goes through now, before the page is back
    await expect.poll(() => texts(alice.page, '#connection'), { timeout: 20_000 }).toEqual(['Connected · WebSocket']);
    await expect.poll(() => texts(alice.page, '.message__text'), { timeout: 10_000 }).toEqual(['first', 'while you were away']);
    expect(await alice.page.isHidden('#banner')).toBe(true);
    // Connection trouble reported during the outage is gone once connected again.
    await expect.poll(() => texts(alice.page, '#errors .error')).toEqual([]);
    expect(alice.errors).toEqual([]);
  }, 60_000);

  it('pages back through history as the user scrolls up, and switches transport without losing the conversation', async () => {
    const aliceEmail = uniqueEmail('alice');
    const bobEmail = uniqueEmail('bob');
    const alice = await newPage();
    await signIn(alice.page, aliceEmail, 'Alice', 'websocket');
    const bobToken = await t.token(bobEmail, 'Bob');
    const sessionId = (await t.call('POST', '/api/chat/init', { token: bobToken, body: { toEmail: aliceEmail, intent: 'dating' } })).body.sessionId as string;
    const all = Array.from({ length: 45 }, (_, i) => `message ${i + 1}`);
    for (const content of all) await t.call('POST', '/api/chat/message', { token: bobToken, body: { sessionId, content, clientMessageId: crypto.randomUUID() } });

    await expect.poll(() => texts(alice.page, '.conversation__button .badge'), { timeout: 10_000 }).toEqual(['45']);
    await conversationButton(alice.page, 'Bob').click();
    await expect.poll(() => texts(alice.page, '.message__text')).toEqual(all.slice(15)); // the newest page
    await alice.page.locator('.messages').evaluate((el) => el.scrollTo({ top: 0 }));
    await expect.poll(() => texts(alice.page, '.message__text')).toEqual(all);
    await expect.poll(() => texts(alice.page, '.load-older-status')).toEqual(['This is the start of the conversation.']);
    await screenshot(alice.page, 'history-scrolled-back');

    await alice.page.getByLabel('Transport').selectOption('sockjs-xhr-streaming');
    await expect.poll(() => texts(alice.page, '#connection'), { timeout: 10_000 }).toEqual(['Connected · SockJS xhr-streaming']);
    await expect.poll(() => texts(alice.page, '.message__text')).toEqual(all.slice(15));
    await composer(alice.page).fill('got them all');
    await composer(alice.page).press('Enter');
    await expect.poll(() => attributes(alice.page, '.message--mine', 'data-status')).toEqual(['sent']);
    expect(alice.requests.some((url) => url.includes('/xhr_streaming'))).toBe(true);
    expect(alice.errors).toEqual([]);
  }, 60_000);

  it('says clearly when a pasted token is refused', async () => {
    const { page } = await newPage();
    await page.goto(t.url);
    await page.getByLabel('Token', { exact: true }).fill('not-a-token');
    await page.getByRole('button', { name: 'Use this token' }).click();
    await expect.poll(() => texts(page, '#sign-in-error')).toEqual([expect.stringContaining('The service did not accept that token')]);
    await expect.poll(() => focusedId(page)).toBe('sign-in-token');
    await screenshot(page, 'sign-in-token-refused');
  });

  it('shows the peer’s presence with a dot and “last seen”, in the header and the list, live', async () => {
    const [aliceEmail, bobEmail] = [uniqueEmail('alice'), uniqueEmail('bob')];
    const alice = await newPage();
    const bob = await newPage();
    await signIn(bob.page, bobEmail, 'Bob', 'websocket');
    await signIn(alice.page, aliceEmail, 'Alice', 'websocket');
    await alice.page.getByLabel('Their email').fill(bobEmail);
    await alice.page.getByLabel('Intent').fill('dating');
    await alice.page.getByRole('button', { name: 'Start chat' }).click();
    await expect.poll(() => texts(alice.page, '#conversation-title')).toEqual([bobEmail]);

    // Bob is connected: online, in the header and on his row.
    await expect.poll(() => texts(alice.page, '.conversation-pane__presence'), { timeout: 10_000 }).toEqual(['Online']);
    await expect.poll(() => attributes(alice.page, '.conversation__button .presence-dot', 'data-presence')).toEqual(['online']);
    expect(await texts(alice.page, '.conversation__presence')).toEqual(['Online']);

    // Bob leaves: after the debounce (5 s by default) alice sees when he was last seen, without a reload.
    await bob.page.context().close();
    await expect.poll(() => texts(alice.page, '.conversation-pane__presence'), { timeout: 15_000 }).toEqual([expect.stringMatching(/^Last seen \S/)]);
    await expect.poll(() => attributes(alice.page, '.conversation__button .presence-dot', 'data-presence')).toEqual(['offline']);
    expect(await attributes(alice.page, '.conversation-pane__presence .presence-dot', 'aria-label')).toEqual([expect.stringMatching(/^Last seen /)]);
    expect(alice.errors).toEqual([]);
  });

  it('signs in with a pasted token', async () => {
    const email = uniqueEmail('carol');
    const token = await t.token(email, 'Carol');
    const { page, errors } = await newPage();
    await page.goto(t.url);
    await page.getByLabel('Token', { exact: true }).fill(token);
    await page.getByRole('button', { name: 'Use this token' }).click();
    await expect.poll(() => texts(page, '#connection'), { timeout: 10_000 }).toEqual(['Connected · WebSocket']);
    await expect.poll(() => texts(page, '#who')).toEqual([email]);
    expect(errors).toEqual([]);
  });
});
