/**
 * The catalogue's meaning reaches the SDK: a ChatClient told SERVER_SHUTDOWN (reconnect) comes
 * back by itself once an instance answers again, and one told FRAME_TOO_LARGE (terminal) stops
 * instead of repeating the frame for ever. The code travels as the ERROR frame's `code` header and
 * the SDK decides by it (client/connection-codes.ts), not by the message text.
 */
import type { IStompSocket } from '@stomp/stompjs';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { ChatClient, type ConnectionState, type ConnectionStateDetail } from '../../client/index.js';
import { startTestApp, type TestApp, uniqueEmail } from '../support/test-app.js';

const wsFactory = (url: string, protocols: string[]): IStompSocket => new WebSocket(url, protocols) as unknown as IStompSocket;

function watch(client: ChatClient): Array<[ConnectionState, string | undefined]> {
  const seen: Array<[ConnectionState, string | undefined]> = [];
  client.on('state', (state: ConnectionState, detail?: ConnectionStateDetail) => seen.push([state, detail?.error?.code]));
  return seen;
}

describe('connection codes through the SDK', () => {
  const apps: TestApp[] = [];
  const clients: ChatClient[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const a of apps.splice(0)) await a.close();
  });

  it('reconnects after SERVER_SHUTDOWN, to whatever answers at the same address', async () => {
    const first = await startTestApp();
    apps.push(first);
    const port = new URL(first.url).port;
    const email = uniqueEmail('shutdown');
    // A dev issuer signs with its own key: each instance accepts the tokens it issued, so the token
    // provider asks whichever instance is up.
    let current = first;
    const client = new ChatClient({ baseUrl: first.url, tokenProvider: () => current.token(email), webSocketFactory: wsFactory, reconnect: { initialMs: 100, maxMs: 300 } });
    clients.push(client);
    const seen = watch(client);
    client.connect();
    await expect.poll(() => client.state, { timeout: 10_000 }).toBe('connected');

    await first.close();
    apps.splice(apps.indexOf(first), 1);
    await expect.poll(() => seen.some(([state]) => state === 'reconnecting'), { timeout: 10_000 }).toBe(true);
    expect(seen.some(([state, code]) => state === 'reconnecting' && code === 'SERVER_SHUTDOWN')).toBe(true);

    const second = await startTestApp({ PORT: port });
    apps.push(second);
    current = second;
    await expect.poll(() => client.state, { timeout: 20_000 }).toBe('connected');
  }, 40_000);

  it('stops after FRAME_TOO_LARGE instead of sending the frame again', async () => {
    const app = await startTestApp({ MAX_CONTENT_CHARS: '100000' });
    apps.push(app);
    const [alice, bob] = [uniqueEmail('big'), uniqueEmail('bob')];
    const aliceToken = await app.token(alice);
    await app.token(bob);
    const { body: session } = await app.call('POST', '/api/chat/init', { token: aliceToken, body: { toEmail: bob, intent: 'codes' } });
    const client = new ChatClient({ baseUrl: app.url, tokenProvider: async () => aliceToken, webSocketFactory: wsFactory, reconnect: { initialMs: 100, maxMs: 300 } });
    clients.push(client);
    const seen = watch(client);
    client.connect();
    await expect.poll(() => client.state, { timeout: 10_000 }).toBe('connected');

    // Within MAX_CONTENT_CHARS here, a little over the 64 KiB STOMP frame limit with the headers
    // and the JSON around it (and under the WebSocket message limit, which closes without a frame).
    client.send(session.sessionId, 'x'.repeat(65_536));
    await expect.poll(() => client.state, { timeout: 10_000 }).toBe('disconnected');
    expect(seen.at(-1)).toEqual(['disconnected', 'FRAME_TOO_LARGE']);
    expect(seen.filter(([state]) => state === 'connected')).toHaveLength(1);
  }, 30_000);
});
