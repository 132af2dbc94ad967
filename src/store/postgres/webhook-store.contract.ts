/**
 * The WebhookStore contract (see the port's TSDoc), run against every database it runs on. Tests go
 * through the port only; the fixture writes rows as the MessageStore's commits do, reads them back,
 * and locks them from another transaction. Time passes for the rows, not for the test: rows are
 * written already due, later, delivered long ago or dead.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sessionTopic } from '../../chat/chat-events.js';
import type { BusEnvelope, LeasedWebhookRow, WebhookStore } from '../../chat/ports.js';

/** A row to write; by default pending and due now, of type message.created. */
export interface WebhookRowSpec {
  session: string;
  /** Tags the row: its envelope's message id. */
  tag: string;
  dueInMs?: number;
  attempts?: number;
  deliveredAgoMs?: number;
  dead?: boolean;
}

export interface StoredWebhookRow {
  id: string;
  tag: string;
  attempts: number;
  dead: boolean;
  delivered: boolean;
  lastError: string | null;
  /** next_attempt_at − now, by the database's clock. */
  dueInMs: number;
}

export interface WebhookStoreFixture {
  store: WebhookStore;
  /** Another store on the same database, as another instance has. */
  peer: WebhookStore;
  /** Writes the rows in one transaction, in order; their ids. */
  write(rows: readonly WebhookRowSpec[]): Promise<string[]>;
  read(): Promise<StoredWebhookRow[]>;
  /** Holds the rows locked in another transaction while fn runs; only with `concurrentTransactions`. */
  whileLocked(ids: readonly string[], fn: () => Promise<void>): Promise<void>;
  reset(): Promise<void>;
  close(): Promise<void>;
}

export function webhookEnvelope(session: string, tag: string): BusEnvelope {
  return {
    recipients: ['ann@example.com', 'ben@example.com'],
    event: {
      type: 'message',
      sessionId: session,
      destinations: [{ topic: sessionTopic(session) }, { user: 'ben@example.com', queue: 'messages' }],
      message: {
        messageId: tag,
        sessionId: session,
        seq: 1,
        senderId: 'p',
        senderEmail: 'ann@example.com',
        senderDisplayName: 'Ann',
        content: 'hi',
        clientMessageId: tag,
        sentAt: new Date(0).toISOString(),
        delivered: false,
        seen: false,
        editedAt: null,
        deleted: false,
      },
    },
  };
}

const LEASE_MS = 60_000;
const SLACK_MS = 5_000;
const sessions = (n: number): string[] => Array.from({ length: n }, () => randomUUID());
const tags = (rows: readonly LeasedWebhookRow[]): string[] => rows.map((r) => (r.payload.event.type === 'message' ? r.payload.event.message.messageId : '?'));

