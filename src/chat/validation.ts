/** Shape rules shared by every transport, so REST and STOMP refuse the same inputs the same way. */
import { ChatError } from './chat-errors.js';
import { hasControlCharacter, hasVisibleCharacter, isWellFormedText } from './text-rules.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Deliberately plain: one @, a dot in the domain, and no white space, control or format
// characters anywhere. Identity comes from a verified token; this keeps garbage out of keys and logs.
const EMAIL = /^[^\s@\p{Cc}\p{Cf}]{1,64}@[^\s@\p{Cc}\p{Cf}]{1,255}\.[^\s@\p{Cc}\p{Cf}]{1,63}$/u;
const INTENT = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;

export const isUuid = (value: unknown): value is string => typeof value === 'string' && UUID.test(value);

/**
 * An email we can use as an identity. Not in NFC means two spellings of one address could exist
 * (the Kelvin sign K folds to "k" under NFC and under toLowerCase), so such an address is refused
 * rather than silently merged with another user's.
 */
export const isEmail = (value: unknown): value is string =>
  typeof value === 'string' && value.length <= 320 && isWellFormedText(value) && EMAIL.test(value) && value.normalize('NFC') === value;

/** Refuses a string that is not well-formed Unicode, naming the field. */
export function requireWellFormed(field: string, value: string): string {
  if (!isWellFormedText(value)) {
    throw new ChatError('INVALID_CONTENT', `${field} must be well-formed Unicode text (no NUL, no lone surrogate)`, { field });
  }
  return value;
}

export function requireUuid(field: string, value: unknown): string {
  if (typeof value === 'string') requireWellFormed(field, value);
  if (!isUuid(value)) throw new ChatError('VALIDATION_FAILED', `${field} must be a UUID`, { field });
  return value.toLowerCase();
}

export function requireEmail(field: string, value: unknown): string {
  if (typeof value === 'string') requireWellFormed(field, value);
  if (!isEmail(value)) throw new ChatError('VALIDATION_FAILED', `${field} must be an email address`, { field });
  return normalizeEmail(value);
}

export function requireIntent(field: string, value: unknown): string {
  if (typeof value === 'string') requireWellFormed(field, value);
  if (typeof value !== 'string' || !INTENT.test(value)) {
    throw new ChatError('VALIDATION_FAILED', `${field} must be 1-64 characters of letters, digits, '_', '.', ':' or '-'`, { field });
  }
  return value;
}

/** Message text (and other free text with the same rules, such as a report's reason, named by `field`). */
export function requireContent(value: unknown, maxChars: number, field = 'content'): string {
  if (typeof value !== 'string') throw new ChatError('VALIDATION_FAILED', `${field} must be a string`, { field });
  requireWellFormed(field, value);
  if (hasControlCharacter(value)) throw new ChatError('INVALID_CONTENT', `${field} must not contain control characters other than tab and line breaks`, { field });
  // The embedded database's reader drops a leading byte order mark: it would be stored one way and
  // read back another. No one types one; it only arrives pasted from a file.
  if (value.startsWith('\uFEFF')) throw new ChatError('INVALID_CONTENT', `${field} must not start with a byte order mark (U+FEFF)`, { field });
  // Characters are code points, so an emoji counts once, as a user would count it.
  let chars = 0;
  for (const _ of value) {
    if (++chars > maxChars) throw new ChatError('CONTENT_TOO_LONG', `${field} must be at most ${maxChars} characters`, { field, maxChars });
  }
  if (!hasVisibleCharacter(value)) throw new ChatError('CONTENT_EMPTY', `${field} must contain at least one visible character`, { field });
  return value;
}

/** A display name from a token, a profile or a request: well-formed, trimmed, at most `maxChars`. */
export function requireDisplayName(field: string, value: string, maxChars = 100): string {
  requireWellFormed(field, value);
  if (hasControlCharacter(value)) throw new ChatError('INVALID_CONTENT', `${field} must not contain control characters`, { field });
  const trimmed = value.trim();
  // Cut by code point so an astral character is never split into a lone surrogate.
  return [...trimmed].slice(0, maxChars).join('');
}

export function requireSeq(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new ChatError('VALIDATION_FAILED', `${field} must be a non-negative integer`, { field });
  }
  return value;
}

/**
 * The one comparison form of an identity: surrounding space trimmed and ASCII letters lower-cased,
 * nothing else. Unicode case folding would merge distinct addresses (K, the Kelvin sign, and
 * "ſ" fold onto ASCII letters), so non-ASCII characters are compared as they are.
 */
export const normalizeEmail = (email: string): string => email.trim().replace(/[A-Z]+/g, (ascii) => ascii.toLowerCase());
