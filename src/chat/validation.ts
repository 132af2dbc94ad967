/** Shape rules shared by every transport, so REST and STOMP refuse the same inputs the same way. */
import { ChatError } from './chat-errors.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Deliberately plain: one @, no spaces, a dot in the domain. Identity comes from a verified token;
// this only keeps garbage out of keys and logs.
const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,255}\.[^\s@]{1,63}$/;
const INTENT = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;

export const isUuid = (value: unknown): value is string => typeof value === 'string' && UUID.test(value);
export const isEmail = (value: unknown): value is string => typeof value === 'string' && value.length <= 320 && EMAIL.test(value);

export function requireUuid(field: string, value: unknown): string {
  if (!isUuid(value)) throw new ChatError('VALIDATION_FAILED', `${field} must be a UUID`, { field });
  return value.toLowerCase();
}

export function requireEmail(field: string, value: unknown): string {
  if (!isEmail(value)) throw new ChatError('VALIDATION_FAILED', `${field} must be an email address`, { field });
  return normalizeEmail(value);
}

export function requireIntent(field: string, value: unknown): string {
  if (typeof value !== 'string' || !INTENT.test(value)) {
    throw new ChatError('VALIDATION_FAILED', `${field} must be 1-64 characters of letters, digits, '_', '.', ':' or '-'`, { field });
  }
  return value;
}

export function requireContent(value: unknown, maxChars: number): string {
  if (typeof value !== 'string') throw new ChatError('VALIDATION_FAILED', 'content must be a string', { field: 'content' });
  if (value.trim().length === 0) throw new ChatError('CONTENT_EMPTY', 'content must not be empty', { field: 'content' });
  // PostgreSQL text cannot hold NUL; refusing it here keeps a bad byte from failing a whole batch.
  if (value.includes('\u0000')) throw new ChatError('VALIDATION_FAILED', 'content must not contain NUL characters', { field: 'content' });
  // Characters are code points, so an emoji counts once, as a user would count it.
  let chars = 0;
  for (const _ of value) {
    if (++chars > maxChars) throw new ChatError('CONTENT_TOO_LONG', `content must be at most ${maxChars} characters`, { field: 'content', maxChars });
  }
  return value;
}

export function requireSeq(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new ChatError('VALIDATION_FAILED', `${field} must be a non-negative integer`, { field });
  }
  return value;
}

export const normalizeEmail = (email: string): string => email.trim().toLowerCase();
