/**
 * The ProfileDirectory contract (see the port's TSDoc), run against every implementation, through
 * the port only. What only some implementations do (create on first use, PROFILE_NOT_FOUND,
 * behaviour under outage) is tested beside each implementation.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProfileDirectory } from '../chat/ports.js';

export interface ProfileDirectoryFixture {
  /** Must be able to resolve any (email, intent) these tests invent. */
  directory: ProfileDirectory;
  close(): Promise<void>;
}

/** A fresh address per test, so tests never see each other's profiles. */
const newEmail = (name = 'user'): string => `${name}.${randomUUID().slice(0, 8)}@example.com`;

export function describeProfileDirectoryContract(name: string, open: () => Promise<ProfileDirectoryFixture>): void {
  describe(`ProfileDirectory contract: ${name}`, () => {
    let fx: ProfileDirectoryFixture;
    beforeAll(async () => {
      fx = await open();
    });
    afterAll(async () => {
      await fx?.close();
    });

    it('returns the same profile id for the same email and intent every time', async () => {
      const email = newEmail();
      const first = await fx.directory.resolve(email, 'dating');
      const second = await fx.directory.resolve(email, 'dating');
      expect(second.id).toBe(first.id);
      expect(first.id).toMatch(/^[0-9a-f-]{36}$/i);
      expect(first.email.toLowerCase()).toBe(email);
      expect(first.displayName).not.toBe('');
    });

    it('matches email case-insensitively', async () => {
      const email = newEmail('Mixed');
      const lower = await fx.directory.resolve(email.toLowerCase(), 'dating');
      const upper = await fx.directory.resolve(email.toUpperCase(), 'dating');
      expect(upper.id).toBe(lower.id);
    });

    it('gives one person a different profile per intent', async () => {
      const email = newEmail();
      const dating = await fx.directory.resolve(email, 'dating');
      const hiring = await fx.directory.resolve(email, 'hiring');
      expect(hiring.id).not.toBe(dating.id);
    });

    it('gives different people different profiles for the same intent', async () => {
      const [ann, ben] = await Promise.all([fx.directory.resolve(newEmail('ann'), 'dating'), fx.directory.resolve(newEmail('ben'), 'dating')]);
      expect(ben.id).not.toBe(ann.id);
    });

    it('finds a resolved profile by its id', async () => {
      const profile = await fx.directory.resolve(newEmail(), 'dating');
      expect(await fx.directory.byId(profile.id)).toEqual(profile);
    });

    it('returns undefined for an id it has never seen', async () => {
      expect(await fx.directory.byId(randomUUID())).toBeUndefined();
    });

    it('agrees on one profile when the same key is resolved concurrently', async () => {
      const email = newEmail();
      const profiles = await Promise.all(Array.from({ length: 20 }, (_, i) => fx.directory.resolve(i % 2 ? email.toUpperCase() : email, 'dating')));
      expect(new Set(profiles.map((p) => p.id)).size).toBe(1);
    });
  });
}
