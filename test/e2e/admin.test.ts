/**
 * The admin API on the embedded default (PGlite, in-process bus and send queue, dev issuer): the dev
 * issuer mints `chat:admin` tokens, every route refuses others, and every admin call is logged at
 * INFO with the admin's identity. The cluster cases (replay delivered across instances, disconnect on
 * both) are test/cluster/admin.test.ts.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, createApp } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { connectStomp, type TestStompClient } from '../support/stomp-client.js';
import { uniqueEmail } from '../support/test-app.js';

let app: App;
const lines: Array<Record<string, unknown>> = [];
const clients: TestStompClient[] = [];

beforeAll(async () => {
  const config = { ...loadConfig({ PORT: '0', HOST: '127.0.0.1', PRESENCE_DEBOUNCE_MS: '100' }), store: { kind: 'pglite' as const, dataDir: '' } };
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  app = await createApp(config, pino({ level: 'info' }, sink));
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  await app?.stop();
});

async function call(method: string, path: string, token?: string, body?: unknown) {
  const res = await fetch(app.url + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, contentType: res.headers.get('content-type'), body: text ? JSON.parse(text) : undefined };
}

async function devToken(email: string, scope?: string): Promise<string> {
  const res = await call('POST', '/dev/token', undefined, { email, ...(scope === undefined ? {} : { scope }) });
  expect(res.status).toBe(200);
  return res.body.token as string;
}

describe('admin API, embedded', () => {
  it('the dev issuer mints scoped tokens, and refuses a scope that is not a list of scope tokens', async () => {
    expect((await call('POST', '/dev/token', undefined, { email: uniqueEmail('ops'), scope: 'chat:admin "quoted"' })).status).toBe(400);
    expect((await call('POST', '/dev/token', undefined, { email: uniqueEmail('ops'), scope: '' })).status).toBe(400);
    const token = await devToken(uniqueEmail('ops'), 'chat:admin');
    expect((await call('GET', '/admin/connections', token)).status).toBe(200);
  });

  it('refuses every route without the scope (403) and without a token (401), as problem+json', async () => {
    const plain = await devToken(uniqueEmail('user'));
    const routes: Array<[string, string]> = [
      ['GET', '/admin/outbox/dead'],
      ['POST', '/admin/outbox/dead/1/replay'],
      ['GET', '/admin/sends/dead'],
      ['POST', '/admin/sends/dead/replay'],
      ['GET', '/admin/connections'],
      ['POST', '/admin/users/bob%40example.com/disconnect'],
      ['GET', '/admin/reports'],
    ];
    for (const [method, path] of routes) {
      const anonymous = await call(method, path);
      expect(anonymous, `${method} ${path}`).toMatchObject({ status: 401, body: { code: 'UNAUTHENTICATED' } });
      const refused = await call(method, path, plain);
      expect(refused, `${method} ${path}`).toMatchObject({ status: 403, body: { code: 'FORBIDDEN_SCOPE' } });
      expect(refused.contentType).toMatch(/application\/problem\+json/);
    }
  });

  it('logs every admin call at INFO with the admin’s identity, and closes the user’s connections', async () => {
    const ops = uniqueEmail('ops');
    const token = await devToken(ops, 'openid chat:admin');
    const bob = uniqueEmail('bob');
    const client = await connectStomp({ baseUrl: app.url, token: await devToken(bob), transport: 'ws' });
    clients.push(client);
    await expect.poll(async () => (await call('GET', '/admin/connections', token)).body, { timeout: 5_000 }).toMatchObject({ connections: 1, usersOnline: 1 });

    expect(await call('GET', '/admin/outbox/dead', token)).toMatchObject({ status: 200, body: { rows: [] } });
    expect(await call('GET', '/admin/sends/dead', token)).toMatchObject({ status: 200, body: { sends: [] } });
    expect(await call('POST', '/admin/outbox/dead/12345/replay', token)).toMatchObject({ status: 404, body: { code: 'DEAD_LETTER_NOT_FOUND' } });
    expect(await call('POST', '/admin/users/not-an-email/disconnect', token)).toMatchObject({ status: 400, body: { code: 'VALIDATION_FAILED' } });
    expect(await call('POST', `/admin/users/${encodeURIComponent(bob)}/disconnect`, token)).toMatchObject({ status: 202, body: { email: bob } });
    await expect.poll(() => client.closed, { timeout: 5_000 }).toBe(true);
    expect(client.errors.map((f) => f.headers.code)).toEqual(['DISCONNECTED_BY_ADMIN']);

    const audit = lines.filter((l) => l.msg === 'admin action' && l.admin === ops);
    expect(audit.every((l) => l.level === 30)).toBe(true);
    expect(audit.filter((l) => l.action === 'connections.list').length).toBeGreaterThanOrEqual(1);
    expect(audit.filter((l) => l.action !== 'connections.list').map((l) => l.action)).toEqual(['outbox.dead.list', 'sends.dead.list', 'outbox.dead.replay', 'user.disconnect']);
    expect(audit.find((l) => l.action === 'outbox.dead.replay')).toMatchObject({ outboxId: '12345' });
    expect(audit.find((l) => l.action === 'user.disconnect')).toMatchObject({ user: bob });
    // Each instance that closed connections says who asked.
    expect(lines.find((l) => l.msg === 'connections closed by an administrator')).toMatchObject({ user: bob, admin: ops, connections: 1 });
  });

  it('lists the reports participants made, newest first, with the reported content, in pages', async () => {
    const ops = uniqueEmail('ops');
    const admin = await devToken(ops, 'chat:admin');
    const [ann, ben] = [uniqueEmail('ann'), uniqueEmail('ben')];
    const annToken = await devToken(ann);
    const sessionId = (await call('POST', '/api/chat/init', annToken, { toEmail: ben, intent: 'dating' })).body.sessionId as string;
    const benToken = await devToken(ben);
    const sent = await call('POST', '/api/chat/send', benToken, { sessionId, content: 'something nasty', clientMessageId: crypto.randomUUID() });
    expect(sent.status).toBe(201);
    const made: string[] = [];
    for (const reason of ['first', 'second', 'third']) {
      const res = await call('POST', `/api/chat/${sessionId}/report`, annToken, { messageId: sent.body.messageId, reason });
      expect(res.status).toBe(202);
      made.push(res.body.reportId as string);
    }
    // A participant cannot read the list.
    expect(await call('GET', '/admin/reports', annToken)).toMatchObject({ status: 403, body: { code: 'FORBIDDEN_SCOPE' } });

    const first = await call('GET', '/admin/reports?limit=2', admin);
    expect(first.status).toBe(200);
    const ours = (page: { reports: Array<{ reportId: string }> }) => page.reports.filter((r) => made.includes(r.reportId));
    expect(ours(first.body).map((r) => r.reportId)).toEqual([made[2], made[1]]);
    expect(first.body.reports[0]).toMatchObject({ sessionId, reporterEmail: ann, messageId: sent.body.messageId, reason: 'third', content: 'something nasty' });
    expect(first.body.next).toBe(made[1]);
    const second = await call('GET', `/admin/reports?limit=2&before=${first.body.next as string}`, admin);
    expect(ours(second.body).map((r) => r.reportId)).toEqual([made[0]]);
    expect(await call('GET', '/admin/reports?before=not-a-uuid', admin)).toMatchObject({ status: 400 });
    expect(lines.filter((l) => l.msg === 'admin action' && l.admin === ops).map((l) => l.action)).toEqual(['reports.list', 'reports.list', 'reports.list']);
  });
});
