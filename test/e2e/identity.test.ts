/**
 * Who a token names, with production auth (our own EC key as the identity provider): one address
 * is one user, whatever Unicode case folding would say, and only tokens this service is meant to
 * take are taken.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectStomp } from '../support/stomp-client.js';
import { newId, startTestApp, type TestApp } from '../support/test-app.js';

const ISSUER = 'https://idp.example.com';
const AUDIENCE = 'chat';

let t: TestApp;
let privateKey: KeyObject;
let sign: (claims: Record<string, unknown>, options?: { lifetimeSec?: number; issuedAgoSec?: number; issuer?: string; audience?: string }) => Promise<string>;

beforeAll(async () => {
  const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  privateKey = pair.privateKey;
  sign = (claims, options = {}) => {
    const now = Math.floor(Date.now() / 1000);
    const iat = now - (options.issuedAgoSec ?? 0);
    return new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256' })
      .setIssuer(options.issuer ?? ISSUER)
      .setAudience(options.audience ?? AUDIENCE)
      .setIssuedAt(iat)
      .setExpirationTime(iat + (options.lifetimeSec ?? 600))
      .sign(privateKey);
  };
  t = await startTestApp({ JWT_PUBLIC_KEY: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(), JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE });
});
afterAll(async () => {
  await t?.close();
});

const sessionsOf = async (token: string) => t.call('GET', '/api/chat/sessions', { token });

describe('one address, one user', () => {
  it('does not let a Kelvin-sign address (\\u212Aate@…) read kate@…\u2019s history', async () => {
    const kate = `kate.${newId().slice(0, 8)}@example.com`;
    const kateToken = await sign({ email: kate });
    const init = await t.call('POST', '/api/chat/init', { token: kateToken, body: { toEmail: `bob.${newId().slice(0, 8)}@example.com`, intent: 'dating' } });
    await t.call('POST', '/api/chat/message', { token: kateToken, body: { sessionId: init.body.sessionId, content: 'private', clientMessageId: newId() } });

    const impostor = await sign({ email: `\u212A${kate.slice(1)}` });
    const list = await sessionsOf(impostor);
    expect(list.status).toBe(401);
    expect((await t.call('GET', `/api/chat/${init.body.sessionId}/history`, { token: impostor })).status).toBe(401);
    await expect(connectStomp({ baseUrl: t.url, token: impostor })).rejects.toThrow(/UNAUTHENTICATED/);
    // The same address with ASCII capitals is the same user.
    const shouting = await sign({ email: kate.toUpperCase() });
    expect((await sessionsOf(shouting)).body.sessions.map((s: { sessionId: string }) => s.sessionId)).toEqual([init.body.sessionId]);
  });

  it('keeps addresses that differ only in non-ASCII case apart', async () => {
    const tag = newId().slice(0, 8);
    const upper = await sign({ email: `\u00C9ve.${tag}@example.com` });
    const lower = await sign({ email: `\u00E9ve.${tag}@example.com` });
    const init = await t.call('POST', '/api/chat/init', { token: upper, body: { toEmail: `bob.${tag}@example.com`, intent: 'dating' } });
    expect(init.status).toBe(200);
    expect(init.body.me.email).toBe(`\u00C9ve.${tag}@example.com`);
    expect((await sessionsOf(lower)).body.sessions).toEqual([]);
  });

  it('refuses a token whose email claim is unusable rather than falling back to sub', async () => {
    const sub = `sam.${newId().slice(0, 8)}@example.com`;
    expect((await sessionsOf(await sign({ email: 'not an email', sub }))).status).toBe(401);
    expect((await sessionsOf(await sign({ sub }))).status).toBe(200);
  });

  it('refuses a token that says its email is not verified', async () => {
    const email = `vera.${newId().slice(0, 8)}@example.com`;
    const refused = await sessionsOf(await sign({ email, email_verified: false }));
    expect(refused.status).toBe(401);
    expect(refused.body.detail).toMatch(/email_verified/);
    expect((await sessionsOf(await sign({ email, email_verified: true }))).status).toBe(200);
  });
});

describe('tokens this service is not meant to take', () => {
  const email = () => `tom.${newId().slice(0, 8)}@example.com`;

  it('refuses a token minted for another audience or by another issuer', async () => {
    expect((await sessionsOf(await sign({ email: email() }, { audience: 'another-app' }))).status).toBe(401);
    expect((await sessionsOf(await sign({ email: email() }, { issuer: 'https://elsewhere.example.com' }))).status).toBe(401);
  });

  it('refuses a token that lives longer than JWT_MAX_AGE (24 h by default), even while it is fresh', async () => {
    const long = await sessionsOf(await sign({ email: email() }, { lifetimeSec: 30 * 24 * 3600 }));
    expect(long.status).toBe(401);
    expect(long.body.detail).toMatch(/lifetime/);
    expect((await sessionsOf(await sign({ email: email() }, { lifetimeSec: 24 * 3600 }))).status).toBe(200);
  });
});
