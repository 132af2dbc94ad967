import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { HistoryQuery } from './chat-api.js';
import { ChatClientError } from './chat-client-error.js';
import type { ChatMessage, HistoryPage, SyncPage } from './chat-types.js';
import { SessionRecovery } from './session-recovery.js';

const GAP_MS = 1_000;
const RETRY_MS = 2_000;

const message = (sessionId: string, seq: number): ChatMessage => ({
  messageId: `${sessionId}-${seq}`,
  sessionId,
  seq,
  senderId: 'peer',
  senderEmail: 'peer@example.com',
  senderDisplayName: 'Peer',
  content: `m${seq}`,
  clientMessageId: `c-${sessionId}-${seq}`,
  sentAt: new Date(0).toISOString(),
  delivered: false,
  seen: false,
  editedAt: null,
  deleted: false,
});

/** A service's history: every session's messages up to `latest`, paged as the REST API does. */
function recovery(syncing?: { sync: (since: string | undefined) => Promise<SyncPage>; syncToken?: string }) {
  const latest = new Map<string, number>();
  const historyCalls: Array<[string, HistoryQuery]> = [];
  let failing = 0;
  const delivered: string[] = [];
  const arrived: string[] = [];
  const errors: string[] = [];
  const changed: string[] = [];
  const r = new SessionRecovery({
    ...syncing,
    history: async (sessionId, query) => {
      historyCalls.push([sessionId, query]);
      if (failing > 0) {
        failing--;
        throw new ChatClientError('NETWORK', 'the service is unreachable');
      }
      const after = query.after ?? 0;
      const last = Math.min(latest.get(sessionId) ?? 0, after + (query.limit ?? 50));
      const messages = Array.from({ length: Math.max(0, last - after) }, (_, i) => message(sessionId, last - i)); // newest first
      const page: HistoryPage = { sessionId, messages, nextCursor: last < (latest.get(sessionId) ?? 0) ? last : null };
      return page;
    },
    listSessions: async () => [...latest].map(([sessionId, lastSeq]) => ({ sessionId, lastSeq })),
    arrived: (m) => arrived.push(m.messageId),
    deliver: (m) => delivered.push(`${m.sessionId}:${m.seq}`),
    changed: (m) => changed.push(`${m.sessionId}:${m.seq}:${m.deleted ? 'deleted' : m.content}`),
    error: (e) => errors.push(e.code),
    gapFillDelayMs: GAP_MS,
    retryDelayMs: () => RETRY_MS,
  });
  return { r, latest, historyCalls, delivered, arrived, errors, changed, fail: (n: number) => (failing = n) };
}

const seqs = (from: number, to: number, sessionId = 's1') => Array.from({ length: to - from + 1 }, (_, i) => `${sessionId}:${from + i}`);

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('SessionRecovery', () => {
  it('hands out live messages in seq order, each once, and lets every arrival be seen', () => {
    const { r, delivered, arrived } = recovery();
    r.track('s1', 0);
    for (const seq of [2, 1, 2, 4, 3, 1]) r.accept(message('s1', seq));
    expect(delivered).toEqual(seqs(1, 4));
    expect(arrived).toHaveLength(6); // duplicates too: a copy of my own send settles it, whatever its order
    expect(r.lastSeq('s1')).toBe(4);
  });

  it('starts tracking an unknown session at its first message', () => {
    const { r, delivered } = recovery();
    r.accept(message('new', 5));
    r.accept(message('new', 6));
    expect(delivered).toEqual(['new:5', 'new:6']);
    expect(r.isTracking('new')).toBe(true);
  });

  it('fills a gap that lasts from history while connected', async () => {
    const { r, latest, delivered, historyCalls } = recovery();
    r.track('s1', 0);
    latest.set('s1', 3);
    r.connected();
    await vi.advanceTimersByTimeAsync(0);
    expect(delivered).toEqual(seqs(1, 3));
    latest.set('s1', 6);
    r.accept(message('s1', 6)); // 4 and 5 went missing
    await vi.advanceTimersByTimeAsync(GAP_MS - 1);
    expect(delivered).toEqual(seqs(1, 3));
    await vi.advanceTimersByTimeAsync(1);
    expect(delivered).toEqual(seqs(1, 6));
    expect(historyCalls.at(-1)).toEqual(['s1', { after: 3, limit: 200 }]);
  });

  it('leaves a gap alone while disconnected, and closes it when the gap fills by itself', async () => {
    const { r, delivered, historyCalls } = recovery();
    r.track('s1', 0);
    r.accept(message('s1', 2));
    await vi.advanceTimersByTimeAsync(5 * GAP_MS);
    expect(historyCalls).toEqual([]);
    r.accept(message('s1', 1));
    expect(delivered).toEqual(seqs(1, 2));
  });

  it('after connecting, pages through history for the sessions that moved, and only those', async () => {
    const { r, latest, delivered, historyCalls } = recovery();
    r.track('s1', 10);
    r.track('quiet', 4);
    latest.set('s1', 450);
    latest.set('quiet', 4);
    r.connected();
    await vi.advanceTimersByTimeAsync(0);
    expect(delivered).toEqual(seqs(11, 450));
    expect(historyCalls.map(([id, q]) => [id, q.after])).toEqual([
      ['s1', 10],
      ['s1', 210],
      ['s1', 410],
    ]);
  });

  it('reports a failed recovery and tries again on the same connection, not on one that ended', async () => {
    const { r, latest, delivered, errors, fail, historyCalls } = recovery();
    r.track('s1', 0);
    latest.set('s1', 2);
    fail(1);
    r.connected();
    await vi.advanceTimersByTimeAsync(0);
    expect([errors, delivered]).toEqual([['NETWORK'], []]);
    await vi.advanceTimersByTimeAsync(RETRY_MS);
    expect(delivered).toEqual(seqs(1, 2));

    latest.set('s1', 3);
    fail(1);
    r.disconnected();
    r.connected();
    await vi.advanceTimersByTimeAsync(0);
    const calls = historyCalls.length;
    r.disconnected(); // before the retry is due
    await vi.advanceTimersByTimeAsync(10 * RETRY_MS);
    expect(historyCalls).toHaveLength(calls);
    expect(delivered).toEqual(seqs(1, 2));
  });

  it('catches an opened session up at once, retrying after a failure', async () => {
    const { r, latest, delivered, errors, fail } = recovery();
    r.connected();
    r.track('s1', 0);
    latest.set('s1', 3);
    fail(1);
    await r.catchUpOrRetry('s1');
    expect(errors).toEqual(['NETWORK']);
    await vi.advanceTimersByTimeAsync(RETRY_MS);
    expect(delivered).toEqual(seqs(1, 3));
  });

  it('runs one catch-up per session at a time, and again if asked meanwhile', async () => {
    const { r, latest, delivered, historyCalls } = recovery();
    r.connected();
    r.track('s1', 0);
    latest.set('s1', 2);
    const first = r.catchUpOrRetry('s1');
    latest.set('s1', 3);
    const second = r.catchUpOrRetry('s1');
    await Promise.all([first, second]);
    expect(delivered).toEqual(seqs(1, 3));
    expect(historyCalls.map(([, q]) => q.after)).toEqual([0, 2]);
  });

  it('never moves a session backwards, and hands out what waited above a skipped-to seq', () => {
    const { r, delivered } = recovery();
    r.track('s1', 5);
    r.accept(message('s1', 8));
    r.track('s1', 7);
    expect(delivered).toEqual(['s1:8']);
    r.track('s1', 2);
    expect(r.lastSeq('s1')).toBe(8);
  });
});

