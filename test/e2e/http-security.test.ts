/** Who may do what over HTTP: authentication, participant checks, identity in bodies, bad input. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportJWK, SignJWT } from 'jose';
import { devIssuerToken } from '../support/dev-token.js';
import { newId, startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';

let t: TestApp;
let alice: string, bob: string, carol: string;
let aliceToken: string, bobToken: string, carolToken: string;
let sessionId: string;

beforeAll(async () => {
  t = await startTestApp();
  [alice, bob, carol] = [uniqueEmail('alice'), uniqueEmail('bob'), uniqueEmail('carol')];
  [aliceToken, bobToken, carolToken] = await Promise.all([t.token(alice), t.token(bob), t.token(carol)]);
  sessionId = (await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'dating' } })).body.sessionId;
  await t.call('POST', '/api/chat/message', { token: aliceToken, body: { sessionId, content: 'private', clientMessageId: newId() } });
});
afterAll(async () => {
  await t?.close();
});

describe('a user who is not a participant', () => {
  const expectForbidden = (res: { status: number; body: { code: string } }) => {
    expect(res.status).toBe(403);
    expect(res.body.code).toBe('NOT_A_PARTICIPANT');
  };

  it('cannot read history, by either route', async () => {
    expectForbidden(await t.call('GET', `/api/chat/${sessionId}/history`, { token: carolToken }));
    expectForbidden(await t.call('GET', `/api/chat/history?chatId=${sessionId}`, { token: carolToken }));
  });

  it('cannot send, by either route, and nothing is stored', async () => {
    expectForbidden(await t.call('POST', '/api/chat/message', { token: carolToken, body: { sessionId, content: 'intrude', clientMessageId: newId() } }));
    expectForbidden(await t.call('POST', '/api/chat/send', { token: carolToken, body: { sessionId, content: 'intrude', clientMessageId: newId() } }));
    const history = await t.call('GET', `/api/chat/${sessionId}/history`, { token: aliceToken });
    expect(history.body.messages.map((m: { content: string }) => m.content)).toEqual(['private']);
  });

  it('cannot mark seen or count unread', async () => {
    expectForbidden(await t.call('POST', `/api/chat/${sessionId}/seen`, { token: carolToken, body: { upToSeq: 1 } }));
    expectForbidden(await t.call('GET', `/api/chat/${sessionId}/unread`, { token: carolToken }));
    expectForbidden(await t.call('GET', `/api/chat/unread?chatId=${sessionId}`, { token: carolToken }));
    const unread = await t.call('GET', `/api/chat/${sessionId}/unread`, { token: bobToken });
    expect(unread.body.count).toBe(1);
  });

  it('does not see the session in their list', async () => {
    const list = await t.call('GET', '/api/chat/sessions', { token: carolToken });
    expect(list.body.sessions).toEqual([]);
  });
});

describe('identity in a body or query that differs from the token', () => {
  it('is refused with 403 on init, send and unread', async () => {
    const init = await t.call('POST', '/api/chat/init', { token: carolToken, body: { fromEmail: alice, toEmail: bob, intent: 'dating' } });
    expect(init).toMatchObject({ status: 403, body: { code: 'IDENTITY_MISMATCH' } });
    const sendAs = await t.call('POST', '/api/chat/message', { token: bobToken, body: { sessionId, senderEmail: alice, content: 'spoof', clientMessageId: newId() } });
    expect(sendAs).toMatchObject({ status: 403, body: { code: 'IDENTITY_MISMATCH' } });
    const unreadAs = await t.call('GET', `/api/chat/${sessionId}/unread?readerEmail=${encodeURIComponent(alice)}`, { token: bobToken });
    expect(unreadAs).toMatchObject({ status: 403, body: { code: 'IDENTITY_MISMATCH' } });
  });
});

describe('a clientMessageId already used by another user', () => {
  it('does not return that user\u2019s message', async () => {
    const clientMessageId = newId();
    const mine = await t.call('POST', '/api/chat/message', { token: aliceToken, body: { sessionId, content: 'alice secret', clientMessageId } });
    const theirs = await t.call('POST', '/api/chat/message', { token: bobToken, body: { sessionId, content: 'bob text', clientMessageId } });
    expect(theirs.status).toBe(201);
    expect(theirs.body.messageId).not.toBe(mine.body.messageId);
    expect(theirs.body.content).toBe('bob text');
  });
});

describe('tokens', () => {
  const probe = (token?: string) => t.call('GET', '/api/chat/sessions', token === undefined ? {} : { token });
  const expect401 = async (token?: string) => {
    const res = await probe(token);
    expect(res.status).toBe(401);
    expect(res.body.code).toBe('UNAUTHENTICATED');
    expect(res.headers.get('www-authenticate')).toBe('Bearer');
  };

  it('refuses a request without a token, or with a non-Bearer scheme', async () => {
    await expect401();
    const basic = await t.call('GET', '/api/chat/sessions', { headers: { authorization: 'Basic YWxpY2U6eA==' } });
    expect(basic.status).toBe(401);
  });

  it('refuses alg none', async () => {
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    await expect401(`${b64({ alg: 'none', typ: 'JWT' })}.${b64({ email: alice, exp: Math.floor(Date.now() / 1000) + 600 })}.`);
  });

  it('refuses a token signed by another key', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const forged = await new SignJWT({ email: alice }).setProtectedHeader({ alg: 'RS256' }).setIssuer('chat-service-dev').setAudience('chat-service').setExpirationTime('5m').sign(privateKey);
    await expect401(forged);
  });

  it('refuses a token whose payload was tampered with', async () => {
    const [header, , signature] = aliceToken.split('.');
    const payload = JSON.parse(Buffer.from(aliceToken.split('.')[1]!, 'base64url').toString());
    payload.email = carol;
    await expect401(`${header}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${signature}`);
  });

  it('refuses an expired token', async () => {
    await expect401(await devIssuerToken(t, alice, -120));
  });

  it('refuses garbage', async () => {
    await expect401('not-a-jwt');
    await expect401('a.b.c');
  });
});

describe('bad input', () => {
  const post = (body: unknown) => t.call('POST', '/api/chat/message', { token: aliceToken, body });

  it('answers empty and whitespace-only content with CONTENT_EMPTY', async () => {
    for (const content of ['', '   \n']) {
      const res = await post({ sessionId, content, clientMessageId: newId() });
      expect(res).toMatchObject({ status: 400, body: { code: 'CONTENT_EMPTY' } });
    }
  });

  it('answers non-UUID ids with VALIDATION_FAILED naming the field', async () => {
    expect((await post({ sessionId: 'abc', content: 'x', clientMessageId: newId() })).body).toMatchObject({ code: 'VALIDATION_FAILED', field: 'sessionId' });
    expect((await post({ sessionId, content: 'x', clientMessageId: '123' })).body).toMatchObject({ code: 'VALIDATION_FAILED', field: 'clientMessageId' });
    expect((await t.call('GET', '/api/chat/not-a-uuid/history', { token: aliceToken })).status).toBe(400);
  });

  it('answers missing fields, wrong types and unknown fields with VALIDATION_FAILED', async () => {
    expect((await post({ sessionId, clientMessageId: newId() })).body.code).toBe('VALIDATION_FAILED');
    expect((await post({ sessionId, content: 42, clientMessageId: newId() })).body.code).toBe('VALIDATION_FAILED');
    expect((await post({ sessionId, content: 'x', clientMessageId: newId(), senderId: newId() })).body.code).toBe('VALIDATION_FAILED');
  });

  it('answers bad emails and intents', async () => {
    const bad = await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: 'not an email', intent: 'dating' } });
    expect(bad).toMatchObject({ status: 400, body: { code: 'VALIDATION_FAILED', field: 'toEmail' } });
    const badIntent = await t.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'has spaces' } });
    expect(badIntent).toMatchObject({ status: 400, body: { field: 'intent' } });
    expect((await t.call('POST', '/dev/token', { body: { email: 'nope' } })).status).toBe(400);
  });

  it('answers malformed JSON, a wrong media type and an oversized body', async () => {
    const malformed = await t.call('POST', '/api/chat/message', { token: aliceToken, rawBody: '{"sessionId":' });
    expect(malformed).toMatchObject({ status: 400, body: { code: 'MALFORMED_JSON' } });
    expect(malformed.headers.get('content-type')).toContain('application/problem+json');
    const text = await t.call('POST', '/api/chat/message', { token: aliceToken, rawBody: 'hi', headers: { 'content-type': 'text/plain' } });
    expect(text).toMatchObject({ status: 415, body: { code: 'UNSUPPORTED_MEDIA_TYPE' } });
    const huge = await post({ sessionId, content: 'x'.repeat(70_000), clientMessageId: newId() });
    expect(huge).toMatchObject({ status: 413, body: { code: 'BODY_TOO_LARGE' } });
  });

  it('answers NUL characters in content without storing anything', async () => {
    const res = await post({ sessionId, content: 'a\u0000b', clientMessageId: newId() });
    expect(res).toMatchObject({ status: 400, body: { code: 'INVALID_CONTENT' } });
  });

  it('answers an unknown session with 404 on every route', async () => {
    const ghost = newId();
    expect((await post({ sessionId: ghost, content: 'x', clientMessageId: newId() })).body.code).toBe('SESSION_NOT_FOUND');
    expect((await t.call('GET', `/api/chat/${ghost}/history`, { token: aliceToken })).status).toBe(404);
    expect((await t.call('GET', `/api/chat/${ghost}/unread`, { token: aliceToken })).status).toBe(404);
    expect((await t.call('POST', `/api/chat/${ghost}/seen`, { token: aliceToken, body: { upToSeq: 1 } })).status).toBe(404);
  });

  it('keeps serving after all of the above', async () => {
    const ok = await post({ sessionId, content: 'still here', clientMessageId: newId() });
    expect(ok.status).toBe(201);
  });
});

describe('production auth (JWT_PUBLIC_KEY / JWT_JWKS_URL)', () => {
  it('verifies ES256 tokens with iss and aud, and has no /dev/token', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const app = await startTestApp({
      JWT_PUBLIC_KEY: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      JWT_ISSUER: 'https://idp.example.com',
      JWT_AUDIENCE: 'chat',
    });
    try {
      const sign = (claims: Record<string, unknown>, iss = 'https://idp.example.com', aud = 'chat') =>
        new SignJWT(claims).setProtectedHeader({ alg: 'ES256' }).setIssuer(iss).setAudience(aud).setExpirationTime('5m').sign(privateKey);
      expect((await app.call('GET', '/api/chat/sessions', { token: await sign({ email: 'Zed@Example.com' }) })).status).toBe(200);
      expect((await app.call('GET', '/api/chat/sessions', { token: await sign({ sub: 'zed@example.com' }) })).status).toBe(200);
      expect((await app.call('GET', '/api/chat/sessions', { token: await sign({ sub: 'user-123' }) })).status).toBe(401);
      expect((await app.call('GET', '/api/chat/sessions', { token: await sign({ email: 'zed@example.com' }, 'https://evil.example.com') })).status).toBe(401);
      expect((await app.call('GET', '/api/chat/sessions', { token: await sign({ email: 'zed@example.com' }, undefined, 'other') })).status).toBe(401);
      const noExp = await new SignJWT({ email: 'zed@example.com' }).setProtectedHeader({ alg: 'ES256' }).setIssuer('https://idp.example.com').setAudience('chat').sign(privateKey);
      expect((await app.call('GET', '/api/chat/sessions', { token: noExp })).status).toBe(401);
      expect((await app.call('POST', '/dev/token', { body: { email: 'zed@example.com' } })).status).toBe(404);
    } finally {
      await app.close();
    }
  });

  it('verifies RS256 tokens against a JWKS endpoint', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    const jwks = http.createServer((_req, res) => res.setHeader('content-type', 'application/json').end(JSON.stringify({ keys: [jwk] })));
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    const app = await startTestApp({ JWT_JWKS_URL: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`, JWT_ISSUER: 'https://idp.example.com', JWT_AUDIENCE: 'chat' });
    try {
      const token = await new SignJWT({ email: 'kay@example.com' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuer('https://idp.example.com').setAudience('chat').setExpirationTime('5m').sign(privateKey);
      expect((await app.call('GET', '/api/chat/sessions', { token })).status).toBe(200);
      const hs = await new SignJWT({ email: 'kay@example.com' }).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).setExpirationTime('5m').sign(new TextEncoder().encode('x'.repeat(32)));
      expect((await app.call('GET', '/api/chat/sessions', { token: hs })).status).toBe(401);
    } finally {
      await app.close();
      jwks.close();
    }
  });
});
