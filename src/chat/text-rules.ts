/**
 * What text the service accepts, before any of it reaches SQL or another user's screen.
 *
 * PostgreSQL refuses NUL in text and `\u0000` or a lone surrogate escape in jsonb; node-postgres
 * silently turns a lone surrogate into U+FFFD in text. Either way a string that is not well-formed
 * Unicode is refused here with INVALID_CONTENT, so it can neither fail a group commit shared with
 * other users' sends nor be stored altered.
 */

// With the `u` flag a surrogate range matches only surrogates that are not part of a pair.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;
const NUL = '\u0000';
// C0/C1 controls other than tab, line feed and carriage return: never part of a chat message.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_IN_CONTENT = /[\u0001-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/u;
// A character that draws something: not white space, not a control or format character, not a
// default-ignorable filler (zero-width space, word joiner, Hangul fillers, variation selectors),
// not the blank Braille pattern, and not a combining mark (alone, it decorates nothing).
const VISIBLE = /[^\p{White_Space}\p{Cc}\p{Cf}\p{Default_Ignorable_Code_Point}\p{M}\u2800]/u;

/** True for a string PostgreSQL stores unchanged: no NUL, no lone surrogate. */
export function isWellFormedText(value: string): boolean {
  return !value.includes(NUL) && !LONE_SURROGATE.test(value);
}

/** True if content holds a control character no keyboard produces (tab and newlines excepted). */
export const hasControlCharacter = (value: string): boolean => CONTROL_IN_CONTENT.test(value);

/** True if the text would show the reader anything at all. */
export const hasVisibleCharacter = (value: string): boolean => VISIBLE.test(value);

/**
 * The dotted path of the first string (value or key) in a JSON value that is not well-formed
 * text, or undefined when every string is. `root` names the value itself (e.g. "body").
 */
export function findMalformedText(value: unknown, root: string, depth = 0): string | undefined {
  if (typeof value === 'string') return isWellFormedText(value) ? undefined : root;
  // JSON nests only as deep as the body limit allows; the bound keeps a hostile depth from recursing far.
  if (value === null || typeof value !== 'object' || depth > 32) return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findMalformedText(value[i], `${root}[${i}]`, depth + 1);
      if (found) return found;
    }
    return undefined;
  }
  for (const [key, inner] of Object.entries(value)) {
    if (!isWellFormedText(key)) return root;
    const found = findMalformedText(inner, root ? `${root}.${key}` : key, depth + 1);
    if (found) return found;
  }
  return undefined;
}
