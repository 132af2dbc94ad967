#!/usr/bin/env node
/**
 * For deploy/docker-compose.yml: plays the identity provider and the profile service's key holder on
 * a laptop, with nothing but node:crypto (it runs in a bare node image).
 *
 *   node keys.mjs DIR [email ...]
 *
 * On first run it writes two key pairs into DIR: an ES256 pair whose public half verifies client
 * tokens (JWT_PUBLIC_KEY) and an RS256 pair for the service JWT the instances send the profile
 * service (SERVICE_JWT_PRIVATE_KEY / SERVICE_JWT_PUBLIC_KEY). Later runs keep them, so tokens stay
 * valid across restarts. Each run signs a fresh token per email (default alice and bob), writes them
 * to DIR/tokens.txt and prints them: paste one into the web page's sign-in.
 *
 * Issuer and audience come from TOKEN_ISSUER and TOKEN_AUDIENCE, which must equal the instances'
 * JWT_ISSUER and JWT_AUDIENCE.
 */
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const [dir, ...emails] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node keys.mjs DIR [email ...]');
  process.exit(2);
}
const issuer = process.env.TOKEN_ISSUER ?? 'chat-compose-idp';
const audience = process.env.TOKEN_AUDIENCE ?? 'chat-service';
// Below JWT_MAX_AGE's default of 24 h, which refuses tokens that live longer.
const lifetimeSec = 12 * 3600;

mkdirSync(dir, { recursive: true });

function keyPair(name, type, options) {
  const privateFile = path.join(dir, `${name}-private.pem`);
  const publicFile = path.join(dir, `${name}-public.pem`);
  if (!existsSync(privateFile) || !existsSync(publicFile)) {
    const { privateKey, publicKey } = generateKeyPairSync(type, options);
    writeFileSync(privateFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(publicFile, publicKey.export({ type: 'spki', format: 'pem' }));
  }
  chmodSync(privateFile, 0o600);
  chmodSync(publicFile, 0o644);
  // Run as root in compose, it hands the files to uid 1000, the `node` user the other containers
  // run as, so the private keys stay readable by them alone.
  if (process.getuid?.() === 0 && process.env.KEYS_OWNER_UID) {
    const uid = Number(process.env.KEYS_OWNER_UID);
    for (const file of [privateFile, publicFile]) chownSync(file, uid, uid);
  }
  return readFileSync(privateFile, 'utf8');
}

const clientKey = createPrivateKey(keyPair('client-jwt', 'ec', { namedCurve: 'P-256' }));
keyPair('service-jwt', 'rsa', { modulusLength: 2048 });

const b64url = (value) => Buffer.from(value).toString('base64url');

function token(email) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ iss: issuer, aud: audience, sub: email, email, name: email.split('@')[0], iat: now, exp: now + lifetimeSec }));
  // JWS wants the raw r||s signature, not the DER node:crypto gives by default.
  const signature = sign('sha256', Buffer.from(`${header}.${payload}`), { key: clientKey, dsaEncoding: 'ieee-p1363' });
  return `${header}.${payload}.${signature.toString('base64url')}`;
}

const users = emails.length > 0 ? emails : ['alice@example.com', 'bob@example.com'];
const lines = users.map((email) => `${email} ${token(email)}`);
writeFileSync(path.join(dir, 'tokens.txt'), lines.join('\n') + '\n', { mode: 0o600 });
console.log(`client tokens (valid ${lifetimeSec / 3600} h; also in ${path.join(dir, 'tokens.txt')}):`);
for (const line of lines) console.log(line);
