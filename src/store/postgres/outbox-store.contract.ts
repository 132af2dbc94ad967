/**
 * The OutboxStore contract (see the port's TSDoc), run against every database it runs on. Tests go
 * through the port only; the fixture writes rows (as the MessageStore's commits do, announcing them
 * under a chosen origin) and reads them back, since writing is not the relay's side of the table.
 * Time passes for the rows, not for the test: rows are written already due, later or long processed.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sessionTopic } from '../../chat/chat-events.js';
import type { BusEnvelope, OutboxStore, OutboxWake } from '../../chat/ports.js';

/** A row to write; by default pending and due now. */
export interface OutboxRowSpec {
  /** Tags the row: its envelope's sessionId. */
  key: string;
  /** next_retry_at relative to now (negative: overdue). Default 0. */
  dueInMs?: number;
  retryCount?: number;
  /** Processed this long ago. */
  processedAgoMs?: number;
  dead?: boolean;
}

export interface StoredOutboxRow {
  id: string;
  key: string;
  processed: boolean;
  dead: boolean;
  retryCount: number;
  lastError: string | null;
  sentAt: Date | null;
  /** next_retry_at − now, by the database's clock. */
  dueInMs: number;
}

export interface OutboxStoreFixture {
  /** The store under test, for the instance whose origin is 'a'. */
  store: OutboxStore;
  /** Another store on the same database, for the instance 'b' (its own connections where there are several). */
  peer: OutboxStore;
  /** Writes the rows in one transaction that announces them as `origin` ('' = unnamed); their ids, in order. */
  write(rows: readonly OutboxRowSpec[], origin?: string): Promise<string[]>;
  read(): Promise<StoredOutboxRow[]>;
  /** Holds the rows locked in another transaction while fn runs; only with `concurrentTransactions`. */
  whileLocked(ids: readonly string[], fn: () => Promise<void>): Promise<void>;
  /** Deletes every row. */
  reset(): Promise<void>;
  close(): Promise<void>;
}

/**
 * `concurrentTransactions`: the database runs transactions side by side (PostgreSQL; PGlite is one
 * connection and runs them one after another), which adds the test of a claim meeting a lock.
 */
export interface OutboxStoreContractOptions {
  concurrentTransactions: boolean;
}

/** The envelope written for a row: a typing event whose sessionId is the row's key. */
export function outboxEnvelope(key: string): BusEnvelope {
  return {
    recipients: ['ann@example.com', 'ben@example.com'],
    event: { type: 'typing', sessionId: key, destinations: [{ topic: sessionTopic(key) }], typing: { sessionId: key, email: 'ann@example.com', typing: true } },
  };
}

const newKeys = (n: number, prefix = 'k'): string[] => Array.from({ length: n }, (_, i) => `${prefix}-${i}-${randomUUID().slice(0, 8)}`);
const LEASE_MS = 60_000;
/** How far a due time read back may trail the one written (statements take time on a busy machine). */
const SLACK_MS = 5_000;

