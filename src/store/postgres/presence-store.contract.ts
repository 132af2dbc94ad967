/**
 * The PresenceStore contract (see the port's TSDoc), run against every database it runs on. Tests go
 * through the port; the fixture only makes time pass for an instance (its last beat moved back) and
 * opens sessions, which are the MessageStore's to write.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PresenceStore } from '../../chat/ports.js';

export interface PresenceStoreFixture {
  store: PresenceStore;
  /** Another store on the same database (its own connections where there are several). */
  peer: PresenceStore;
  /** Moves the instance's last beat `ms` into the past. */
  age(instanceId: string, ms: number): Promise<void>;
  /** Opens a session between the two emails (comparison form). */
  openSession(a: string, b: string, intent?: string): Promise<string>;
  close(): Promise<void>;
}

export interface PresenceStoreContractOptions {
  /** Transactions run side by side (PostgreSQL), which adds the races between instances. */
  concurrentTransactions: boolean;
}

const DEAD_AFTER = 60_000;
const user = (name: string): string => `${name}.${randomUUID().slice(0, 8)}@example.com`;
const instance = (name: string): string => `${name}-${randomUUID().slice(0, 8)}`;
const counts = { connections: 0, users: 0 };

export function describePresenceStoreContract(name: string, open: () => Promise<PresenceStoreFixture>, options: PresenceStoreContractOptions): void {
  describe(`PresenceStore contract: ${name}`, () => {
    let fx: PresenceStoreFixture;
    let store: PresenceStore;
    beforeAll(async () => {
      fx = await open();
      store = fx.store;
    });
    afterAll(async () => {
      await fx?.close();
    });

    async function liveInstances(...names: string[]): Promise<string[]> {
      const ids = names.map(instance);
      for (const id of ids) await store.heartbeat(id, counts);
      return ids;
    }

    it('registers an instance on its first beat, and again only after it was swept', async () => {
      const id = instance('i');
      expect(await store.heartbeat(id, counts)).toEqual({ registered: true });
      expect(await store.heartbeat(id, { connections: 3, users: 2 })).toEqual({ registered: false });
      const row = (await store.instances(DEAD_AFTER)).find((r) => r.instanceId === id);
      expect(row).toMatchObject({ instanceId: id, alive: true, connections: 3, users: 2 });
      await fx.age(id, DEAD_AFTER + 1_000);
      expect((await store.instances(DEAD_AFTER)).find((r) => r.instanceId === id)?.alive).toBe(false);
      await store.sweep(DEAD_AFTER);
      expect((await store.instances(DEAD_AFTER)).find((r) => r.instanceId === id)).toBeUndefined();
      expect(await store.heartbeat(id, counts)).toEqual({ registered: true });
    });

    it('reports the cluster-wide transitions only: first online anywhere, last offline everywhere', async () => {
      const [one, two] = await liveInstances('one', 'two');
      const bob = user('bob');
      expect(await store.presenceOf([bob], DEAD_AFTER)).toEqual(new Map([[bob, { online: false, lastSeenAt: null }]]));

      expect(await store.online(bob, one!, DEAD_AFTER)).toEqual({ firstOnline: true });
      expect(await store.online(bob, one!, DEAD_AFTER)).toEqual({ firstOnline: false });
      expect(await store.online(bob, two!, DEAD_AFTER)).toEqual({ firstOnline: false });
      expect((await store.presenceOf([bob], DEAD_AFTER)).get(bob)).toEqual({ online: true, lastSeenAt: null });

      const first = new Date(Date.now() - 5_000);
      expect((await store.offline(bob, one!, first, DEAD_AFTER)).lastOffline).toBe(false);
      expect((await store.presenceOf([bob], DEAD_AFTER)).get(bob)?.online).toBe(true);
      const last = new Date(Date.now() - 1_000);
      const gone = await store.offline(bob, two!, last, DEAD_AFTER);
      expect(gone).toEqual({ lastOffline: true, lastSeenAt: last });
      expect((await store.presenceOf([bob], DEAD_AFTER)).get(bob)).toEqual({ online: false, lastSeenAt: last });
    });

    it('never moves last-seen backwards', async () => {
      const [one] = await liveInstances('one');
      const bob = user('bob');
      const later = new Date(Date.now() - 1_000);
      await store.online(bob, one!, DEAD_AFTER);
      await store.offline(bob, one!, later, DEAD_AFTER);
      await store.online(bob, one!, DEAD_AFTER);
      const { lastSeenAt } = await store.offline(bob, one!, new Date(later.getTime() - 60_000), DEAD_AFTER);
      expect(lastSeenAt).toEqual(later);
      expect((await store.presenceOf([bob], DEAD_AFTER)).get(bob)?.lastSeenAt).toEqual(later);
    });

    it('counts only live instances, and a sweep records a dead one’s users offline at its last beat', async () => {
      const [dead, live] = await liveInstances('dead', 'live');
      const [ann, ben] = [user('ann'), user('ben')];
      await store.online(ann, dead!, DEAD_AFTER);
      await store.online(ben, dead!, DEAD_AFTER);
      await store.online(ben, live!, DEAD_AFTER);
      expect(await store.onlineUsers(DEAD_AFTER)).toBeGreaterThanOrEqual(2);

      await fx.age(dead!, DEAD_AFTER + 5_000);
      const beat = (await store.instances(DEAD_AFTER)).find((r) => r.instanceId === dead)!.aliveAt;
      // Not counted before any sweep: a dead instance's rows are nobody's presence.
      expect((await store.presenceOf([ann], DEAD_AFTER)).get(ann)?.online).toBe(false);
      // ben is online on a live instance: that is news to no one, and ann going online elsewhere is.
      const carl = user('carl');
      await store.online(carl, dead!, DEAD_AFTER);

      const swept = await fx.peer.sweep(DEAD_AFTER);
      const mine = swept.filter((c) => [ann, ben, carl].includes(c.email));
      expect(mine.map((c) => c.email).sort()).toEqual([ann, carl].sort());
      for (const change of mine) expect(change).toEqual({ email: change.email, online: false, lastSeenAt: beat });
      expect((await store.presenceOf([ann, ben], DEAD_AFTER)).get(ben)?.online).toBe(true);
      expect((await store.presenceOf([ann], DEAD_AFTER)).get(ann)).toEqual({ online: false, lastSeenAt: beat });
      expect((await store.sweep(DEAD_AFTER)).filter((c) => [ann, ben, carl].includes(c.email))).toEqual([]);
    });

    it('leave records every user of a stopping instance offline now, except those online elsewhere', async () => {
      const [stopping, other] = await liveInstances('stopping', 'other');
      const [ann, ben] = [user('ann'), user('ben')];
      await store.online(ann, stopping!, DEAD_AFTER);
      await store.online(ben, stopping!, DEAD_AFTER);
      await store.online(ben, other!, DEAD_AFTER);
      const before = Date.now();
      const changes = await store.leave(stopping!, DEAD_AFTER);
      expect(changes.map((c) => c.email)).toEqual([ann]);
      expect(changes[0]!.online).toBe(false);
      expect(Math.abs(changes[0]!.lastSeenAt!.getTime() - before)).toBeLessThan(5_000);
      expect((await store.instances(DEAD_AFTER)).some((r) => r.instanceId === stopping)).toBe(false);
      expect(await store.leave(stopping!, DEAD_AFTER)).toEqual([]);
    });

    it('lists the peers of a user once each, with a session they share', async () => {
      const [ann, ben, cat, dan] = [user('ann'), user('ben'), user('cat'), user('dan')];
      const s1 = await fx.openSession(ann, ben, 'dating');
      const s2 = await fx.openSession(ben, ann, 'friends');
      const s3 = await fx.openSession(cat, ann, 'dating');
      await fx.openSession(ben, dan, 'dating');
      const peers = await store.peersOf(ann);
      expect(peers.map((p) => p.email).sort()).toEqual([ben, cat].sort());
      expect([s1, s2]).toContain(peers.find((p) => p.email === ben)!.sessionId);
      expect(peers.find((p) => p.email === cat)!.sessionId).toBe(s3);
      expect(await store.peersOf(user('nobody'))).toEqual([]);
    });

    it.runIf(options.concurrentTransactions)('of two instances going offline at once, exactly one reports the last offline', async () => {
      const [one, two] = await liveInstances('one', 'two');
      for (let round = 0; round < 10; round++) {
        const bob = user('bob');
        await store.online(bob, one!, DEAD_AFTER);
        await fx.peer.online(bob, two!, DEAD_AFTER);
        const at = new Date();
        const results = await Promise.all([store.offline(bob, one!, at, DEAD_AFTER), fx.peer.offline(bob, two!, at, DEAD_AFTER)]);
        expect(results.filter((r) => r.lastOffline)).toHaveLength(1);
        const back = await Promise.all([store.online(bob, one!, DEAD_AFTER), fx.peer.online(bob, two!, DEAD_AFTER)]);
        expect(back.filter((r) => r.firstOnline)).toHaveLength(1);
      }
    });
  });
}
