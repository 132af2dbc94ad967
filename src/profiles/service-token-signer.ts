/**
 * Signs the short-lived service JWT (RS256) that authenticates chat-service to the profile service
 * (docs/architecture.md, "Profiles"). One token is shared by all calls until shortly before it expires: RSA signing
 * costs about a millisecond, which would otherwise be paid on every profile lookup.
 *
 * Invariants: a returned token is valid for at least `renewBeforeSec` more seconds; concurrent
 * callers during a renewal share one signing.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';

export interface ServiceTokenSignerOptions {
  /** PKCS#8 (or PKCS#1) PEM of an RSA private key of at least 2048 bits. */
  privateKeyPem: string;
  issuer: string;
  audience: string;
  /** Token lifetime; defaults to the 2 minutes the profile service expects. */
  ttlSec?: number;
  /** A token is replaced once less than this much of its lifetime is left. */
  renewBeforeSec?: number;
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number;
}

interface SignedToken {
  token: string;
  expiresAtMs: number;
}

export class ServiceTokenSigner {
  private readonly key: KeyObject;
  private readonly ttlSec: number;
  private readonly renewBeforeMs: number;
  private readonly now: () => number;
  private current: SignedToken | undefined;
  private signing: Promise<SignedToken> | undefined;

  constructor(private readonly options: ServiceTokenSignerOptions) {
    // Parsing here makes a bad SERVICE_JWT_PRIVATE_KEY fail at start-up, not on the first lookup.
    this.key = createPrivateKey(options.privateKeyPem);
    const modulusLength = this.key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (this.key.asymmetricKeyType !== 'rsa' || modulusLength < 2048) {
      throw new Error('SERVICE_JWT_PRIVATE_KEY: must be an RSA private key of at least 2048 bits (RS256)');
    }
    this.ttlSec = options.ttlSec ?? 120;
    this.renewBeforeMs = (options.renewBeforeSec ?? 30) * 1000;
    if (this.renewBeforeMs >= this.ttlSec * 1000) throw new Error('renewBeforeSec must be shorter than ttlSec');
    this.now = options.now ?? Date.now;
  }

  /** A bearer token for the profile service, reused until `renewBeforeSec` before its expiry. */
  async token(): Promise<string> {
    const current = this.current;
    if (current && this.now() < current.expiresAtMs - this.renewBeforeMs) return current.token;
    this.signing ??= this.sign().finally(() => {
      this.signing = undefined;
    });
    return (await this.signing).token;
  }

  /** Drops the current token, e.g. after the service refused it; the next call signs afresh. */
  invalidate(): void {
    this.current = undefined;
  }

  private async sign(): Promise<SignedToken> {
    const iat = Math.floor(this.now() / 1000);
    const exp = iat + this.ttlSec;
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
      .setIssuer(this.options.issuer)
      .setSubject(this.options.issuer)
      .setAudience(this.options.audience)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(this.key);
    const signed = { token, expiresAtMs: exp * 1000 };
    this.current = signed;
    return signed;
  }
}
