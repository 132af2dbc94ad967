/**
 * Block, report and the unread total on the web page, in Chromium: alice blocks bob from the
 * conversation header and bob's page shows his send refused; the document title carries alice's
 * unread total, live, including what she reads elsewhere.
 */
import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { newId, uniqueEmail } from '../support/test-app.js';
import { attributes, browserSuite, chromiumMissing, screenshot, texts } from './browser-harness.js';

describe.skipIf(!!chromiumMissing)(`block, report and unread total on the web page${chromiumMissing ? ` (skipped: ${chromiumMissing})` : ''}`, () => {
  const suite = browserSuite();
  const { signIn } = suite;
  async function newPage(): Promise<{ page: Page; errors: string[] }> {
    const opened = await suite.newPage();
    // Blocking asks for confirmation.
    opened.page.on('dialog', (dialog) => void dialog.accept());
    return opened;
  }

  async function chat(from: string, fromName: string, to: string) {
    const token = await suite.app.token(from, fromName);
    const sessionId = (await suite.app.call('POST', '/api/chat/init', { token, body: { toEmail: to, intent: 'dating' } })).body.sessionId as string;
    const send = async (content: string) => {
      const res = await suite.app.call('POST', '/api/chat/message', { token, body: { sessionId, content, clientMessageId: newId() } });
      expect(res.status).toBe(201);
    };
    return { token, sessionId, send };
  }

  const composer = (page: Page) => page.getByLabel('Message', { exact: true });
  const conversationButton = (page: Page, name: string) => page.locator('.conversation__button', { hasText: name });

  it('keeps the unread total in the title, live, and a block stops the peer\u2019s messages with the refusal shown to him', async () => {
    const [aliceEmail, bobEmail, carolEmail] = [uniqueEmail('alice'), uniqueEmail('bob'), uniqueEmail('carol')];
    const fromBob = await chat(bobEmail, 'Bob', aliceEmail);
    const fromCarol = await chat(carolEmail, 'Carol', aliceEmail);
    await fromBob.send('hi alice');
    await fromBob.send('are you there?');

    const alice = await newPage();
    const bob = await newPage();
    await signIn(alice.page, aliceEmail, 'Alice');
    await expect.poll(() => alice.page.title()).toBe('(2) Chat');

    // Live: a message from carol raises it.
    await fromCarol.send('hello from carol');
    await expect.poll(() => alice.page.title(), { timeout: 10_000 }).toBe('(3) Chat');

    // Opening bob's conversation reads his two.
    await conversationButton(alice.page, 'Bob').click();
    await expect.poll(() => texts(alice.page, '.message--theirs .message__text')).toEqual(['hi alice', 'are you there?']);
    await expect.poll(() => alice.page.title()).toBe('(1) Chat');

    // Carol's message read on another of alice's devices clears it here too.
    const aliceToken = await suite.app.token(aliceEmail);
    expect((await suite.app.call('POST', `/api/chat/${fromCarol.sessionId}/seen`, { token: aliceToken, body: { upToSeq: 1 } })).status).toBe(200);
    await expect.poll(() => alice.page.title(), { timeout: 10_000 }).toBe('Chat');

    // Alice blocks bob from the conversation header.
    await alice.page.getByRole('button', { name: 'Block', exact: true }).click();
    await expect.poll(() => texts(alice.page, '#block-toggle')).toEqual(['Unblock']);
    expect(await attributes(alice.page, '#composer-input', 'disabled')).toEqual(['']);
    await expect.poll(() => texts(alice.page, '.safety-status')).toEqual([expect.stringContaining('Blocked')]);
    expect(await texts(alice.page, '.conversation__button .blocked-tag')).toEqual(['blocked']);

    // Bob's send is refused, and his page says so on the message.
    await signIn(bob.page, bobEmail, 'Bob');
    await conversationButton(bob.page, 'Alice').click();
    await expect.poll(() => texts(bob.page, '.message--mine .message__text')).toEqual(['hi alice', 'are you there?']);
    await composer(bob.page).fill('please answer');
    await composer(bob.page).press('Enter');
    await expect.poll(() => texts(bob.page, '.message__error'), { timeout: 10_000 }).toEqual([expect.stringContaining('blocked')]);
    expect(await attributes(bob.page, '.message--mine', 'data-status')).toContain('failed');
    await screenshot(bob.page, 'blocked-send-refused');
    expect(await texts(alice.page, '.message__text')).toEqual(['hi alice', 'are you there?']);
    expect(await alice.page.title()).toBe('Chat');

    // Report from the header: stored with bob's latest message.
    await alice.page.getByRole('button', { name: 'Report', exact: true }).click();
    await alice.page.locator('#report-reason').fill('keeps pestering me');
    await alice.page.getByRole('button', { name: 'Send report' }).click();
    await expect.poll(() => texts(alice.page, '.safety-status')).toEqual([expect.stringContaining('Reported')]);
    await screenshot(alice.page, 'blocked-and-reported');

    // Unblocked, bob's next message arrives.
    await alice.page.getByRole('button', { name: 'Unblock', exact: true }).click();
    await expect.poll(() => texts(alice.page, '#block-toggle')).toEqual(['Block']);
    expect(await texts(alice.page, '.conversation__button .blocked-tag')).toEqual([]);
    await composer(bob.page).fill('thanks for unblocking');
    await composer(bob.page).press('Enter');
    await expect.poll(() => texts(alice.page, '.message--theirs .message__text'), { timeout: 10_000 }).toEqual(['hi alice', 'are you there?', 'thanks for unblocking']);
    expect([...alice.errors, ...bob.errors]).toEqual([]);
  }, 90_000);
});