describe('SessionRecovery with edits, deletes and sync', () => {
  const edited = (sessionId: string, seq: number, content: string, at: number): ChatMessage => ({ ...message(sessionId, seq), content, editedAt: new Date(at).toISOString() });
  const deleted = (sessionId: string, seq: number): ChatMessage => ({ ...message(sessionId, seq), content: '', deleted: true });

  it('reports each newer state of a handed-out message once, and hands out a waiting one as it is now', () => {
    const { r, delivered, changed } = recovery();
    r.track('s1', 0);
    r.accept(message('s1', 1));
    r.change(edited('s1', 1, 'one', 1000));
    r.change(edited('s1', 1, 'one', 1000)); // the same edit from the topic and the queue
    r.change(edited('s1', 1, 'older', 500)); // late
    r.change(deleted('s1', 1));
    r.change(edited('s1', 1, 'after delete', 2000));
    expect(changed).toEqual(['s1:1:one', 's1:1:deleted']);
    r.accept(message('s1', 3));
    r.change(edited('s1', 3, 'three', 1000));
    r.accept(message('s1', 2));
    expect(delivered).toEqual(seqs(1, 3));
    expect(changed).toEqual(['s1:1:one', 's1:1:deleted']); // seq 3 went out once, edited
  });

  it('catches up with one sync sequence when it has a token, and with history when the token is refused', async () => {
    const calls: Array<string | undefined> = [];
    let refuse = false;
    const pages: Record<string, SyncPage> = {
      t1: { events: [{ type: 'message', sessionId: 's1', message: message('s1', 1) }, { type: 'edit', sessionId: 's1', message: edited('s1', 3, 'three', 1) }], next: 't2', hasMore: true },
      t2: { events: [{ type: 'message', sessionId: 's1', message: message('s1', 2) }, { type: 'delete', sessionId: 's1', message: deleted('s1', 1) }], next: 't3', hasMore: false },
      t3: { events: [], next: 't3', hasMore: false },
    };
    const { r, delivered, changed, historyCalls, latest, errors } = recovery({
      syncToken: 't1',
      sync: async (since) => {
        calls.push(since);
        if (since === undefined) return { events: [], next: 'fresh', hasMore: false };
        if (refuse) throw new ChatClientError('VALIDATION_FAILED', 'bad token', 400);
        return pages[since]!;
      },
    });
    r.track('s1', 0);
    latest.set('s1', 3);
    r.connected();
    await vi.runAllTimersAsync();
    expect(calls).toEqual(['t1', 't2']);
    expect(historyCalls).toEqual([]);
    expect(delivered).toEqual(seqs(1, 3));
    expect(changed).toEqual(['s1:1:deleted']);
    expect(r.syncToken).toBe('t3');

    refuse = true;
    latest.set('s1', 5);
    r.disconnected();
    r.connected();
    await vi.runAllTimersAsync();
    expect(errors).toEqual(['VALIDATION_FAILED']);
    expect(calls.slice(2)).toEqual(['t3', undefined]);
    expect(historyCalls.map(([id, q]) => [id, q.after])).toEqual([['s1', 3]]);
    expect(delivered).toEqual(seqs(1, 5));
    expect(r.syncToken).toBe('fresh');
  });
});
