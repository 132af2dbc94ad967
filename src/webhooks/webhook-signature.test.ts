import { describe, expect, it } from 'vitest';
import { chatSignature, signedHeaders, standardWebhookSignature, verifyChatSignature } from './webhook-signature.js';

const BODY = '{"id":"evt_1","type":"message.created"}';

describe('webhook signatures', () => {
  it('X-Chat-Signature matches a fixed vector (computed with openssl dgst -sha256 -hmac)', () => {
    // printf '%s' '1700000000.{"id":"evt_1","type":"message.created"}' | openssl dgst -sha256 -hmac 'test-secret-1'
    expect(chatSignature('test-secret-1', 1700000000, BODY)).toBe('v1=45fb2ebbe8fc1443d90134abd669dbe62e558c3345a55679ae1b1fc89479641f');
  });

  it('webhook-signature matches the Standard Webhooks reference vector, and a whsec_ key of our own', () => {
    expect(standardWebhookSignature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}')).toBe(
      'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
    );
    // whsec_ + base64("secret-key-bytes"), computed with openssl over "msg_1.1700000000.<body>".
    expect(standardWebhookSignature('whsec_c2VjcmV0LWtleS1ieXRlcw==', 'msg_1', 1700000000, BODY)).toBe('v1,cLsnI0PP1TUSquGvNLGAuGu/eKmJSeRcjZmHff9/MDs=');
  });

  it('signs every header a receiver needs for this attempt', () => {
    const headers = signedHeaders('test-secret-1', 'evt_1', 'message.created', 1700000000, BODY);
    expect(headers).toMatchObject({
      'x-chat-event-id': 'evt_1',
      'x-chat-event-type': 'message.created',
      'x-chat-timestamp': '1700000000',
      'x-chat-signature': chatSignature('test-secret-1', 1700000000, BODY),
      'webhook-id': 'evt_1',
      'webhook-timestamp': '1700000000',
      'content-type': 'application/json',
    });
  });

  describe('verifyChatSignature', () => {
    const now = 1700000000;
    const headers = { timestamp: '1700000000', signature: chatSignature('test-secret-1', now, BODY) };

    it('accepts the signed body within the tolerance, on either side of the clock', () => {
      expect(verifyChatSignature('test-secret-1', headers, BODY, now)).toEqual({ ok: true });
      expect(verifyChatSignature('test-secret-1', headers, BODY, now + 300)).toEqual({ ok: true });
      expect(verifyChatSignature('test-secret-1', headers, BODY, now - 300)).toEqual({ ok: true });
    });

    it('refuses a tampered body, a wrong secret, a moved timestamp and a replay older than 5 minutes', () => {
      expect(verifyChatSignature('test-secret-1', headers, BODY.replace('created', 'deleted'), now)).toEqual({ ok: false, reason: 'bad-signature' });
      expect(verifyChatSignature('test-secret-2', headers, BODY, now)).toEqual({ ok: false, reason: 'bad-signature' });
      expect(verifyChatSignature('test-secret-1', { ...headers, timestamp: '1700000001' }, BODY, now)).toEqual({ ok: false, reason: 'bad-signature' });
      expect(verifyChatSignature('test-secret-1', headers, BODY, now + 301)).toEqual({ ok: false, reason: 'stale-timestamp' });
      expect(verifyChatSignature('test-secret-1', headers, BODY, now - 301)).toEqual({ ok: false, reason: 'stale-timestamp' });
    });

    it('refuses missing or malformed headers and a signature of another length', () => {
      expect(verifyChatSignature('s', { timestamp: undefined, signature: 'v1=00' }, BODY, now)).toEqual({ ok: false, reason: 'missing' });
      expect(verifyChatSignature('s', { timestamp: '17e8', signature: 'v1=00' }, BODY, now)).toEqual({ ok: false, reason: 'malformed-timestamp' });
      expect(verifyChatSignature('test-secret-1', { ...headers, signature: headers.signature.slice(0, -1) }, BODY, now)).toEqual({ ok: false, reason: 'bad-signature' });
    });

    it('accepts any one of several signatures (a secret being rotated)', () => {
      const both = `${chatSignature('old-secret', now, BODY)}, ${headers.signature}`;
      expect(verifyChatSignature('test-secret-1', { ...headers, signature: both }, BODY, now)).toEqual({ ok: true });
    });
  });
});
