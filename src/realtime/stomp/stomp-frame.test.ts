import { describe, it, expect } from 'vitest';
import { escapesHeaders, header, isStompCommand, mayHaveBody } from './stomp-frame.js';
import type { StompFrame } from './stomp-frame.js';

const frame = (headers: Array<readonly [string, string]>): StompFrame => ({ command: 'SEND', headers, body: Buffer.alloc(0) });

describe('header()', () => {
  it('returns the first value when a header repeats', () => {
    const f = frame([
      ['destination', '/app/chat.send'],
      ['destination', '/topic/session.other'],
    ]);
    expect(header(f, 'destination')).toBe('/app/chat.send');
  });

  it('returns undefined when the header is absent', () => {
    expect(header(frame([['receipt', '7']]), 'destination')).toBeUndefined();
  });

  it('matches names case-sensitively', () => {
    expect(header(frame([['Destination', '/x']]), 'destination')).toBeUndefined();
  });

  it('returns an empty value rather than skipping to a later repeat', () => {
    expect(header(frame([['id', ''], ['id', 'sub-1']]), 'id')).toBe('');
  });
});

describe('command classification', () => {
  it('knows all fifteen STOMP 1.2 commands and nothing else', () => {
    const known = ['CONNECT', 'STOMP', 'SEND', 'SUBSCRIBE', 'UNSUBSCRIBE', 'ACK', 'NACK', 'BEGIN', 'COMMIT', 'ABORT', 'DISCONNECT', 'CONNECTED', 'MESSAGE', 'RECEIPT', 'ERROR'];
    for (const c of known) expect(isStompCommand(c)).toBe(true);
    for (const c of ['send', 'PUBLISH', '', 'SEND ']) expect(isStompCommand(c)).toBe(false);
  });

  it('exempts only CONNECT and CONNECTED from header escaping', () => {
    expect(escapesHeaders('CONNECT')).toBe(false);
    expect(escapesHeaders('CONNECTED')).toBe(false);
    expect(escapesHeaders('STOMP')).toBe(true);
    expect(escapesHeaders('SEND')).toBe(true);
  });

  it('allows a body only on SEND, MESSAGE and ERROR', () => {
    expect(['SEND', 'MESSAGE', 'ERROR'].every(mayHaveBody)).toBe(true);
    expect(['CONNECT', 'SUBSCRIBE', 'RECEIPT', 'CONNECTED', 'DISCONNECT'].some(mayHaveBody)).toBe(false);
  });
});
