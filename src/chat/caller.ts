/**
 * The one identity type of the service: whom a use case runs for. It is the user a verified token
 * names (ADR 0009), never a body field; transports get it from the token verifier and hand it to the
 * chat core as is, and a queued send carries it so the send is stored for the same user later.
 */
export interface Caller {
  /** In comparison form (validation.ts `normalizeEmail`), as every rule compares it. */
  readonly email: string;
  readonly displayName?: string;
  /**
   * The token's `scope` claim, split on spaces (e.g. `chat:admin`); empty when it has none. Absent on
   * callers not made from a token (a queued send keeps only who sent it): treat as empty.
   */
  readonly scopes?: readonly string[];
}
