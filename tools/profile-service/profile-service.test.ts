import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { autoProfileId, parseSeedProfiles, startProfileService } from './profile-service.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicKeyPem = keys.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const tmp = mkdtempSync(path.join(tmpdir(), 'profile-service-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const token = () =>
  new SignJWT({})
    .setProtectedHeader({ alg: 'RS256' })
    .setIssuer('chat-service')
    .setSubject('chat-service')
    .setAudience('profile-service')
    .setExpirationTime('2m')
    .sign(keys.privateKey);

async function lookup(url: string, email: string, intent: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${url}/internal/chat-service/users/${encodeURIComponent(email)}/profile/${encodeURIComponent(intent)}`, {
    headers: { authorization: `Bearer ${await token()}` },
  });
  return { status: res.status, body: await res.json() };
}

describe('reference profile service', () => {
  it('answers seeded profiles case-insensitively by email and 404 for others', async () => {
    const service = await startProfileService({
      publicKey: publicKeyPem,
      profiles: [{ id: '0b5c2a1e-4f6d-4a8b-9c0d-1e2f3a4b5c6d', email: 'Ann+chat@Example.com', intent: 'dating', displayName: 'Ann' }],
    });
    try {
      expect(await lookup(service.url, 'ann+chat@example.COM', 'dating')).toEqual({
        status: 200,
        body: { id: '0b5c2a1e-4f6d-4a8b-9c0d-1e2f3a4b5c6d', email: 'ann+chat@example.com', displayName: 'Ann' },
      });
      expect((await lookup(service.url, 'ann+chat@example.com', 'hiring')).status).toBe(404);
    } finally {
      await service.close();
    }
  });

  it('auto-creates a profile whose id is stable per email and intent, also across restarts', async () => {
    const first = await startProfileService({ publicKey: publicKeyPem, autoCreate: true });
    const a = await lookup(first.url, 'bob@example.com', 'dating');
    expect(a.status).toBe(200);
    expect((await lookup(first.url, 'BOB@example.com', 'dating')).body.id).toBe(a.body.id);
    expect((await lookup(first.url, 'bob@example.com', 'hiring')).body.id).not.toBe(a.body.id);
    await first.close();
    const second = await startProfileService({ publicKey: publicKeyPem, autoCreate: true });
    try {
      expect((await lookup(second.url, 'bob@example.com', 'dating')).body.id).toBe(a.body.id);
      expect(a.body.id).toBe(autoProfileId('bob@example.com', 'dating'));
      expect(a.body.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    } finally {
      await second.close();
    }
  });

  it('rejects seed entries that are not profiles, naming the entry', () => {
    expect(() => parseSeedProfiles({})).toThrow(/array/);
    expect(() => parseSeedProfiles([{ email: 'a@example.com', intent: 'dating', displayName: 'A' }, { email: 'nope', intent: 'dating', displayName: 'B' }])).toThrow(/profiles\[1\]\.email/);
    expect(() => parseSeedProfiles([{ id: 'x', email: 'a@example.com', intent: 'dating', displayName: 'A' }])).toThrow(/profiles\[0\]\.id/);
  });

  it('runs as its own process from main.ts with a seed file and logs its URL', async () => {
    const file = path.join(tmp, 'profiles.json');
    writeFileSync(file, JSON.stringify([{ email: 'cat@example.com', intent: 'dating', displayName: 'Cat' }]));
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'tools/profile-service/main.ts')], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: '0', HOST: '127.0.0.1', PROFILES_FILE: file, SERVICE_JWT_PUBLIC_KEY: publicKeyPem.replaceAll('\n', '\\n') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
    try {
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
      await expect.poll(() => /"url":"(http:[^"]+)"[^\n]*"msg":"profile-service started"/.exec(out)?.[1], { timeout: 20_000, interval: 50 }).toBeTruthy();
      const url = /"url":"(http:[^"]+)"/.exec(out)![1]!;
      const cat = await lookup(url, 'cat@example.com', 'dating');
      expect(cat).toMatchObject({ status: 200, body: { email: 'cat@example.com', displayName: 'Cat' } });
      expect((await lookup(url, 'dan@example.com', 'dating')).status).toBe(404);
    } finally {
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  });

  it('refuses to start without a public key, naming the variable', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'tools/profile-service/main.ts')], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    const code = await new Promise((resolve) => child.once('exit', resolve));
    expect(code).toBe(2);
    expect(err).toContain('SERVICE_JWT_PUBLIC_KEY');
  });
});
