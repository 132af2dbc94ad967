import { createHash } from 'node:crypto';
import { normalizeEmail } from '../chat/validation.js';

/** Bus identity of a user: the one comparison form of an email the rest of the service uses. */
export const normaliseUserEmail = normalizeEmail;

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
