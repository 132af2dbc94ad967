import { describe, expect, it } from 'vitest';
import { addressBucket } from './client-address.js';
import { PendingConnections } from './pending-connections.js';

describe('addressBucket', () => {
  it('keeps IPv4 addresses as they are', () => {
    expect(addressBucket('203.0.113.7')).toBe('203.0.113.7');
  });

  it('puts every address of one IPv6 /64 in one bucket, however it is written', () => {
    const bucket = addressBucket('2001:db8:1:2::1');
    expect(bucket).toBe('2001:db8:1:2::/64');
    expect(addressBucket('2001:0db8:0001:0002:ffff:ffff:ffff:ffff')).toBe(bucket);
    expect(addressBucket('2001:db8:1:2:0:0:0:9%eth0')).toBe(bucket);
    expect(addressBucket('2001:db8:1:3::1')).not.toBe(bucket);
    expect(addressBucket('::1')).toBe('0:0:0:0::/64');
    expect(addressBucket('64:ff9b::192.0.2.1')).toBe('64:ff9b:0:0::/64');
  });
});

describe('PendingConnections', () => {
  it('refuses past the per-address cap, then past the global cap, and takes slots back once', () => {
    const pending = new PendingConnections({ max: 3, maxPerAddress: 2 });
    const a1 = pending.admit('2001:db8::1');
    const a2 = pending.admit('2001:db8::2');
    expect(pending.admit('2001:db8::3')).toBe('pending_limit_per_address');
    const b = pending.admit('192.0.2.1');
    expect(pending.admit('192.0.2.2')).toBe('pending_limit');
    if (typeof a1 === 'string' || typeof a2 === 'string' || typeof b === 'string') throw new Error('admitted slots expected');
    a1.release();
    a1.release();
    expect(pending.size).toBe(2);
    expect(a1.released).toBe(true);
    expect(typeof pending.admit('2001:db8::4')).toBe('object');
  });
});
