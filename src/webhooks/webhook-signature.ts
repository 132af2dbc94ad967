/**
 * How a webhook request is signed, and how a receiver checks it. Pure: no clock, no I/O.
 *
 * Ours: `X-Chat-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`, keyed with the secret's
 * UTF-8 bytes, beside `X-Chat-Timestamp` (unix seconds) and `X-Chat-Event-Id`. The same request also
 * carries the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature:
 * v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`), keyed with the base64 after `whsec_` when
 * the secret has that form, else with its UTF-8 bytes, so their libraries verify it too.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** Receivers refuse a timestamp further than this from their clock (replays of old requests). */
export const SIGNATURE_TOLERANCE_SECONDS = 5 * 60;

export function chatSignature(secret: string, timestamp: number, body: string): string {
  return `v1=${createHmac('sha256', Buffer.from(secret, 'utf8')).update(`${timestamp}.${body}`).digest('hex')}`;
}

export function standardWebhookSignature(secret: string, eventId: string, timestamp: number, body: string): string {
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8');
  return `v1,${createHmac('sha256', key).update(`${eventId}.${timestamp}.${body}`).digest('base64')}`;
}

/** The headers a delivery carries, signed for this attempt's timestamp. */
export function signedHeaders(secret: string, eventId: string, type: string, timestamp: number, body: string): Record<string, string> {
  return {
    'content-type': 'application/json',
    'user-agent': 'chat-service-webhooks/1',
    'x-chat-event-id': eventId,
    'x-chat-event-type': type,
    'x-chat-timestamp': String(timestamp),
    'x-chat-signature': chatSignature(secret, timestamp, body),
    'webhook-id': eventId,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': standardWebhookSignature(secret, eventId, timestamp, body),
  };
}

export type SignatureCheck = { ok: true } | { ok: false; reason: 'missing' | 'malformed-timestamp' | 'stale-timestamp' | 'bad-signature' };

/**
 * A receiver's check of `X-Chat-Signature`: the timestamp within the tolerance of `nowSeconds`, and
 * the signature equal to ours compared in constant time. `body` must be the raw bytes received, not
 * JSON re-serialised. Several `v1=` values (comma- or space-separated, as during a secret rotation)
 * are accepted if any matches.
 */
export function verifyChatSignature(
  secret: string,
  headers: { timestamp: string | undefined; signature: string | undefined },
  body: string,
  nowSeconds: number,
  toleranceSeconds = SIGNATURE_TOLERANCE_SECONDS,
): SignatureCheck {
  if (!headers.timestamp || !headers.signature) return { ok: false, reason: 'missing' };
  if (!/^\d{1,12}$/.test(headers.timestamp)) return { ok: false, reason: 'malformed-timestamp' };
  const timestamp = Number(headers.timestamp);
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) return { ok: false, reason: 'stale-timestamp' };
  const expected = Buffer.from(chatSignature(secret, timestamp, body), 'utf8');
  for (const candidate of headers.signature.split(/[,\s]+/)) {
    const given = Buffer.from(candidate, 'utf8');
    if (given.length === expected.length && timingSafeEqual(given, expected)) return { ok: true };
  }
  return { ok: false, reason: 'bad-signature' };
}
