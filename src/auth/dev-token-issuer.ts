/**
 * The embedded default's identity provider: an RS256 key pair generated into DATA_DIR on first
 * start, and tokens minted for any email by POST /dev/token. It exists only when no real key is
 * configured (JWT_PUBLIC_KEY / JWT_JWKS_URL), so production never has it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';

export const DEV_ISSUER = 'chat-service-dev';
export const DEV_AUDIENCE = 'chat-service';
const TOKEN_TTL_SEC = 12 * 3600;

export class DevTokenIssuer {
  private constructor(
    private readonly privateKey: KeyObject,
    readonly publicKey: KeyObject,
  ) {}

  /** Loads the key pair from dataDir, generating it on first use; `undefined` keeps it in memory. */
  static open(dataDir: string | undefined): DevTokenIssuer {
    const file = dataDir ? path.join(dataDir, 'dev-jwt-private-key.pem') : undefined;
    let privateKey: KeyObject;
    if (file && fs.existsSync(file)) {
      privateKey = createPrivateKey(fs.readFileSync(file, 'utf8'));
    } else {
      privateKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
      if (file) {
        fs.mkdirSync(path.dirname(file), { recursive: true });
        fs.writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
      }
    }
    return new DevTokenIssuer(privateKey, createPublicKey(privateKey));
  }

  /** `scope`: the space-separated `scope` claim (say `chat:admin`), when the token should carry one. */
  async issue(email: string, displayName?: string, ttlSec = TOKEN_TTL_SEC, scope?: string): Promise<{ token: string; expiresAt: string }> {
    const exp = Math.floor(Date.now() / 1000) + ttlSec;
    const token = await new SignJWT({ email, ...(displayName ? { name: displayName } : {}), ...(scope ? { scope } : {}) })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
      .setSubject(email)
      .setIssuer(DEV_ISSUER)
      .setAudience(DEV_AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(exp)
      .sign(this.privateKey);
    return { token, expiresAt: new Date(exp * 1000).toISOString() };
  }
}