export function describeOutboxStoreContract(name: string, open: () => Promise<OutboxStoreFixture>, options: OutboxStoreContractOptions): void {
  describe(`OutboxStore contract: ${name}`, () => {
    let fx: OutboxStoreFixture;
    beforeAll(async () => {
      fx = await open();
    });
    afterAll(async () => {
      await fx?.close();
    });
    beforeEach(async () => {
      await fx.reset();
    });

    const rowsBy = async (): Promise<Map<string, StoredOutboxRow>> => new Map((await fx.read()).map((r) => [r.key, r]));

    describe('claim', () => {
      it('takes due rows lowest id first, up to the batch size, and leases them all with one lease', async () => {
        const keys = newKeys(5);
        const ids = await fx.write(keys.map((key) => ({ key })));

        const first = await fx.store.claim(3, LEASE_MS);
        expect(first.map((r) => r.id)).toEqual(ids.slice(0, 3));
        expect(first.map((r) => r.payload)).toEqual(keys.slice(0, 3).map(outboxEnvelope));
        expect(first.every((r) => r.retryCount === 0 && r.createdAt instanceof Date)).toBe(true);
        expect(new Set(first.map((r) => r.lease)).size).toBe(1);

        const stored = await rowsBy();
        for (const key of keys.slice(0, 3)) {
          expect(stored.get(key)!.dueInMs).toBeLessThanOrEqual(LEASE_MS);
          expect(stored.get(key)!.dueInMs).toBeGreaterThan(LEASE_MS - SLACK_MS);
        }
        for (const key of keys.slice(3)) expect(stored.get(key)!.dueInMs).toBeLessThanOrEqual(0);

        expect((await fx.store.claim(10, LEASE_MS)).map((r) => r.id)).toEqual(ids.slice(3));
        expect(await fx.store.claim(10, LEASE_MS)).toEqual([]);
      });

      it('takes only pending rows that are due, with their retry count', async () => {
        const [due, retried, later, processed, dead] = newKeys(5);
        const ids = await fx.write([
          { key: due! },
          { key: retried!, retryCount: 2, dueInMs: -1_000 },
          { key: later!, dueInMs: LEASE_MS },
          { key: processed!, processedAgoMs: 1_000 },
          { key: dead!, dead: true, retryCount: 10 },
        ]);
        const claimed = await fx.store.claim(10, LEASE_MS);
        expect(claimed.map((r) => [r.id, r.retryCount])).toEqual([
          [ids[0], 0],
          [ids[1], 2],
        ]);
      });

      it('never hands a row to two claims while its lease holds', async () => {
        const ids = await fx.write(newKeys(50).map((key) => ({ key })));
        const concurrent = await Promise.all([fx.store.claim(20, LEASE_MS), fx.peer.claim(20, LEASE_MS), fx.store.claim(20, LEASE_MS)]);
        const rest = await fx.peer.claim(50, LEASE_MS);
        const all = [...concurrent.flat(), ...rest].map((r) => r.id);
        expect(all).toHaveLength(50);
        expect(new Set(all)).toEqual(new Set(ids));
        for (const claim of [...concurrent, rest]) expect(new Set(claim.map((r) => r.lease)).size).toBeLessThanOrEqual(1);
      });

      it('makes a row due again once its lease ends, under a new lease', async () => {
        const [id] = await fx.write([{ key: newKeys(1)[0]! }]);
        const [first] = await fx.store.claim(10, 30);
        expect(first?.id).toBe(id);
        await expect.poll(() => fx.peer.claim(10, LEASE_MS), { timeout: 5_000, interval: 10 }).toHaveLength(1);
        const [again] = (await fx.read()).filter((r) => r.id === id);
        expect(again!.dueInMs).toBeGreaterThan(LEASE_MS - SLACK_MS);
        // The first lease is gone: a failure recorded under it is not recorded.
        expect(await fx.store.markFailed([{ id: id!, lease: first!.lease, counted: true, delayMs: 0, error: 'late' }], 10)).toEqual([]);
      });

      if (options.concurrentTransactions) {
        it('skips rows another transaction has locked instead of waiting for them', async () => {
          const ids = await fx.write(newKeys(3).map((key) => ({ key })));
          await fx.whileLocked([ids[1]!], async () => {
            expect((await fx.store.claim(10, LEASE_MS)).map((r) => r.id)).toEqual([ids[0], ids[2]]);
          });
          expect((await fx.store.claim(10, LEASE_MS)).map((r) => r.id)).toEqual([ids[1]]);
        });
      }
    });

    describe('markPublished', () => {
      it('marks rows processed whatever lease holds them now, and leaves processed rows as they are', async () => {
        const [key] = newKeys(1);
        const [id] = await fx.write([{ key: key! }]);
        await fx.store.claim(10, 30);
        // Our lease ended and another relay holds the row: it was still published.
        await expect.poll(() => fx.peer.claim(10, LEASE_MS), { timeout: 5_000, interval: 10 }).toHaveLength(1);
        await fx.store.markPublished([id!]);
        const row = (await rowsBy()).get(key!)!;
        expect(row).toMatchObject({ processed: true, dead: false });
        expect(row.sentAt).toBeInstanceOf(Date);

        await fx.peer.markPublished([id!]);
        expect((await rowsBy()).get(key!)!.sentAt).toEqual(row.sentAt);
        expect(await fx.store.claim(10, 0)).toEqual([]);
      });

      it('marks a dead row that was published after all processed and no longer dead', async () => {
        const [key] = newKeys(1);
        const [id] = await fx.write([{ key: key!, dead: true, retryCount: 10 }]);
        await fx.store.markPublished([id!]);
        expect((await rowsBy()).get(key!)).toMatchObject({ processed: true, dead: false });
        expect(await fx.store.counts()).toEqual({ pending: 0, dead: 0 });
      });
    });

    describe('markFailed', () => {
      it('records a counted failure under the lease it names: retry count, due time and error', async () => {
        const [one, two] = newKeys(2);
        const ids = await fx.write([{ key: one! }, { key: two!, retryCount: 4 }]);
        const claimed = await fx.store.claim(10, LEASE_MS);
        const recorded = await fx.store.markFailed(
          claimed.map((r, i) => ({ id: r.id, lease: r.lease, counted: true, delayMs: 5_000 * (i + 1), error: `failure ${i}` })),
          10,
        );
        expect(recorded.sort((x, y) => x.retryCount - y.retryCount)).toEqual([
          { id: ids[0], retryCount: 1, dead: false },
          { id: ids[1], retryCount: 5, dead: false },
        ]);
        const stored = await rowsBy();
        expect(stored.get(one!)).toMatchObject({ retryCount: 1, lastError: 'failure 0', processed: false, dead: false });
        expect(stored.get(one!)!.dueInMs).toBeLessThanOrEqual(5_000);
        expect(stored.get(one!)!.dueInMs).toBeGreaterThan(5_000 - SLACK_MS);
        expect(stored.get(two!)!.dueInMs).toBeGreaterThan(10_000 - SLACK_MS);

        // Recording it moved the due time, so that lease no longer holds.
        expect(await fx.store.markFailed([{ id: ids[0]!, lease: claimed[0]!.lease, counted: true, delayMs: 0, error: 'again' }], 10)).toEqual([]);
        expect((await rowsBy()).get(one!)).toMatchObject({ retryCount: 1, lastError: 'failure 0' });
      });

      it('records an uncounted failure without touching the retry count, due again after its delay', async () => {
        const [key] = newKeys(1);
        await fx.write([{ key: key!, retryCount: 2 }]);
        const [row] = await fx.store.claim(10, LEASE_MS);
        expect(await fx.store.markFailed([{ id: row!.id, lease: row!.lease, counted: false, delayMs: 0, error: 'bus down' }], 3)).toEqual([
          { id: row!.id, retryCount: 2, dead: false },
        ]);
        const stored = (await rowsBy()).get(key!)!;
        expect(stored).toMatchObject({ retryCount: 2, lastError: 'bus down', dead: false });
        expect(stored.dueInMs).toBeLessThanOrEqual(0);
        expect(await fx.store.claim(10, LEASE_MS)).toHaveLength(1);
      });

      it('makes a row dead when its counted failures reach maxRetries; a dead row is never claimed again', async () => {
        const [dying, living] = newKeys(2);
        await fx.write([{ key: dying!, retryCount: 2 }, { key: living!, retryCount: 1 }]);
        const claimed = await fx.store.claim(10, LEASE_MS);
        const recorded = await fx.store.markFailed(
          claimed.map((r) => ({ id: r.id, lease: r.lease, counted: true, delayMs: 0, error: 'poison' })),
          3,
        );
        expect(recorded.map((r) => [r.retryCount, r.dead]).sort()).toEqual([
          [2, false],
          [3, true],
        ]);
        expect((await rowsBy()).get(dying!)).toMatchObject({ dead: true, processed: false, retryCount: 3, lastError: 'poison' });
        expect((await fx.store.claim(10, LEASE_MS)).map((r) => r.retryCount)).toEqual([2]);
        expect(await fx.store.counts()).toEqual({ pending: 1, dead: 1 });
      });

      it('leaves rows it has no lease on untouched: processed, or claimed by another relay since', async () => {
        const [published, reclaimed] = newKeys(2);
        await fx.write([{ key: published! }, { key: reclaimed! }]);
        const claimed = await fx.store.claim(10, 30);
        await fx.store.markPublished([claimed[0]!.id]);
        await expect.poll(() => fx.peer.claim(10, LEASE_MS), { timeout: 5_000, interval: 10 }).toHaveLength(1);
        expect(await fx.store.markFailed(claimed.map((r) => ({ id: r.id, lease: r.lease, counted: true, delayMs: 0, error: 'too late' })), 1)).toEqual([]);
        const stored = await rowsBy();
        expect(stored.get(published!)).toMatchObject({ processed: true, retryCount: 0, lastError: null });
        expect(stored.get(reclaimed!)).toMatchObject({ processed: false, dead: false, retryCount: 0, lastError: null });
        expect(stored.get(reclaimed!)!.dueInMs).toBeGreaterThan(LEASE_MS - SLACK_MS);
      });
    });

    it('release makes leased rows due now for any relay, and leaves processed and dead rows alone', async () => {
      const [a, b, c, processed, dead] = newKeys(5);
      const ids = await fx.write([{ key: a!, dueInMs: LEASE_MS }, { key: b!, dueInMs: LEASE_MS }, { key: c!, dueInMs: LEASE_MS }, { key: processed!, processedAgoMs: 1_000 }, { key: dead!, dead: true }]);
      expect(await fx.peer.claim(10, LEASE_MS)).toEqual([]);
      await fx.store.release([ids[0]!, ids[1]!, ids[3]!, ids[4]!]);
      expect((await fx.peer.claim(10, LEASE_MS)).map((r) => r.id)).toEqual([ids[0], ids[1]]);
      const stored = await rowsBy();
      expect(stored.get(c!)!.dueInMs).toBeGreaterThan(LEASE_MS - SLACK_MS);
      expect(stored.get(processed!)).toMatchObject({ processed: true, dead: false });
      expect(stored.get(dead!)).toMatchObject({ processed: false, dead: true });
    });

    it('nextRetryInMs: the time until the earliest pending row that failed before is due, or null', async () => {
      expect(await fx.store.nextRetryInMs()).toBeNull();
      // Not retries: never failed (a fresh leased row), published, dead.
      await fx.write([{ key: 'fresh', dueInMs: 1_000 }, { key: 'published', retryCount: 1, processedAgoMs: 0, dueInMs: 1_000 }, { key: 'dead', retryCount: 10, dead: true, dueInMs: 1_000 }]);
      expect(await fx.store.nextRetryInMs()).toBeNull();

      await fx.write([{ key: 'later', retryCount: 1, dueInMs: 20_000 }, { key: 'sooner', retryCount: 3, dueInMs: 8_000 }]);
      const ms = (await fx.store.nextRetryInMs())!;
      expect(ms).toBeLessThanOrEqual(8_000);
      expect(ms).toBeGreaterThan(8_000 - SLACK_MS);

      await fx.write([{ key: 'overdue', retryCount: 1, dueInMs: -5_000 }]);
      expect(await fx.store.nextRetryInMs()).toBe(0);
    });

    it('prune deletes processed rows published longer ago than the threshold, at most limit per call', async () => {
      await fx.write([
        ...Array.from({ length: 30 }, () => ({ key: 'old', processedAgoMs: 120_000 })),
        { key: 'recent', processedAgoMs: 1_000 },
        { key: 'dead', dead: true, retryCount: 10, dueInMs: -120_000 },
        { key: 'pending', dueInMs: -120_000 },
        { key: 'later', dueInMs: 3_600_000 },
      ]);
      const deleted: number[] = [];
      for (let n = -1; n !== 0; ) {
        n = await fx.store.prune(60_000, 7);
        deleted.push(n);
      }
      expect(deleted).toEqual([7, 7, 7, 7, 2, 0]);
      expect((await fx.read()).map((r) => r.key).sort()).toEqual(['dead', 'later', 'pending', 'recent']);
    });

    it('counts pending rows (leased or not) and dead rows', async () => {
      expect(await fx.store.counts()).toEqual({ pending: 0, dead: 0 });
      await fx.write([
        { key: 'due' },
        { key: 'retry', retryCount: 3, dueInMs: 5_000 },
        { key: 'leased', dueInMs: LEASE_MS },
        { key: 'published', processedAgoMs: 0 },
        { key: 'published', processedAgoMs: 120_000 },
        { key: 'dead', dead: true },
        { key: 'dead', dead: true, retryCount: 10 },
      ]);
      expect(await fx.store.counts()).toEqual({ pending: 3, dead: 2 });
      expect(await fx.peer.counts()).toEqual({ pending: 3, dead: 2 });
    });

    it('tells the age of the oldest pending row, ignoring published and dead rows', async () => {
      expect(await fx.store.oldestPendingAgeMs()).toBeNull();
      await fx.write([{ key: 'published', processedAgoMs: 120_000 }, { key: 'dead', dead: true }]);
      expect(await fx.store.oldestPendingAgeMs()).toBeNull();
      await fx.write([{ key: 'leased', dueInMs: LEASE_MS }]);
      await new Promise((r) => setTimeout(r, 50));
      const age = await fx.store.oldestPendingAgeMs();
      expect(age).toBeGreaterThanOrEqual(40);
      expect(age).toBeLessThan(10_000);
    });

    it('accepts empty arrays and touches nothing', async () => {
      await fx.write([{ key: 'row' }]);
      const before = await fx.read();
      await fx.store.markPublished([]);
      expect(await fx.store.markFailed([], 1)).toEqual([]);
      await fx.store.release([]);
      const after = await fx.read();
      expect(after.map(({ dueInMs: _, ...row }) => row)).toEqual(before.map(({ dueInMs: _, ...row }) => row));
    });

    it('lists dead rows lowest id first, with their error, event type and session, in pages', async () => {
      const [pending, dead1, processed, dead2] = newKeys(4);
      const ids = await fx.write([{ key: pending! }, { key: dead1!, dead: true, retryCount: 10 }, { key: processed!, processedAgoMs: 1_000 }, { key: dead2!, dead: true, retryCount: 3 }]);
      const listed = await fx.store.listDead(10);
      expect(listed.map((r) => [r.id, r.sessionId, r.eventType, r.retryCount])).toEqual([
        [ids[1], dead1, 'typing', 10],
        [ids[3], dead2, 'typing', 3],
      ]);
      expect(listed[0]!.createdAt).toBeInstanceOf(Date);
      expect(listed[0]!.lastError).toBeNull();
      expect((await fx.store.listDead(1)).map((r) => r.id)).toEqual([ids[1]]);
      expect((await fx.store.listDead(10, ids[1])).map((r) => r.id)).toEqual([ids[3]]);
    });

    it('replays a dead row: pending and due now with no retries, claimable, and every relay woken', async () => {
      const [dead, pending] = newKeys(2);
      const ids = await fx.write([{ key: dead!, dead: true, retryCount: 10 }, { key: pending!, dueInMs: LEASE_MS }]);
      const wakes: OutboxWake[] = [];
      const stop = await fx.peer.subscribe((w) => wakes.push(w));
      try {
        wakes.length = 0;
        expect(await fx.store.replayDead(ids[0]!)).toBe(true);
        await expect.poll(() => wakes.includes('unknown'), { timeout: 5_000, interval: 5 }).toBe(true);
      } finally {
        await stop();
      }
      const row = (await rowsBy()).get(dead!)!;
      expect(row).toMatchObject({ dead: false, processed: false, retryCount: 0 });
      expect(row.dueInMs).toBeLessThanOrEqual(0);
      expect(await fx.store.listDead(10)).toEqual([]);
      expect((await fx.store.claim(10, LEASE_MS)).map((r) => [r.id, r.retryCount])).toEqual([[ids[0], 0]]);
      // Not dead (any more, or ever), or no such row: false, nothing touched.
      expect(await fx.store.replayDead(ids[0]!)).toBe(false);
      expect(await fx.store.replayDead(ids[1]!)).toBe(false);
      expect(await fx.store.replayDead('999999999')).toBe(false);
      expect(await fx.store.replayDead('not-a-number')).toBe(false);
      expect((await rowsBy()).get(pending!)!.dueInMs).toBeGreaterThan(LEASE_MS - SLACK_MS);
    });

    it('wakes each instance for the others\u2019 commits and unnamed ones, never for its own', async () => {
      const wakes: Record<'a' | 'b', OutboxWake[]> = { a: [], b: [] };
      const stopA = await fx.store.subscribe((w) => wakes.a.push(w));
      const stopB = await fx.peer.subscribe((w) => wakes.b.push(w));
      try {
        // Subscribing may report a possible gap at once ('unknown'); count from here.
        wakes.a.length = 0;
        wakes.b.length = 0;
        await fx.write([{ key: 'from-a' }], 'a');
        await expect.poll(() => [...wakes.b], { timeout: 5_000, interval: 5 }).toEqual(['other-instance']);
        await fx.write([{ key: 'from-b' }], 'b');
        // Notifications arrive in commit order: had 'a' been told of its own commit, it would be first.
        await expect.poll(() => [...wakes.a], { timeout: 5_000, interval: 5 }).toEqual(['other-instance']);
        await fx.write([{ key: 'unnamed' }], '');
        await expect.poll(() => [...wakes.a], { timeout: 5_000, interval: 5 }).toEqual(['other-instance', 'unknown']);
        await expect.poll(() => [...wakes.b], { timeout: 5_000, interval: 5 }).toEqual(['other-instance', 'unknown']);
      } finally {
        await stopA();
      }

      // Stopped: the old handler hears nothing more, while a new subscription does.
      const again: OutboxWake[] = [];
      const stopAgain = await fx.store.subscribe((w) => again.push(w));
      try {
        again.length = 0;
        await fx.write([{ key: 'after-stop' }], 'b');
        await expect.poll(() => [...again], { timeout: 5_000, interval: 5 }).toEqual(['other-instance']);
        await expect.poll(() => [...wakes.b], { timeout: 5_000, interval: 5 }).toEqual(['other-instance', 'unknown']);
        expect(wakes.a).toEqual(['other-instance', 'unknown']);
      } finally {
        await Promise.all([stopAgain(), stopB()]);
      }
    });
  });
}
