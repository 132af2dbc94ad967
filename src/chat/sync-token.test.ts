import { describe, expect, it } from 'vitest';
import { compareStamps, decodeSyncToken, encodeSyncToken } from './sync-token.js';

describe('sync token', () => {
  it('round-trips a stamp, 64-bit values included, as URL-safe text', () => {
    for (const stamp of [{ xid: '0', id: '0' }, { xid: '745', id: '12' }, { xid: '18446744073709551615', id: '9223372036854775807' }]) {
      const token = encodeSyncToken(stamp);
      expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(decodeSyncToken(token)).toEqual(stamp);
    }
  });

  it('refuses anything it did not write, as VALIDATION_FAILED on since', () => {
    const b64 = (text: string) => Buffer.from(text).toString('base64url');
    for (const token of [undefined, 42, '', 'a b', 'x'.repeat(200), b64('v2.1.1'), b64('v1.1'), b64('v1.01.1'), b64('v1.-1.1'), b64('v1.18446744073709551616.1'), b64('v1.1.9223372036854775808'), b64('v1.1.1.1')]) {
      expect(() => decodeSyncToken(token)).toThrow(expect.objectContaining({ code: 'VALIDATION_FAILED', extra: { field: 'since' } }));
    }
  });

  it('orders stamps by transaction id, then change number, as numbers', () => {
    expect(compareStamps({ xid: '9', id: '100' }, { xid: '10', id: '1' })).toBe(-1);
    expect(compareStamps({ xid: '10', id: '2' }, { xid: '10', id: '11' })).toBe(-1);
    expect(compareStamps({ xid: '10', id: '11' }, { xid: '10', id: '11' })).toBe(0);
    expect(compareStamps({ xid: '18446744073709551615', id: '0' }, { xid: '18446744073709551614', id: '9' })).toBe(1);
  });
});
