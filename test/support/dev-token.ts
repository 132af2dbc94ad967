import type { TestApp } from './test-app.js';

/** A dev-issuer token with a chosen lifetime (negative: already expired), signed by the app's own key. */
export async function devIssuerToken(t: TestApp, email: string, ttlSec: number): Promise<string> {
  if (!t.app.devIssuer) throw new Error('the app has no dev issuer');
  return (await t.app.devIssuer.issue(email, undefined, ttlSec)).token;
}
