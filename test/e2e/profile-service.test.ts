/** The service wired to an external profile service (the reference implementation, over real HTTP). */
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProfileService, type ProfileService } from '../../tools/profile-service/profile-service.js';
import { newId, startTestApp, type TestApp } from '../support/test-app.js';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
let profiles: ProfileService;
let t: TestApp;

beforeAll(async () => {
  profiles = await startProfileService({
    port: 0,
    host: '127.0.0.1',
    publicKey,
    profiles: [
      { email: 'ann@example.com', intent: 'dating', displayName: 'Ann from FlairBit' },
      { email: 'ben@example.com', intent: 'dating', displayName: 'Ben from FlairBit' },
      { email: 'cy@example.com', intent: 'dating', displayName: 'Cy' },
    ],
  });
  t = await startTestApp({
    PROFILE_SERVICE_URL: profiles.url,
    SERVICE_JWT_PRIVATE_KEY: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  });
});
afterAll(async () => {
  await t?.close();
  await profiles?.close();
});

describe('chat with PROFILE_SERVICE_URL', () => {
  it('resolves both participants through the profile service and shows its display names', async () => {
    const token = await t.token('ann@example.com', 'Name From Token');
    const init = await t.call('POST', '/api/chat/init', { token, body: { toEmail: 'ben@example.com', intent: 'dating' } });
    expect(init.status).toBe(200);
    expect(init.body).toMatchObject({ me: { displayName: 'Ann from FlairBit' }, peer: { displayName: 'Ben from FlairBit', email: 'ben@example.com' } });
    const sent = await t.call('POST', '/api/chat/message', { token, body: { sessionId: init.body.sessionId, content: 'hi', clientMessageId: newId() } });
    expect(sent.body.senderDisplayName).toBe('Ann from FlairBit');
  });

  it('answers an unknown profile with 404 PROFILE_NOT_FOUND', async () => {
    const token = await t.token('ann@example.com');
    const res = await t.call('POST', '/api/chat/init', { token, body: { toEmail: 'nobody@example.com', intent: 'dating' } });
    expect(res).toMatchObject({ status: 404, body: { code: 'PROFILE_NOT_FOUND' } });
  });

  it('keeps sending in existing sessions while the profile service fails, and answers uncached lookups 503', async () => {
    const token = await t.token('ann@example.com');
    const sessionId = (await t.call('POST', '/api/chat/init', { token, body: { toEmail: 'ben@example.com', intent: 'dating' } })).body.sessionId;
    profiles.faults.failAll(500);
    try {
      const sent = await t.call('POST', '/api/chat/message', { token, body: { sessionId, content: 'during outage', clientMessageId: newId() } });
      expect(sent.status).toBe(201);
      const cyToken = await t.token('cy@example.com');
      const res = await t.call('POST', '/api/chat/init', { token: cyToken, body: { toEmail: 'ann@example.com', intent: 'dating' } });
      expect(res).toMatchObject({ status: 503, body: { code: 'PROFILE_SERVICE_UNAVAILABLE' } });
      expect(res.headers.get('retry-after')).toBe('1');
    } finally {
      profiles.faults.reset();
    }
  });
});
