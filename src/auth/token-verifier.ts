/**
 * Verifies client JWTs the way an identity provider issues them: RS256 or ES256 only (never `none`,
 * never HMAC with a public key as secret), `exp` required, `iss`/`aud` checked when configured,
 * 30 s of clock tolerance. The caller's identity is the `email` claim, or `sub` when it is an email.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { createRemoteJWKSet, errors as joseErrors, type JWTPayload, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { ChatError } from '../chat/chat-errors.js';
import type { Caller } from '../chat/chat-service.js';
import { isEmail, normalizeEmail } from '../chat/validation.js';

export interface VerifiedCaller extends Caller {
  readonly expiresAt: Date;
}

export interface TokenVerifier {
  /** Resolves the token's caller or throws ChatError('UNAUTHENTICATED') saying why. */
  verify(token: string): Promise<VerifiedCaller>;
}

export type VerificationKey = { kind: 'pem'; pem: string } | { kind: 'jwks'; url: string } | { kind: 'key'; key: KeyObject };

export interface JwtVerifierOptions {
  key: VerificationKey;
  issuer?: string;
  audience?: string;
  clockToleranceSec?: number;
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

  async verify(token: string): Promise<VerifiedCaller> {
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
    const email = identityOf(payload);
    if (!email) throw new ChatError('UNAUTHENTICATED', 'token has no email identity (email claim, or sub that is an email)');
    const name = typeof payload.name === 'string' && payload.name.trim() ? payload.name.trim().slice(0, 100) : undefined;
    return { email, displayName: name, expiresAt: new Date(payload.exp! * 1000) };
  }
}

function identityOf(payload: JWTPayload): string | undefined {
  if (isEmail(payload.email)) return normalizeEmail(payload.email);
  if (isEmail(payload.sub)) return normalizeEmail(payload.sub);
  return undefined;
}

function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token has expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `token claim "${err.claim}" is not valid`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token algorithm is not allowed';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature is not valid';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'token key is unknown';
  return 'token is not valid';
}
