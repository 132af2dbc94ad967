/**
 * The plugin that serves the built page (src/http/web-page.ts), without a browser: cache headers,
 * a missing build, and that it leaves the rest of the service's routes alone.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import webPage from '../../src/http/web-page.js';
import { startTestApp, type TestApp } from '../support/test-app.js';

describe('web page plugin', () => {
  let root: string;
  let app: FastifyInstance;

  beforeAll(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'web-dist-'));
    app = Fastify();
    await app.register(webPage, { root });
    await app.ready();
  });
  afterEach(() => {
    rmSync(path.join(root, 'index.html'), { force: true });
    rmSync(path.join(root, 'assets'), { recursive: true, force: true });
  });
  afterAll(async () => {
    await app.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('answers / with a page saying how to build it when the build is missing', async () => {
    const res = await app.inject({ method: 'GET', url: '/' });
    expect(res.statusCode).toBe(503);
    expect(res.headers['content-type']).toContain('text/html');
    expect(res.body).toContain('npm run build:web');
  });

  it('serves index.html uncached and hashed assets cached for a year, once built (no restart)', async () => {
    mkdirSync(path.join(root, 'assets'));
    writeFileSync(path.join(root, 'index.html'), '<!doctype html><title>Chat</title>');
    writeFileSync(path.join(root, 'assets', 'index-AbC123.js'), 'console.log(1)');

    const index = await app.inject({ method: 'GET', url: '/' });
    expect(index.statusCode).toBe(200);
    expect(index.headers['content-type']).toContain('text/html');
    expect(index.headers['cache-control']).toBe('no-cache');
    expect(index.headers['content-security-policy']).toContain("connect-src 'self'");
    expect(index.body).toContain('<title>Chat</title>');
    expect((await app.inject({ method: 'GET', url: '/index.html' })).statusCode).toBe(200);

    const asset = await app.inject({ method: 'GET', url: '/assets/index-AbC123.js' });
    expect(asset.statusCode).toBe(200);
    expect(asset.headers['content-type']).toContain('javascript');
    expect(asset.headers['cache-control']).toBe('public, max-age=31536000, immutable');

    const revalidated = await app.inject({ method: 'GET', url: '/', headers: { 'if-none-match': String(index.headers.etag) } });
    expect(revalidated.statusCode).toBe(304);
  });

  it('serves nothing outside the build', async () => {
    mkdirSync(path.join(root, 'assets'));
    writeFileSync(path.join(root, 'index.html'), 'index');
    writeFileSync(path.join(path.dirname(root), `${path.basename(root)}-secret.txt`), 'TOP SECRET CONTENT');
    try {
      const escape = `${path.basename(root)}-secret.txt`;
      for (const url of [`/assets/%2e%2e/%2e%2e/${escape}`, `/assets/..%2f..%2f${escape}`, `/assets/%2e%2e%2f%2e%2e%2f${escape}`, '/assets/missing.js', '/assets/']) {
        const res = await app.inject({ method: 'GET', url });
        expect(res.statusCode, url).toBeGreaterThanOrEqual(400);
        expect(res.body, url).not.toContain('TOP SECRET CONTENT');
      }
    } finally {
      rmSync(path.join(path.dirname(root), `${path.basename(root)}-secret.txt`), { force: true });
    }
  });
});

describe('web page in the service', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  it('answers / with the page or the build hint, and unknown paths with the problem+json 404', async () => {
    const page = await fetch(`${t.url}/`);
    expect([200, 503]).toContain(page.status);
    expect(page.headers.get('content-type')).toContain('text/html');
    const missing = await t.call('GET', '/assets/no-such-file.js');
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ code: 'ROUTE_NOT_FOUND' });
    const unknown = await t.call('GET', '/no/such/route');
    expect(unknown.body).toMatchObject({ code: 'ROUTE_NOT_FOUND' });
  });
});
