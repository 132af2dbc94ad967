import { describe, expect, it } from 'vitest';
import { userRoutingKey } from './user-routing-key.js';

describe('userRoutingKey', () => {
  it('is one topic word after the prefix, whatever dots or wildcards the email holds', () => {
    expect(userRoutingKey('first.last#*@mail.example.com')).toMatch(/^user\.[0-9a-f]{32}$/);
    expect(userRoutingKey('a@b.c', 'chat.user')).toMatch(/^chat\.user\.[0-9a-f]{32}$/);
  });

  it('ignores the case of the email and tells different emails apart', () => {
    expect(userRoutingKey('Alice@Example.COM')).toBe(userRoutingKey('alice@example.com'));
    expect(userRoutingKey('alice@example.com')).not.toBe(userRoutingKey('alice@example.org'));
  });
});
