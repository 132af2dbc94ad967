/** The SDK's copy of the connection codes is the service's catalogue: a drift fails here, not in a client. */
import { describe, expect, expectTypeOf, it } from 'vitest';
import { CONNECTION_CODES as SERVICE_CODES } from '../src/realtime/stomp/connection-codes.js';
import { CONNECTION_CODES, type ConnectionCode, isTerminal } from './connection-codes.js';

describe('SDK connection codes', () => {
  it('are the service’s catalogue, code for code', () => {
    expectTypeOf<ConnectionCode>().toEqualTypeOf<keyof typeof SERVICE_CODES>();
    const service = Object.fromEntries(Object.entries(SERVICE_CODES).map(([code, entry]) => [code, entry.reconnect ? 'reconnect' : 'terminal']));
    expect(CONNECTION_CODES).toEqual(service);
  });

  it('call only catalogued terminal codes terminal', () => {
    expect(isTerminal('UNAUTHENTICATED')).toBe(true);
    expect(isTerminal('TOKEN_EXPIRED')).toBe(false);
    // A refused frame's code, or one newer than the SDK: reconnect.
    expect(isTerminal('NOT_A_PARTICIPANT')).toBe(false);
    expect(isTerminal('SOMETHING_NEW')).toBe(false);
    expect(isTerminal('toString')).toBe(false);
  });
});
