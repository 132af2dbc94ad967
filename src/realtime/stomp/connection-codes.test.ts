import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CHAT_ERROR_CATALOGUE } from '../../chat/chat-errors.js';
import { CONNECTION_CODES, reconnectAfter } from './connection-codes.js';
import { STOMP_DECODE_ERROR_CODES } from './frame-decoder.js';

describe('the STOMP connection codes', () => {
  it('catalogue every code the decoder reports', () => {
    for (const code of STOMP_DECODE_ERROR_CODES) expect(CONNECTION_CODES).toHaveProperty(code);
  });

  it('catalogue every code a connection or the endpoints end a connection with', () => {
    // A code left out would still reach clients, with reconnect: true whatever it means: the
    // source is the inventory, so a new `fail(new ChatError('…'))` must come with its entry.
    const codesIn = (text: string, pattern: RegExp) => [...text.matchAll(pattern)].map((m) => m[1]!);
    const read = (file: string) => readFileSync(new URL(file, import.meta.url), 'utf8');
    const gateway = read('../realtime-gateway.ts');
    // What the gateway throws while a CONNECT registers ends that connection too.
    const connected = gateway.slice(gateway.indexOf('async connected('), gateway.indexOf('\n  disconnected('));
    const found = [
      ...codesIn(read('stomp-connection.ts'), /fail\(new ChatError\('([A-Z0-9_]+)'/g),
      ...codesIn(read('../realtime-endpoints.ts'), /fail\(new ChatError\('([A-Z0-9_]+)'/g),
      ...codesIn(connected, /new ChatError\('([A-Z0-9_]+)'/g),
    ];
    expect(found).toContain('TOO_MANY_CONNECTIONS');
    for (const code of found) expect(CONNECTION_CODES, code).toHaveProperty(code);
  });

  it('are codes of the one catalogue, each with a reason', () => {
    for (const [code, entry] of Object.entries(CONNECTION_CODES)) {
      expect(CHAT_ERROR_CATALOGUE).toHaveProperty(code);
      expect(entry.reason.length).toBeGreaterThan(10);
    }
  });

  it('tell a client to reconnect after a refused frame, and after a catalogued code only if it says so', () => {
    expect(reconnectAfter('NOT_A_PARTICIPANT')).toBe(true);
    expect(reconnectAfter('TOKEN_EXPIRED')).toBe(true);
    expect(reconnectAfter('UNAUTHENTICATED')).toBe(false);
    expect(reconnectAfter('FRAME_TOO_LARGE')).toBe(false);
  });

  it('are the README’s table, code for code', () => {
    const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    const rows = [...readme.matchAll(/^\| `([A-Z0-9_]+)` \| (reconnect|\*\*terminal\*\*) \| (ERROR|handshake) \|/gm)];
    const documented = Object.fromEntries(rows.map(([, code, then, sentAs]) => [code, { reconnect: then === 'reconnect', sentAs }]));
    const catalogue = Object.fromEntries(Object.entries(CONNECTION_CODES).map(([code, { reconnect, sentAs }]) => [code, { reconnect, sentAs }]));
    expect(documented).toEqual(catalogue);
  });
});
