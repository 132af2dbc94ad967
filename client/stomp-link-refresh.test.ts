/**
 * StompLink's token refresh against the scripted STOMP server: a fresher token goes to the open
 * connection as SEND /app/auth.refresh before the old one expires, on the same socket; a provider
 * with nothing fresher sends nothing (the connection then expires and reconnects as usual).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { StompLink } from './stomp-link.js';
import { ScriptedStompServer } from './testing/scripted-stomp-server.js';

const links: StompLink[] = [];
afterEach(async () => {
  await Promise.all(links.splice(0).map((l) => l.close()));
});

/** A JWT-shaped token expiring at `expMs` (the link reads `exp`, it never verifies). */
function tokenExpiringAt(expMs: number, id: string): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'none' })}.${part({ sub: id, exp: Math.floor(expMs / 1000) })}.sig`;
}

function link(tokens: () => string) {
  const server = new ScriptedStompServer();
  const l = new StompLink({
    baseUrl: 'http://chat.test',
    tokenProvider: async () => tokens(),
    transport: 'websocket',
    webSocketFactory: server.factory,
    backoff: { initialMs: 1, maxMs: 5 },
    connectTimeoutMs: 2_000,
    heartbeatMs: 0,
    maxAuthFailures: 3,
    tokenRefreshLeadMs: 60_000,
  });
  links.push(l);
  const refreshed: string[] = [];
  l.on('tokenRefreshed', (token) => refreshed.push(token));
  return { l, server, refreshed };
}

describe('StompLink token refresh', () => {
  it('hands a fresher token to the open connection before the old one expires', async () => {
    const first = tokenExpiringAt(Date.now() + 2_000, 'first');
    const second = tokenExpiringAt(Date.now() + 3_600_000, 'second');
    const queue = [first, second];
    const { l, server, refreshed } = link(() => queue.shift() ?? second);
    l.start();
    await expect.poll(() => l.ready).toBe(true);
    // The lead is a fifth of the remaining life here (under 2 s), so the refresh comes after ~1.6 s.
    await expect.poll(() => server.framesReceived('SEND').map((f) => [f.headers.destination, f.headers.authorization]), { timeout: 3_000 }).toEqual([
      ['/app/auth.refresh', `Bearer ${second}`],
    ]);
    await expect.poll(() => refreshed).toEqual([second]);
    expect(server.sockets).toHaveLength(1);
    expect(server.framesReceived('CONNECT')).toHaveLength(1);
  });

  it('sends nothing when the provider has nothing fresher', async () => {
    const same = tokenExpiringAt(Date.now() + 1_500, 'same');
    let asked = 0;
    const { l, server, refreshed } = link(() => {
      asked++;
      return same;
    });
    l.start();
    await expect.poll(() => l.ready).toBe(true);
    await expect.poll(() => asked, { timeout: 3_000 }).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(server.framesReceived('SEND')).toEqual([]);
    expect(refreshed).toEqual([]);
  });
});
