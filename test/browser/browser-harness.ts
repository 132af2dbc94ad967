/**
 * Browser tests' shared parts: Debian's Chromium driven by playwright-core (never a downloaded
 * browser), the page built fresh from web/ by Vite, and small non-waiting DOM readers to poll.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect } from 'vitest';
import { startTestApp, type TestApp } from '../support/test-app.js';

export const CHROMIUM = '/usr/bin/chromium';
export const chromiumMissing = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is missing (apt-get install -y chromium; CI installs it because .ci/browser exists)`;

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const SCREENSHOTS = path.join(ROOT, 'docs', 'screenshots');

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** Builds web/ into web/dist with the project's Vite, so the tests see the page as it is now. */
export async function buildPage(): Promise<void> {
  const vite = path.join(ROOT, 'node_modules', '.bin', 'vite');
  await promisify(execFile)(vite, ['build', '--config', 'web/vite.config.ts'], { cwd: ROOT, timeout: 120_000 });
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), timeout: 10_000 });
}

/** Text of every element matching `selector`, now (no waiting, for expect.poll). */
export function texts(page: Page, selector: string): Promise<string[]> {
  return page.evaluate((sel) => [...document.querySelectorAll(sel)].map((el) => el.textContent?.trim() ?? ''), selector);
}

/** An attribute of every element matching `selector`, now. */
export function attributes(page: Page, selector: string, name: string): Promise<Array<string | null>> {
  return page.evaluate(([sel, attr]) => [...document.querySelectorAll(sel!)].map((el) => el.getAttribute(attr!)), [selector, name] as const);
}

/** The id of the focused element, now. */
export function focusedId(page: Page): Promise<string> {
  return page.evaluate(() => document.activeElement?.id ?? '');
}

/**
 * One browser suite's fixtures, registered on the enclosing describe: the page built, a test app and
 * Chromium started before its tests, every browser context closed after. `newPage` opens a page in
 * a fresh context (its own storage: another person); `signIn` signs it in with the dev issuer over
 * WebSocket and waits until it is connected.
 */
export function browserSuite(): {
  readonly app: TestApp;
  newPage(): Promise<{ page: Page; errors: string[] }>;
  signIn(page: Page, email: string, name: string): Promise<void>;
} {
  let app: TestApp | undefined;
  let browser: Browser | undefined;
  const contexts: BrowserContext[] = [];
  beforeAll(async () => {
    await buildPage();
    app = await startTestApp();
    browser = await launchChromium();
  }, 180_000);
  afterAll(async () => {
    await Promise.all(contexts.map((c) => c.close().catch(() => undefined)));
    await browser?.close();
    await app?.close();
  });
  return {
    get app(): TestApp {
      if (!app) throw new Error('the suite has not started yet');
      return app;
    },
    async newPage() {
      const context = await browser!.newContext({ viewport: { width: 1100, height: 720 } });
      contexts.push(context);
      const page = await context.newPage();
      page.setDefaultTimeout(10_000);
      const errors: string[] = [];
      page.on('pageerror', (err) => errors.push(err.message));
      return { page, errors };
    },
    async signIn(page, email, name) {
      await page.goto(`${app!.url}/?transport=websocket`);
      await expect.poll(() => focusedId(page)).toBe('sign-in-email');
      await page.getByLabel('Email', { exact: true }).fill(email);
      await page.getByLabel('Display name').fill(name);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await expect.poll(() => texts(page, '#connection'), { timeout: 10_000 }).toEqual([expect.stringMatching(/^Connected/)]);
    },
  };
}