export function describeWebhookStoreContract(name: string, open: () => Promise<WebhookStoreFixture>, options: { concurrentTransactions: boolean }): void {
  describe(`WebhookStore contract: ${name}`, () => {
    let fx: WebhookStoreFixture;
    beforeAll(async () => {
      fx = await open();
    });
    afterAll(async () => {
      await fx?.close();
    });
    beforeEach(async () => {
      await fx.reset();
    });

    const byTag = async (): Promise<Map<string, StoredWebhookRow>> => new Map((await fx.read()).map((r) => [r.tag, r]));

    describe('claim', () => {
      it('takes the first pending row of each session, lowest id first, with its event id, type and payload', async () => {
        const [s1, s2, s3] = sessions(3);
        const ids = await fx.write([
          { session: s1!, tag: 'a1' },
          { session: s2!, tag: 'b1' },
          { session: s1!, tag: 'a2' },
          { session: s3!, tag: 'c1' },
          { session: s2!, tag: 'b2' },
        ]);
        const claimed = await fx.store.claim(10, LEASE_MS);
        expect(tags(claimed)).toEqual(['a1', 'b1', 'c1']);
        expect(claimed.map((r) => r.id)).toEqual([ids[0], ids[1], ids[3]]);
        expect(claimed.map((r) => r.sessionId)).toEqual([s1, s2, s3]);
        expect(claimed[0]!.payload).toEqual(webhookEnvelope(s1!, 'a1'));
        expect(claimed.every((r) => r.type === 'message.created' && r.attempts === 0 && r.createdAt instanceof Date)).toBe(true);
        expect(new Set(claimed.map((r) => r.eventId)).size).toBe(3);
        expect(claimed.every((r) => /^[0-9a-f-]{36}$/.test(r.eventId))).toBe(true);
        // Every session's head is in flight: nothing else may go.
        expect(await fx.peer.claim(10, LEASE_MS)).toEqual([]);
        const stored = await byTag();
        expect(stored.get('a1')!.dueInMs).toBeGreaterThan(LEASE_MS - SLACK_MS);
      });

      it('takes a session\'s next row only once the earlier one was delivered', async () => {
        const [s] = sessions(1);
        await fx.write([{ session: s!, tag: 'm1' }, { session: s!, tag: 'm2' }, { session: s!, tag: 'm3' }]);
        const order: string[] = [];
        for (let i = 0; i < 3; i++) {
          const claimed = await fx.store.claim(10, LEASE_MS);
          expect(claimed).toHaveLength(1);
          order.push(...tags(claimed));
          await fx.store.markDelivered(claimed.map((r) => r.id));
        }
        expect(order).toEqual(['m1', 'm2', 'm3']);
        expect(await fx.store.claim(10, LEASE_MS)).toEqual([]);
        expect((await fx.read()).every((r) => r.delivered)).toBe(true);
      });

      it('keeps a session waiting behind a row that failed until it is due again, and other sessions going', async () => {
        const [slow, other] = sessions(2);
        await fx.write([{ session: slow!, tag: 's1', attempts: 1, dueInMs: LEASE_MS }, { session: slow!, tag: 's2' }, { session: other!, tag: 'o1' }]);
        expect(tags(await fx.store.claim(10, LEASE_MS))).toEqual(['o1']);
      });

      it('respects the limit and takes the rest on the next claim', async () => {
        const ss = sessions(5);
        await fx.write(ss.map((session, i) => ({ session, tag: `t${i}` })));
        expect(tags(await fx.store.claim(2, LEASE_MS))).toEqual(['t0', 't1']);
        expect(tags(await fx.peer.claim(10, LEASE_MS))).toEqual(['t2', 't3', 't4']);
      });

      it('skips delivered and dead rows, and a dead row no longer holds its session back', async () => {
        const [s, t] = sessions(2);
        await fx.write([
          { session: s!, tag: 'delivered', deliveredAgoMs: 1_000 },
          { session: s!, tag: 'dead', dead: true, attempts: 5 },
          { session: s!, tag: 'next' },
          { session: t!, tag: 'later', dueInMs: LEASE_MS },
        ]);
        expect(tags(await fx.store.claim(10, LEASE_MS))).toEqual(['next']);
      });

      it('makes a row claimable again once its lease ends, and its session\'s later rows still wait', async () => {
        const [s] = sessions(1);
        await fx.write([{ session: s!, tag: 'first' }, { session: s!, tag: 'second' }]);
        const [held] = await fx.store.claim(10, 50);
        expect(held && tags([held])).toEqual(['first']);
        await expect.poll(async () => tags(await fx.peer.claim(10, LEASE_MS)), { timeout: 5_000, interval: 20 }).toEqual(['first']);
        expect(await fx.store.claim(10, LEASE_MS)).toEqual([]);
      });

      it('never hands a row, or two rows of one session, to concurrent claims', async () => {
        const ss = sessions(10);
        await fx.write(ss.flatMap((session, i) => [0, 1, 2].map((n) => ({ session, tag: `${i}-${n}` }))));
        const seen: LeasedWebhookRow[] = [];
        for (let round = 0; round < 3; round++) {
          const claims = (await Promise.all([fx.store.claim(4, LEASE_MS), fx.peer.claim(4, LEASE_MS), fx.store.claim(4, LEASE_MS), fx.peer.claim(4, LEASE_MS)])).flat();
          const sessionIds = claims.map((r) => r.sessionId);
          expect(new Set(sessionIds).size, 'one row per session in flight').toBe(sessionIds.length);
          seen.push(...claims);
          await fx.store.markDelivered(claims.map((r) => r.id));
          const rest = await fx.peer.claim(100, LEASE_MS);
          expect(new Set(rest.map((r) => r.sessionId)).size).toBe(rest.length);
          seen.push(...rest);
          await fx.peer.markDelivered(rest.map((r) => r.id));
        }
        expect(seen).toHaveLength(30);
        expect(new Set(seen.map((r) => r.id)).size).toBe(30);
        // Each session's rows came out in their order.
        for (let i = 0; i < ss.length; i++) expect(tags(seen).filter((t) => t.startsWith(`${i}-`))).toEqual([`${i}-0`, `${i}-1`, `${i}-2`]);
      });

      it.skipIf(!options.concurrentTransactions)('skips a row another transaction holds locked, and holds its session back meanwhile', async () => {
        const [s, t] = sessions(2);
        const ids = await fx.write([{ session: s!, tag: 'locked' }, { session: s!, tag: 'behind' }, { session: t!, tag: 'free' }]);
        await fx.whileLocked([ids[0]!], async () => {
          expect(tags(await fx.store.claim(10, LEASE_MS))).toEqual(['free']);
        });
        expect(tags(await fx.store.claim(10, LEASE_MS))).toEqual(['locked']);
      });
    });

    describe('markFailed', () => {
      it('counts the attempt, keeps the error, makes the row due after the delay, and dead at the last attempt', async () => {
        const [s] = sessions(1);
        await fx.write([{ session: s!, tag: 'r' }, { session: s!, tag: 'behind' }]);
        const [row] = await fx.store.claim(10, LEASE_MS);
        const recorded = await fx.store.markFailed([{ id: row!.id, lease: row!.lease, delayMs: 30_000, error: 'HTTP 503' }], 3);
        expect(recorded).toEqual([{ id: row!.id, attempts: 1, dead: false }]);
        const stored = (await byTag()).get('r')!;
        expect(stored).toMatchObject({ attempts: 1, dead: false, delivered: false, lastError: 'HTTP 503' });
        expect(stored.dueInMs).toBeGreaterThan(30_000 - SLACK_MS);
        expect(stored.dueInMs).toBeLessThanOrEqual(30_000);
        expect(await fx.store.claim(10, LEASE_MS), 'the session waits for its retry').toEqual([]);
      });

      it('retries with the same event id, and after the last attempt the row is dead and its session moves on', async () => {
        const [s] = sessions(1);
        await fx.write([{ session: s!, tag: 'doomed' }, { session: s!, tag: 'next' }]);
        const eventIds = new Set<string>();
        for (let attempt = 1; attempt <= 3; attempt++) {
          const [row] = await fx.store.claim(10, LEASE_MS);
          expect(row && tags([row])).toEqual(['doomed']);
          expect(row!.attempts).toBe(attempt - 1);
          eventIds.add(row!.eventId);
          const [recorded] = await fx.store.markFailed([{ id: row!.id, lease: row!.lease, delayMs: 0, error: `try ${attempt}` }], 3);
          expect(recorded).toEqual({ id: row!.id, attempts: attempt, dead: attempt === 3 });
        }
        expect(eventIds.size).toBe(1);
        expect((await byTag()).get('doomed')).toMatchObject({ dead: true, attempts: 3, lastError: 'try 3' });
        expect(tags(await fx.store.claim(10, LEASE_MS))).toEqual(['next']);
        expect(await fx.store.counts()).toEqual({ pending: 1, dead: 1 });
      });

      it('records nothing under a lease that no longer holds', async () => {
        const [s] = sessions(1);
        await fx.write([{ session: s!, tag: 'x' }]);
        const [stale] = await fx.store.claim(10, 30);
        await expect.poll(async () => (await fx.peer.claim(10, LEASE_MS)).length, { timeout: 5_000, interval: 20 }).toBe(1);
        expect(await fx.store.markFailed([{ id: stale!.id, lease: stale!.lease, delayMs: 0, error: 'late' }], 1)).toEqual([]);
        expect((await byTag()).get('x')).toMatchObject({ attempts: 0, dead: false, lastError: null });
        expect(await fx.store.claim(10, LEASE_MS), 'the peer holds it now').toEqual([]);
      });

      it('a delivered row stays delivered whatever lease holds it, and a failure reported after is ignored', async () => {
        const [s] = sessions(1);
        await fx.write([{ session: s!, tag: 'y' }]);
        const [row] = await fx.store.claim(10, LEASE_MS);
        await fx.peer.markDelivered([row!.id]);
        expect(await fx.store.markFailed([{ id: row!.id, lease: row!.lease, delayMs: 0, error: 'too late' }], 1)).toEqual([]);
        expect((await byTag()).get('y')).toMatchObject({ delivered: true, dead: false, attempts: 0 });
      });

      it('release makes a leased row due now without counting an attempt, only under its lease', async () => {
        const [s] = sessions(1);
        await fx.write([{ session: s!, tag: 'held' }, { session: s!, tag: 'behind' }]);
        const [row] = await fx.store.claim(10, LEASE_MS);
        await fx.store.release([{ id: row!.id, lease: '00000000-0000-4000-8000-000000000000' }]);
        expect(await fx.peer.claim(10, LEASE_MS), 'a lease that is not the row\'s releases nothing').toEqual([]);
        await fx.store.release([{ id: row!.id, lease: row!.lease }]);
        const [again] = await fx.peer.claim(10, LEASE_MS);
        expect(again && tags([again])).toEqual(['held']);
        expect(again!.attempts).toBe(0);
        expect(again!.eventId).toBe(row!.eventId);
        expect(await fx.store.markFailed([{ id: row!.id, lease: row!.lease, delayMs: 0, error: 'old lease' }], 1), 'the old lease is gone').toEqual([]);
      });

      it('accepts empty arrays and touches nothing', async () => {
        await fx.write([{ session: sessions(1)[0]!, tag: 'z' }]);
        await fx.store.release([]);
        await fx.store.markDelivered([]);
        expect(await fx.store.markFailed([], 3)).toEqual([]);
        expect(await fx.store.claim(0, LEASE_MS)).toEqual([]);
        expect(await fx.store.counts()).toEqual({ pending: 1, dead: 0 });
      });
    });

    describe('counts and prune', () => {
      it('counts pending and dead rows, and prunes only rows delivered long enough ago', async () => {
        const [s, t, u, v] = sessions(4);
        await fx.write([
          { session: s!, tag: 'old', deliveredAgoMs: 3_600_000 },
          { session: s!, tag: 'old2', deliveredAgoMs: 3_600_000 },
          { session: t!, tag: 'recent', deliveredAgoMs: 1_000 },
          { session: u!, tag: 'pending' },
          { session: v!, tag: 'dead', dead: true, attempts: 8 },
        ]);
        expect(await fx.store.counts()).toEqual({ pending: 1, dead: 1 });
        expect(await fx.store.prune(60_000, 1)).toBe(1);
        expect(await fx.store.prune(60_000, 100)).toBe(1);
        expect(await fx.store.prune(60_000, 100)).toBe(0);
        expect([...(await byTag()).keys()].sort()).toEqual(['dead', 'pending', 'recent']);
      });
    });
  });
}
