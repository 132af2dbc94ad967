/**
 * Verifies client JWTs the way an identity provider issues them: RS256 or ES256 only (never `none`,
 * never HMAC with a public key as secret), `exp` required, `iss`/`aud` checked (production requires
 * both, see config), 30 s of clock tolerance, and a token may live at most `maxAgeSec` (`exp - iat`):
 * a leaked token with a far expiry is not a key for ever.
 *
 * Identity: the `email` claim, or `sub` when it is an email; an `email_verified: false` claim refuses
 * the token (the IdP says the address is not proven to be the user's). The email must be in NFC and
 * is compared with ASCII letters lower-cased only (validation.ts), so no Unicode folding can turn
 * one user's address into another's. Every claim the service keeps (email, name) must be
 * well-formed text; anything else is a 401, never a failed write later.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { createRemoteJWKSet, errors as joseErrors, type JWTPayload, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { ChatError } from '../chat/chat-errors.js';
import type { Caller } from '../chat/caller.js';
import { isWellFormedText } from '../chat/text-rules.js';
import { isEmail, normalizeEmail, requireDisplayName } from '../chat/validation.js';

/** A token that passed: whom it names, and until when it proves that (a connection ends there). */
export interface VerifiedToken {
  readonly caller: Caller;
  readonly expiresAt: Date;
}

export interface TokenVerifier {
  /** Resolves the token's caller or throws ChatError('UNAUTHENTICATED') saying why. */
  verify(token: string): Promise<VerifiedToken>;
}

export type VerificationKey = { kind: 'pem'; pem: string } | { kind: 'jwks'; url: string } | { kind: 'key'; key: KeyObject };

export interface JwtVerifierOptions {
  key: VerificationKey;
  issuer?: string;
  audience?: string;
  clockToleranceSec?: number;
  /** Longest lifetime (`exp - iat`, or `exp - now` without `iat`) a token may have; unset: no limit. */
  maxAgeSec?: number;
}

const MAX_TOKEN_LENGTH = 8192;

export class JwtTokenVerifier implements TokenVerifier {
  private readonly key: KeyObject | JWTVerifyGetKey;
  private readonly algorithms: string[];

  constructor(private readonly options: JwtVerifierOptions) {
    if (options.key.kind === 'jwks') {
      this.key = createRemoteJWKSet(new URL(options.key.url), { timeoutDuration: 5_000, cooldownDuration: 30_000 });
      this.algorithms = ['RS256', 'ES256'];
    } else {
      const key = options.key.kind === 'pem' ? createPublicKey(options.key.pem) : options.key.key;
      this.key = key;
      // Pin the algorithm to the key's type, so a token cannot pick a weaker interpretation.
      this.algorithms = key.asymmetricKeyType === 'ec' ? ['ES256'] : ['RS256'];
    }
  }

  async verify(token: string): Promise<VerifiedToken> {
    if (!token || token.length > MAX_TOKEN_LENGTH) throw new ChatError('UNAUTHENTICATED', 'a bearer token is required');
    let payload: JWTPayload;
    try {
      const verifyOptions = {
        algorithms: this.algorithms,
        issuer: this.options.issuer,
        audience: this.options.audience,
        clockTolerance: this.options.clockToleranceSec ?? 30,
        requiredClaims: ['exp'],
      };
      // Two overloads (key vs. key resolver) that TypeScript cannot merge for a union argument.
      ({ payload } =
        typeof this.key === 'function' ? await jwtVerify(token, this.key, verifyOptions) : await jwtVerify(token, this.key, verifyOptions));
    } catch (err) {
      throw new ChatError('UNAUTHENTICATED', describeJoseError(err), undefined, { cause: err });
    }
    const exp = payload.exp!;
    const maxAge = this.options.maxAgeSec;
    if (maxAge !== undefined) {
      const issuedAt = typeof payload.iat === 'number' ? payload.iat : Date.now() / 1000;
      if (exp - issuedAt > maxAge) throw new ChatError('UNAUTHENTICATED', `token lifetime exceeds the ${maxAge} s this service accepts`);
    }
    if (payload.email_verified === false) throw new ChatError('UNAUTHENTICATED', 'token email is not verified (email_verified is false)');
    const email = identityOf(payload);
    if (!email) throw new ChatError('UNAUTHENTICATED', 'token has no email identity (email claim, or sub that is an email)');
    return { caller: { email, displayName: displayNameOf(payload), scopes: scopesOf(payload) }, expiresAt: new Date(exp * 1000) };
  }
}

function identityOf(payload: JWTPayload): string | undefined {
  // A present but unusable email claim is refused outright rather than falling back to `sub`.
  if (payload.email !== undefined) return isEmail(payload.email) ? normalizeEmail(payload.email) : undefined;
  if (isEmail(payload.sub)) return normalizeEmail(payload.sub);
  return undefined;
}

/** OAuth 2.0's space-separated `scope` claim (RFC 8693 §4.2); anything else grants nothing. */
function scopesOf(payload: JWTPayload): string[] {
  return typeof payload.scope === 'string' ? payload.scope.split(' ').filter((s) => s.length > 0) : [];
}

function displayNameOf(payload: JWTPayload): string | undefined {
  if (payload.name === undefined || payload.name === null) return undefined;
  if (typeof payload.name !== 'string' || !isWellFormedText(payload.name)) throw new ChatError('UNAUTHENTICATED', 'token claim "name" is not well-formed text');
  let name: string;
  try {
    name = requireDisplayName('name', payload.name);
  } catch {
    throw new ChatError('UNAUTHENTICATED', 'token claim "name" holds control characters');
  }
  return name || undefined;
}

function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token has expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `token claim "${err.claim}" is not valid`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token algorithm is not allowed';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature is not valid';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'token key is unknown';
  return 'token is not valid';
}
