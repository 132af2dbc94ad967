/**
 * Edits and deletes on the web chat page in a real browser: alice changes her own messages, bob
 * sees the change live and both see it after a reload.
 */
import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { uniqueEmail } from '../support/test-app.js';
import { browserSuite, chromiumMissing, focusedId, screenshot, texts } from './browser-harness.js';

if (chromiumMissing) console.warn(`\n*** SKIPPING the browser tests: ${chromiumMissing} ***\n`);

describe.skipIf(!!chromiumMissing)(`editing and deleting on the web page in Chromium${chromiumMissing ? ` (skipped: ${chromiumMissing})` : ''}`, () => {
  const suite = browserSuite();
  const { newPage, signIn } = suite;

  const composer = (page: Page) => page.getByLabel('Message', { exact: true });
  const bubble = (page: Page, text: string) => page.locator('.message--mine', { hasText: text });

  it('shows an edit and a delete to the peer live and to both after a reload', async () => {
    const [aliceEmail, bobEmail] = [uniqueEmail('alice'), uniqueEmail('bob')];
    const [alice, bob] = [await newPage(), await newPage()];
    await signIn(bob.page, bobEmail, 'Bob');
    await signIn(alice.page, aliceEmail, 'Alice');
    await alice.page.getByLabel('Their email').fill(bobEmail);
    await alice.page.getByLabel('Intent').fill('dating');
    await alice.page.getByRole('button', { name: 'Start chat' }).click();
    await expect.poll(() => focusedId(alice.page)).toBe('composer-input');
    for (const text of ['Helo Bob', 'Forget this', 'Still here']) {
      await composer(alice.page).fill(text);
      await composer(alice.page).press('Enter');
    }
    await expect.poll(() => texts(alice.page, '.message--mine .message__text')).toEqual(['Helo Bob', 'Forget this', 'Still here']);
    await bob.page.locator('.conversation__button', { hasText: 'Alice' }).click();
    await expect.poll(() => texts(bob.page, '.message--theirs .message__text')).toEqual(['Helo Bob', 'Forget this', 'Still here']);
    // Only my own messages can be changed.
    expect(await bob.page.getByRole('button', { name: 'Edit message' }).count()).toBe(0);

    // Edit: the bubble becomes a form; Enter saves.
    await bubble(alice.page, 'Helo Bob').getByRole('button', { name: 'Edit message' }).click();
    const input = alice.page.locator('.message__edit-input');
    await expect.poll(() => input.inputValue()).toBe('Helo Bob');
    await input.fill('Hello Bob');
    await input.press('Enter');
    await expect.poll(() => texts(alice.page, '.message--mine .message__text')).toEqual(['Hello Bob', 'Forget this', 'Still here']);
    await expect.poll(() => texts(bob.page, '.message--theirs .message__text')).toEqual(['Hello Bob', 'Forget this', 'Still here']);
    await expect.poll(() => texts(bob.page, '.message__edited')).toEqual(['edited']);

    // Delete: a placeholder in its place, for both.
    await bubble(alice.page, 'Forget this').getByRole('button', { name: 'Delete message' }).click();
    await expect.poll(() => texts(bob.page, '.message--theirs .message__text')).toEqual(['Hello Bob', 'Message deleted', 'Still here']);
    await expect.poll(() => texts(bob.page, '.message--deleted .message__text')).toEqual(['Message deleted']);
    await expect.poll(() => texts(alice.page, '.message--mine .message__text')).toEqual(['Hello Bob', 'Message deleted', 'Still here']);
    expect(await alice.page.locator('.message--deleted').getByRole('button').count()).toBe(0);
    await screenshot(bob.page, 'edited-and-deleted');

    for (const { page } of [alice, bob]) {
      await page.reload();
      await expect.poll(() => texts(page, '#connection'), { timeout: 10_000 }).toEqual([expect.stringMatching(/^Connected/)]);
      await expect.poll(() => texts(page, '.message__text')).toEqual(['Hello Bob', 'Message deleted', 'Still here']);
      expect(await texts(page, '.message__edited')).toEqual(['edited']);
      expect(await texts(page, '.message--deleted .message__text')).toEqual(['Message deleted']);
    }
    // The list's preview shows the change too.
    await bubble(alice.page, 'Still here').getByRole('button', { name: 'Delete message' }).click();
    await expect.poll(() => texts(bob.page, '.conversation__last')).toEqual(['Message deleted']);
    expect([...alice.errors, ...bob.errors]).toEqual([]);
  });
});
