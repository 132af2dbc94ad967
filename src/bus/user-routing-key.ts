import { createHash } from 'node:crypto';

/** Bus identity of a user: emails are case-insensitive (ports.ts: recipients are lower-cased). */
export const normaliseUserEmail = (email: string): string => email.toLowerCase();

/**
 * The topic routing key that carries events for one user: `{prefix}.{32 hex chars}`.
 *
 * The email is hashed rather than embedded because `.` separates words in topic routing (a binding
 * for `user.a.b@c.d` is four words and could be matched by patterns meant for others), `#`/`*` are
 * wildcards in binding keys, and routing keys are capped at 255 bytes. 128 bits of SHA-256 make a
 * collision a non-issue; a collision would only deliver an extra event that the receiver drops.
 */
export function userRoutingKey(email: string, prefix = 'user'): string {
  const digest = createHash('sha256').update(normaliseUserEmail(email)).digest('hex').slice(0, 32);
  return `${prefix}.${digest}`;
}
