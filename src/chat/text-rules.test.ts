import { describe, expect, it } from 'vitest';
import { findMalformedText, hasVisibleCharacter, isWellFormedText } from './text-rules.js';
import { isEmail, normalizeEmail } from './validation.js';

describe('text rules', () => {
  it('takes paired surrogates (astral characters) and refuses lone ones and NUL', () => {
    expect(isWellFormedText('\u{1F600} ok')).toBe(true);
    for (const bad of ['\uD800', 'a\uDC00', '\uDBFF\uDBFF', 'x\u0000y']) expect(isWellFormedText(bad)).toBe(false);
  });

  it('names the first malformed string of a JSON value, keys included', () => {
    expect(findMalformedText({ a: 'ok', b: ['fine', { c: 'bad\uD800' }] }, '')).toBe('b[1].c');
    expect(findMalformedText({ ['k\u0000']: 1 }, 'body')).toBe('body');
    expect(findMalformedText({ a: 1, b: null, c: ['x'] }, '')).toBeUndefined();
  });

  it('sees visible characters in emoji, scripts and combined letters, and none in fillers', () => {
    for (const shown of ['a', '\u2764\uFE0F', '\u{1F1EB}\u{1F1F7}', '\u05E9', 'e\u0301', '\u6F22']) expect(hasVisibleCharacter(shown)).toBe(true);
    for (const blank of ['', ' \t\n', '\u200B', '\u2060\uFEFF', '\u3164', '\u2800', '\u202E', '\u0301', '\u00A0']) expect(hasVisibleCharacter(blank)).toBe(false);
  });
});

describe('email identity', () => {
  it('folds ASCII case only, so no Unicode folding merges two addresses', () => {
    expect(normalizeEmail(' Kate@Example.COM ')).toBe('kate@example.com');
    expect(normalizeEmail('\u00C9ve@example.com')).toBe('\u00C9ve@example.com');
  });

  it('refuses addresses that are not in NFC (the Kelvin sign), or hold controls or format characters', () => {
    expect(isEmail('kate@example.com')).toBe(true);
    expect(isEmail('\u00E9ve@example.com')).toBe(true);
    for (const bad of ['\u212Aate@example.com', 'e\u0301ve@example.com', 'ka\u200Bte@example.com', 'kate\u0000@example.com', 'ka\uD800te@example.com']) expect(isEmail(bad)).toBe(false);
  });
});
