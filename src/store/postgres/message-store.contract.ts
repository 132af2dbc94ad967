/**
 * The MessageStore contract (see the port's TSDoc), run against every implementation. Tests go
 * through the port only; the fixture adds a read of the outbox, which the relay owns.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatError } from '../../chat/chat-errors.js';
import { sessionTopic } from '../../chat/chat-events.js';
import type { AppendMessage, BusEnvelope, ChangeStamp, MessageRecord, MessageStore, Participant, ReportRecord, SessionRecord, StoredChange } from '../../chat/ports.js';

export interface MessageStoreFixture {
  store: MessageStore;
  /** A second store on the same database, as another instance would have (absent for PGlite). */
  peer?: MessageStore;
  /** Another store on its own connection, for writers that must commit independently (absent for PGlite). */
  openWriter?: () => Promise<{ store: MessageStore; close(): Promise<void> }>;
  outbox(): Promise<Array<{ destination: string; payload: BusEnvelope }>>;
  close(): Promise<void>;
}

const participant = (name: string): Participant => {
  const id = randomUUID();
  return { profileId: id, email: `${name}.${id.slice(0, 8)}@example.com`, displayName: name };
};

const ordered = (x: Participant, y: Participant): [Participant, Participant] => (x.profileId < y.profileId ? [x, y] : [y, x]);

function envelopeFor(session: SessionRecord) {
  return (m: { id: string; seq: number }): BusEnvelope => ({
    recipients: [session.a.email, session.b.email],
    event: {
      type: 'message',
      sessionId: session.id,
      destinations: [{ topic: sessionTopic(session.id) }, { user: session.b.email, queue: 'messages' }],
      message: {
        messageId: m.id,
        sessionId: session.id,
        seq: m.seq,
        senderId: session.a.profileId,
        senderEmail: session.a.email,
        senderDisplayName: 'a',
        content: 'x',
        clientMessageId: 'c',
        sentAt: new Date(0).toISOString(),
        delivered: false,
        seen: false,
        editedAt: null,
        deleted: false,
      },
    },
  });
}

const changeFor = (session: SessionRecord, type: 'edit' | 'delete') => (m: MessageRecord): BusEnvelope => {
  const envelope = envelopeFor(session)(m);
  if (envelope.event.type !== 'message') throw new Error('unreachable');
  return { ...envelope, event: { ...envelope.event, type, message: { ...envelope.event.message, content: m.content, deleted: m.deleted } } };
};

/**
 * Syncs from `from` until a short page, returning the changes and where it got to: the horizon
 * after a short page, or, with `onlyStamps`, the last change's stamp (the horizon unused).
 */
async function drain(store: MessageStore, email: string, from: ChangeStamp, limit = 7, onlyStamps = false): Promise<{ changes: StoredChange[]; next: ChangeStamp }> {
  const changes: StoredChange[] = [];
  let next = from;
  for (;;) {
    const page = await store.changesSince(email, next, limit);
    changes.push(...page.changes);
    if (page.changes.length > 0) next = page.changes.at(-1)!.stamp;
    if (page.changes.length < limit) return { changes, next: onlyStamps ? next : page.horizon };
  }
}

const receiptFor = (session: SessionRecord) => (): BusEnvelope => ({
  recipients: [session.a.email, session.b.email],
  event: {
    type: 'receipt',
    sessionId: session.id,
    destinations: [{ topic: sessionTopic(session.id) }],
    receipt: { sessionId: session.id, readerEmail: session.b.email, upToSeq: 0, status: 'seen', messageIds: [] },
  },
});

/**
 * `multiInstance`: the implementation can be opened twice on one database (PostgreSQL can; PGlite is
 * one connection in one process), which adds the tests of two instances appending at once.
 */
export function describeMessageStoreContract(name: string, open: () => Promise<MessageStoreFixture>, capabilities: { multiInstance: boolean }): void {
  describe(`MessageStore contract: ${name}`, () => {
    let fx: MessageStoreFixture;
    beforeAll(async () => {
      fx = await open();
    });
    afterAll(async () => {
      await fx?.close();
    });

    async function newSession(intent = 'dating'): Promise<SessionRecord> {
      const [a, b] = ordered(participant('ann'), participant('ben'));
      return fx.store.upsertSession({ a, b, intent });
    }

    function append(session: SessionRecord, over: Partial<AppendMessage> = {}): Promise<{ message: { id: string; seq: number; content: string }; created: boolean }> {
      return fx.store.appendMessage({
        sessionId: session.id,
        senderProfileId: session.a.profileId,
        content: 'hello',
        clientMessageId: randomUUID(),
        sentAt: new Date(),
        toEvent: envelopeFor(session),
        ...over,
      });
    }

    it('returns the same session for the same pair and intent, also under concurrent upserts', async () => {
      const [a, b] = ordered(participant('ann'), participant('ben'));
      const sessions = await Promise.all(Array.from({ length: 10 }, () => fx.store.upsertSession({ a, b, intent: 'work' })));
      expect(new Set(sessions.map((s) => s.id)).size).toBe(1);
      const other = await fx.store.upsertSession({ a, b, intent: 'dating' });
      expect(other.id).not.toBe(sessions[0]!.id);
      expect(await fx.store.getSession(sessions[0]!.id)).toMatchObject({ id: sessions[0]!.id, intent: 'work', a, b, lastSeq: 0 });
    });

    it('refreshes the participants snapshot on upsert', async () => {
      const [a, b] = ordered(participant('ann'), participant('ben'));
      const first = await fx.store.upsertSession({ a, b, intent: 'work' });
      const renamed = await fx.store.upsertSession({ a: { ...a, displayName: 'Ann Renamed' }, b, intent: 'work' });
      expect(renamed.id).toBe(first.id);
      expect(renamed.a.displayName).toBe('Ann Renamed');
    });

    it('returns undefined for an unknown session', async () => {
      expect(await fx.store.getSession(randomUUID())).toBeUndefined();
    });

    it('assigns gapless seq 1..n under concurrent appends', async () => {
      const session = await newSession();
      const results = await Promise.all(Array.from({ length: 60 }, (_, i) => append(session, { content: `m${i}` })));
      expect(results.map((r) => r.message.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
      expect((await fx.store.getSession(session.id))!.lastSeq).toBe(60);
    });

    it('keeps seq gapless per session when sessions are appended to in one burst', async () => {
      const [s1, s2] = [await newSession(), await newSession()];
      await Promise.all(Array.from({ length: 40 }, (_, i) => append(i % 2 ? s1 : s2)));
      for (const s of [s1, s2]) {
        const page = await fx.store.history(s.id, { limit: 100 });
        expect(page.map((m) => m.seq)).toEqual(Array.from({ length: 20 }, (_, i) => 20 - i));
      }
    });

    it('stores the rest of a group-committed batch when the database refuses one item, and fails only that one', async () => {
      const session = await newSession();
      // The payload carries the content, as the service's does: jsonb refuses a lone surrogate escape.
      const withContent = (content: string) => (m: { id: string; seq: number }): BusEnvelope => {
        const envelope = envelopeFor(session)(m);
        return envelope.event.type === 'message' ? { ...envelope, event: { ...envelope.event, message: { ...envelope.event.message, content } } } : envelope;
      };
      const poisonAt = 20;
      const attempts = Array.from({ length: 41 }, (_, i) => {
        const content = i === poisonAt ? 'bad \uD800 text' : `m${i}`;
        return append(session, { content, toEvent: withContent(content) }).then(
          (r) => ({ ok: true as const, seq: r.message.seq, content }),
          (error: unknown) => ({ ok: false as const, error, content }),
        );
      });
      const results = await Promise.all(attempts);
      const refused = results.filter((r) => !r.ok);
      expect(refused.map((r) => r.content)).toEqual(['bad \uD800 text']);
      expect(refused[0]).toMatchObject({ error: { code: 'INVALID_CONTENT' } });
      const stored = await fx.store.history(session.id, { limit: 100 });
      expect(stored.map((m) => m.seq)).toEqual(Array.from({ length: 40 }, (_, i) => 40 - i));
      expect(stored.map((m) => m.content).sort()).toEqual(results.filter((r) => r.ok).map((r) => r.content).sort());
    });

    // Not a skip: the test does not apply to an implementation that cannot run twice.
    if (capabilities.multiInstance) {
      it('keeps seq gapless when two store instances append to one session', async () => {
        const session = await newSession();
        await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? fx.store : fx.peer!).appendMessage({
          sessionId: session.id, senderProfileId: session.a.profileId, content: `m${i}`, clientMessageId: randomUUID(), sentAt: new Date(), toEvent: envelopeFor(session),
        })));
        const page = await fx.store.history(session.id, { limit: 100 });
        expect(page.map((m) => m.seq)).toEqual(Array.from({ length: 40 }, (_, i) => 40 - i));
      });
    }

    it('returns the stored message when clientMessageId repeats, and writes nothing', async () => {
      const session = await newSession();
      const clientMessageId = randomUUID();
      const first = await append(session, { clientMessageId });
      const outboxBefore = (await fx.outbox()).length;
      const again = await append(session, { clientMessageId });
      expect(first.created).toBe(true);
      expect(again).toMatchObject({ created: false, message: { id: first.message.id, seq: first.message.seq } });
      expect(await fx.store.history(session.id, { limit: 10 })).toHaveLength(1);
      expect((await fx.outbox()).length).toBe(outboxBefore);
    });

    it('stores a message once when the same clientMessageId is sent concurrently', async () => {
      const session = await newSession();
      const clientMessageId = randomUUID();
      const stores = [fx.store, fx.peer ?? fx.store];
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          stores[i % 2]!.appendMessage({ sessionId: session.id, senderProfileId: session.a.profileId, content: 'same', clientMessageId, sentAt: new Date(), toEvent: envelopeFor(session) }),
        ),
      );
      expect(new Set(results.map((r) => r.message.id)).size).toBe(1);
      expect(results.filter((r) => r.created)).toHaveLength(1);
      const page = await fx.store.history(session.id, { limit: 10 });
      expect(page.map((m) => m.seq)).toEqual([1]);
    });

    it('refuses a repeated clientMessageId with different content', async () => {
      const session = await newSession();
      const clientMessageId = randomUUID();
      await append(session, { clientMessageId, content: 'one' });
      await expect(append(session, { clientMessageId, content: 'two' })).rejects.toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED' });
    });

    it('scopes clientMessageId to the sender: another sender gets a message of their own', async () => {
      const session = await newSession();
      const clientMessageId = randomUUID();
      const fromA = await append(session, { clientMessageId, content: 'from a' });
      const fromB = await append(session, { clientMessageId, content: 'from b', senderProfileId: session.b.profileId });
      expect(fromB.created).toBe(true);
      expect(fromB.message.id).not.toBe(fromA.message.id);
      expect(fromB.message.content).toBe('from b');
    });

    it('fails an append to an unknown session without affecting others in the same burst', async () => {
      const session = await newSession();
      const ghost = { ...session, id: randomUUID() };
      const [ok, bad] = await Promise.allSettled([append(session), append(ghost)]);
      expect(ok.status).toBe('fulfilled');
      expect(bad.status === 'rejected' && bad.reason instanceof ChatError && bad.reason.code).toBe('SESSION_NOT_FOUND');
    });

    it('writes one outbox row per message, addressed to the session topic and listing its destinations', async () => {
      const session = await newSession();
      await append(session);
      const { message } = await append(session);
      const rows = (await fx.outbox()).filter((r) => r.payload.event.type === 'message' && r.payload.event.message.messageId === message.id);
      expect(rows).toHaveLength(1);
      // The event is built before the seq is known; the stored one carries the message's seq.
      expect(message.seq).toBe(2);
      expect(rows[0]!.payload.event.type === 'message' && rows[0]!.payload.event.message.seq).toBe(2);
      expect(rows[0]!.destination).toBe(sessionTopic(session.id));
      expect(rows[0]!.payload.recipients).toEqual([session.a.email, session.b.email]);
      expect(rows[0]!.payload.event.destinations).toContainEqual({ user: session.b.email, queue: 'messages' });
    });

    it('pages history newest first with before and after cursors', async () => {
      const session = await newSession();
      for (let i = 1; i <= 12; i++) await append(session, { content: `m${i}` });
      const seqs = async (page: { limit: number; beforeSeq?: number; afterSeq?: number }) => (await fx.store.history(session.id, page)).map((m) => m.seq);
      expect(await seqs({ limit: 5 })).toEqual([12, 11, 10, 9, 8]);
      expect(await seqs({ limit: 5, beforeSeq: 8 })).toEqual([7, 6, 5, 4, 3]);
      expect(await seqs({ limit: 5, beforeSeq: 3 })).toEqual([2, 1]);
      expect(await seqs({ limit: 5, afterSeq: 2 })).toEqual([7, 6, 5, 4, 3]);
      expect(await seqs({ limit: 5, afterSeq: 12 })).toEqual([]);
      expect((await fx.store.history(session.id, { limit: 1 }))[0]).toMatchObject({ content: 'm12', senderProfileId: session.a.profileId, delivered: false, seen: false });
    });

    it('counts unseen messages from the other participant and marks them seen up to a seq', async () => {
      const session = await newSession();
      for (let i = 0; i < 5; i++) await append(session);
      await append(session, { senderProfileId: session.b.profileId });
      expect((await fx.store.unseen(session.id, session.b.profileId, 100)).count).toBe(5);
      expect((await fx.store.unseen(session.id, session.a.profileId, 100)).count).toBe(1);

      const outboxBefore = (await fx.outbox()).length;
      const update = await fx.store.markSeen(session.id, session.b.profileId, 3, receiptFor(session));
      expect(update.messages.map((m) => m.seq)).toEqual([1, 2, 3]);
      const unseen = await fx.store.unseen(session.id, session.b.profileId, 100);
      expect(unseen.count).toBe(2);
      expect(unseen.messages.map((m) => m.seq)).toEqual([4, 5]);
      expect((await fx.outbox()).length).toBe(outboxBefore + 1);

      const nothing = await fx.store.markSeen(session.id, session.b.profileId, 3, receiptFor(session));
      expect(nothing.messages).toEqual([]);
      expect((await fx.outbox()).length).toBe(outboxBefore + 1);
      const seen = await fx.store.history(session.id, { limit: 10, afterSeq: 0 });
      expect(seen.filter((m) => m.seen).map((m) => m.seq).sort()).toEqual([1, 2, 3]);
      expect(seen.filter((m) => m.seen).every((m) => m.delivered)).toBe(true);
    });

    it('marks only the other participant\u2019s listed messages delivered', async () => {
      const session = await newSession();
      const m1 = await append(session);
      const own = await append(session, { senderProfileId: session.b.profileId });
      const update = await fx.store.markDelivered(session.id, session.b.profileId, [m1.message.id, own.message.id], receiptFor(session));
      expect(update.messages.map((m) => m.id)).toEqual([m1.message.id]);
      const again = await fx.store.markDelivered(session.id, session.b.profileId, [m1.message.id], receiptFor(session));
      expect(again.messages).toEqual([]);
    });

    it('lists a user\u2019s sessions with the last message and unread count, most recent first', async () => {
      const [me, x, y] = [participant('me'), participant('x'), participant('y')];
      const [a1, b1] = ordered(me, x);
      const s1 = await fx.store.upsertSession({ a: a1, b: b1, intent: 'dating' });
      const [a2, b2] = ordered(me, y);
      const s2 = await fx.store.upsertSession({ a: a2, b: b2, intent: 'dating' });
      const toEvent = envelopeFor(s1);
      await fx.store.appendMessage({ sessionId: s1.id, senderProfileId: x.profileId, content: 'from x', clientMessageId: randomUUID(), sentAt: new Date(Date.now() - 1000), toEvent });
      await fx.store.appendMessage({ sessionId: s2.id, senderProfileId: y.profileId, content: 'y1', clientMessageId: randomUUID(), sentAt: new Date(), toEvent: envelopeFor(s2) });
      await fx.store.appendMessage({ sessionId: s2.id, senderProfileId: me.profileId, content: 'me', clientMessageId: randomUUID(), sentAt: new Date(), toEvent: envelopeFor(s2) });

      const list = await fx.store.listSessions(me.email, 50);
      expect(list.map((s) => s.session.id)).toEqual([s2.id, s1.id]);
      expect(list[0]).toMatchObject({ unreadCount: 1, lastMessage: { content: 'me', seq: 2 } });
      expect(list[1]).toMatchObject({ unreadCount: 1, lastMessage: { content: 'from x', seq: 1 } });
      expect(await fx.store.listSessions(`nobody.${randomUUID()}@example.com`, 50)).toEqual([]);
    });

    it('refuses new messages in either direction while a participant blocks the session, until it is lifted; repeats still answer', async () => {
      const session = await newSession();
      const clientMessageId = randomUUID();
      const before = await append(session, { content: 'before', clientMessageId });
      await fx.store.setBlocked(session.id, session.b.profileId, true);
      await fx.store.setBlocked(session.id, session.b.profileId, true); // idempotent
      expect(await fx.store.blockers(session.id)).toEqual([session.b.profileId]);
      const outboxBefore = (await fx.outbox()).length;
      for (const sender of [session.a.profileId, session.b.profileId]) {
        await expect(append(session, { senderProfileId: sender })).rejects.toMatchObject({ code: 'PEER_BLOCKED', status: 403 });
      }
      // A retry of a message stored before the block is its original, not a new message.
      const repeat = await append(session, { content: 'before', clientMessageId });
      expect(repeat).toMatchObject({ created: false, message: { id: before.message.id } });
      expect((await fx.outbox()).length).toBe(outboxBefore);
      expect((await fx.store.history(session.id, { limit: 10 })).map((m) => m.content)).toEqual(['before']);
      expect((await fx.store.listSessions(session.b.email, 10))[0]).toMatchObject({ blockedByMe: true });
      expect((await fx.store.listSessions(session.a.email, 10))[0]).toMatchObject({ blockedByMe: false });

      await fx.store.setBlocked(session.id, session.b.profileId, false);
      await fx.store.setBlocked(session.id, session.b.profileId, false);
      expect(await fx.store.blockers(session.id)).toEqual([]);
      expect((await append(session, { content: 'after' })).message.seq).toBe(2);
      expect((await fx.store.listSessions(session.b.email, 10))[0]).toMatchObject({ blockedByMe: false });
      await expect(fx.store.setBlocked(randomUUID(), session.a.profileId, true)).rejects.toMatchObject({ code: 'SESSION_NOT_FOUND' });
    });

    it('keeps a session blocked while either participant still blocks it', async () => {
      const session = await newSession();
      await fx.store.setBlocked(session.id, session.a.profileId, true);
      await fx.store.setBlocked(session.id, session.b.profileId, true);
      expect((await fx.store.blockers(session.id)).sort()).toEqual([session.a.profileId, session.b.profileId].sort());
      await fx.store.setBlocked(session.id, session.a.profileId, false);
      expect(await fx.store.blockers(session.id)).toEqual([session.b.profileId]);
      await expect(append(session)).rejects.toMatchObject({ code: 'PEER_BLOCKED' });
      expect((await fx.store.listSessions(session.a.email, 10))[0]).toMatchObject({ blockedByMe: false });
      expect((await fx.store.listSessions(session.b.email, 10))[0]).toMatchObject({ blockedByMe: true });
      await fx.store.setBlocked(session.id, session.b.profileId, false);
      expect((await append(session)).created).toBe(true);
    });

    it('refuses, in a group-committed batch, only the sends into the blocked session', async () => {
      const [open, blocked] = [await newSession(), await newSession()];
      await fx.store.setBlocked(blocked.id, blocked.a.profileId, true);
      const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => append(i % 2 ? open : blocked)));
      const refused = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as ChatError);
      expect(refused).toHaveLength(10);
      expect(refused.every((e) => e.code === 'PEER_BLOCKED')).toBe(true);
      expect((await fx.store.getSession(open.id))!.lastSeq).toBe(10);
      expect((await fx.store.getSession(blocked.id))!.lastSeq).toBe(0);
    });

    if (capabilities.multiInstance) {
      it('refuses a send through another instance as soon as the block is committed', async () => {
        const session = await newSession();
        await fx.store.setBlocked(session.id, session.a.profileId, true);
        await expect(fx.peer!.appendMessage({
          sessionId: session.id, senderProfileId: session.b.profileId, content: 'hi', clientMessageId: randomUUID(), sentAt: new Date(), toEvent: envelopeFor(session),
        })).rejects.toMatchObject({ code: 'PEER_BLOCKED' });
      });
    }

    it('stores a report with the reported message\u2019s content and its outbox event in one transaction', async () => {
      const session = await newSession();
      const reported = await append(session, { content: 'something nasty' });
      const outboxBefore = (await fx.outbox()).length;
      const toEvent = (r: ReportRecord): BusEnvelope => ({
        recipients: [],
        event: { type: 'report', sessionId: r.sessionId, destinations: [], report: { reportId: r.id, sessionId: r.sessionId, reporterEmail: r.reporterEmail, messageId: r.messageId, reason: r.reason, content: r.content, createdAt: r.createdAt.toISOString() } },
      });
      const report = await fx.store.report({ sessionId: session.id, reporterProfileId: session.b.profileId, reporterEmail: session.b.email, messageId: reported.message.id, reason: 'abuse', toEvent });
      expect(report).toMatchObject({ sessionId: session.id, messageId: reported.message.id, reason: 'abuse', content: 'something nasty', reporterEmail: session.b.email });
      expect(report.createdAt).toBeInstanceOf(Date);
      const whole = await fx.store.report({ sessionId: session.id, reporterProfileId: session.b.profileId, reporterEmail: session.b.email, messageId: null, reason: 'spam', toEvent });
      expect(whole).toMatchObject({ messageId: null, content: null });
      expect(whole.id).not.toBe(report.id);
      const rows = (await fx.outbox()).slice(outboxBefore);
      expect(rows.map((r) => r.payload)).toEqual([toEvent(report), toEvent(whole)]);

      // A message of another session is not found in this one, and nothing is written.
      const other = await newSession();
      const foreign = await append(other);
      const outboxNow = (await fx.outbox()).length;
      for (const messageId of [foreign.message.id, randomUUID()]) {
        await expect(fx.store.report({ sessionId: session.id, reporterProfileId: session.b.profileId, reporterEmail: session.b.email, messageId, reason: 'x', toEvent })).rejects.toMatchObject({ code: 'MESSAGE_NOT_FOUND', status: 404 });
      }
      expect((await fx.outbox()).length).toBe(outboxNow);
    });

    it('lists reports newest first, in pages before a given report', async () => {
      const session = await newSession();
      const toEvent = (r: ReportRecord): BusEnvelope => ({
        recipients: [],
        event: { type: 'report', sessionId: r.sessionId, destinations: [], report: { reportId: r.id, sessionId: r.sessionId, reporterEmail: r.reporterEmail, messageId: r.messageId, reason: r.reason, content: r.content, createdAt: r.createdAt.toISOString() } },
      });
      const made: string[] = [];
      for (const reason of ['one', 'two', 'three']) {
        made.push((await fx.store.report({ sessionId: session.id, reporterProfileId: session.a.profileId, reporterEmail: session.a.email, messageId: null, reason, toEvent })).id);
      }
      const newest = await fx.store.listReports(2);
      expect(newest.map((r) => r.id)).toEqual([made[2], made[1]]);
      expect(newest[0]).toMatchObject({ sessionId: session.id, reporterEmail: session.a.email, reason: 'three', messageId: null, content: null });
      const older = await fx.store.listReports(100, made[1]);
      expect(older[0]!.id).toBe(made[0]);
      expect(older.map((r) => r.id)).not.toContain(made[1]);
      expect(await fx.store.listReports(10, randomUUID())).toEqual([]);
    });

    it('totals a user\u2019s unseen messages from others over all its sessions', async () => {
      const [me, x, y, z] = [participant('me'), participant('x'), participant('y'), participant('z')];
      const sessionWith = async (other: Participant) => {
        const [a, b] = ordered(me, other);
        return fx.store.upsertSession({ a, b, intent: 'dating' });
      };
      const [sx, sy] = [await sessionWith(x), await sessionWith(y)];
      await sessionWith(z);
      const from = (s: SessionRecord, p: Participant) => fx.store.appendMessage({ sessionId: s.id, senderProfileId: p.profileId, content: 'm', clientMessageId: randomUUID(), sentAt: new Date(), toEvent: envelopeFor(s) });
      expect(await fx.store.unreadTotals(me.email)).toEqual({ total: 0, sessions: 0 });
      for (let i = 0; i < 3; i++) await from(sx, x);
      await from(sy, y);
      await from(sy, me);
      expect(await fx.store.unreadTotals(me.email)).toEqual({ total: 4, sessions: 2 });
      expect(await fx.store.unreadTotals(x.email)).toEqual({ total: 0, sessions: 0 });
      expect(await fx.store.unreadTotals(y.email)).toEqual({ total: 1, sessions: 1 });
      await fx.store.markSeen(sx.id, me.profileId, 2, receiptFor(sx));
      expect(await fx.store.unreadTotals(me.email)).toEqual({ total: 2, sessions: 2 });
      await fx.store.markSeen(sy.id, me.profileId, 2, receiptFor(sy));
      expect(await fx.store.unreadTotals(me.email)).toEqual({ total: 1, sessions: 1 });
    });

    describe('edit, delete and sync', () => {
      const edit = (session: SessionRecord, messageId: string, content: string, requester = session.a.profileId) =>
        fx.store.changeMessage({ sessionId: session.id, messageId, requesterProfileId: requester, change: { kind: 'edit', content }, at: new Date(), toEvent: changeFor(session, 'edit') });
      const remove = (session: SessionRecord, messageId: string, requester = session.a.profileId) =>
        fx.store.changeMessage({ sessionId: session.id, messageId, requesterProfileId: requester, change: { kind: 'delete' }, at: new Date(), toEvent: changeFor(session, 'delete') });

      it('does not count a deleted message as unread anywhere', async () => {
        const session = await newSession();
        const { message } = await append(session, { content: 'oops' });
        await append(session, { content: 'kept' });
        expect(await fx.store.unreadTotals(session.b.email)).toEqual({ total: 2, sessions: 1 });
        await remove(session, message.id);
        expect(await fx.store.unreadTotals(session.b.email)).toEqual({ total: 1, sessions: 1 });
        expect((await fx.store.unseen(session.id, session.b.profileId, 10)).count).toBe(1);
        expect((await fx.store.listSessions(session.b.email, 10)).find((s) => s.session.id === session.id)?.unreadCount).toBe(1);
      });

      it('edits a message in place and writes its event in the same transaction', async () => {
        const session = await newSession();
        const { message } = await append(session, { content: 'before' });
        await append(session);
        const outboxBefore = (await fx.outbox()).length;
        const { message: edited, changed } = await edit(session, message.id, 'after');
        expect(changed).toBe(true);
        expect(edited).toMatchObject({ id: message.id, seq: 1, content: 'after', deleted: false });
        expect(edited.editedAt).toBeInstanceOf(Date);
        const rows = (await fx.outbox()).slice(outboxBefore);
        expect(rows).toHaveLength(1);
        expect(rows[0]!.payload.event).toMatchObject({ type: 'edit', message: { messageId: message.id, content: 'after' } });
        const page = await fx.store.history(session.id, { limit: 10 });
        expect(page.map((m) => [m.seq, m.content, m.editedAt !== null])).toEqual([[2, 'hello', false], [1, 'after', true]]);
        const [summary] = (await fx.store.listSessions(session.a.email, 10)).filter((s) => s.session.id === session.id);
        expect(summary!.lastMessage).toMatchObject({ seq: 2, editedAt: null, deleted: false });
      });

      it('answers a retried send of an edited or deleted message with the message as it is now', async () => {
        const session = await newSession();
        const [k1, k2] = [randomUUID(), randomUUID()];
        const { message: first } = await append(session, { clientMessageId: k1, content: 'one' });
        const { message: second } = await append(session, { clientMessageId: k2, content: 'two' });
        await edit(session, first.id, 'one, edited');
        await remove(session, second.id);
        expect(await append(session, { clientMessageId: k1, content: 'one' })).toMatchObject({ created: false, message: { id: first.id, content: 'one, edited' } });
        expect(await append(session, { clientMessageId: k2, content: 'two' })).toMatchObject({ created: false, message: { id: second.id, content: '', deleted: true } });
        expect((await fx.store.getSession(session.id))!.lastSeq).toBe(2);
      });

      it('refuses an edit by the other participant, of an unknown message, and of a message of another session', async () => {
        const [session, other] = [await newSession(), await newSession()];
        const { message } = await append(session);
        await expect(edit(session, message.id, 'x', session.b.profileId)).rejects.toMatchObject({ code: 'NOT_MESSAGE_SENDER' });
        await expect(remove(session, message.id, session.b.profileId)).rejects.toMatchObject({ code: 'NOT_MESSAGE_SENDER' });
        await expect(edit(session, randomUUID(), 'x')).rejects.toMatchObject({ code: 'MESSAGE_NOT_FOUND' });
        await expect(edit(other, message.id, 'x', other.a.profileId)).rejects.toMatchObject({ code: 'MESSAGE_NOT_FOUND' });
        expect((await fx.store.history(session.id, { limit: 1 }))[0]).toMatchObject({ content: 'hello', editedAt: null });
      });

      it('deletes to a tombstone with the content erased, once: a repeat writes nothing, an edit after it is refused', async () => {
        const session = await newSession();
        for (let i = 1; i <= 3; i++) await append(session, { content: `m${i}` });
        const [, middle] = (await fx.store.history(session.id, { limit: 3 })).reverse();
        const outboxBefore = (await fx.outbox()).length;
        const first = await remove(session, middle!.id);
        expect(first).toMatchObject({ changed: true, message: { id: middle!.id, seq: 2, content: '', deleted: true } });
        const again = await remove(session, middle!.id);
        expect(again).toMatchObject({ changed: false, message: { id: middle!.id, seq: 2, content: '', deleted: true } });
        const rows = (await fx.outbox()).slice(outboxBefore);
        expect(rows.map((r) => r.payload.event.type)).toEqual(['delete']);
        await expect(edit(session, middle!.id, 'back')).rejects.toMatchObject({ code: 'MESSAGE_DELETED' });
        const page = await fx.store.history(session.id, { limit: 10 });
        expect(page.map((m) => [m.seq, m.content, m.deleted])).toEqual([[3, 'm3', false], [2, '', true], [1, 'm1', false]]);
      });

      it('syncs new, edited and deleted messages and read marks of the caller\u2019s sessions only, oldest first, in pages', async () => {
        const session = await newSession();
        const elsewhere = await newSession();
        const start = await fx.store.changeHorizon();
        const sent = [];
        for (let i = 1; i <= 10; i++) sent.push((await append(session, { content: `m${i}` })).message);
        await append(elsewhere);
        await edit(session, sent[2]!.id, 'm3 edited');
        await remove(session, sent[4]!.id);
        await fx.store.markSeen(session.id, session.b.profileId, 6, receiptFor(session));

        const { changes, next } = await drain(fx.store, session.b.email, start, 4);
        const described = changes.map((c) => (c.kind === 'message' ? `${c.message.seq}:${c.message.deleted ? 'deleted' : c.message.content}` : `mark:${c.seenUpTo}/${c.deliveredUpTo}`));
        // Seq 3 and 5 come once, where their last change put them, as they are now.
        expect(described).toEqual(['1:m1', '2:m2', '4:m4', '6:m6', '7:m7', '8:m8', '9:m9', '10:m10', '3:m3 edited', '5:deleted', 'mark:6/6']);
        expect(changes.every((c) => c.kind !== 'message' || c.message.sessionId === session.id)).toBe(true);
        expect((await fx.store.changesSince(session.b.email, next, 10)).changes).toEqual([]);

        await edit(session, sent[0]!.id, 'm1 again');
        const later = await drain(fx.store, session.a.email, next);
        expect(later.changes).toMatchObject([{ kind: 'message', message: { seq: 1, content: 'm1 again' } }]);
        expect((await fx.store.changesSince(`nobody.${randomUUID()}@example.com`, start, 10)).changes).toEqual([]);
      });

      it('never skips a change while concurrent writers commit out of order', async () => {
        const writerCount = 20;
        const perWriter = 16;
        const [me, peer] = [participant('me'), participant('peer')];
        const [a, b] = ordered(me, peer);
        // A session each, so the writers' transactions do not queue on one session's lock and commit out of order.
        const sessions = await Promise.all(Array.from({ length: writerCount }, (_, i) => fx.store.upsertSession({ a, b, intent: `race${i}` })));
        const writers = await Promise.all(
          Array.from({ length: writerCount }, async () => (fx.openWriter ? fx.openWriter() : { store: fx.store, close: async (): Promise<void> => undefined })),
        );
        const start = await fx.store.changeHorizon();
        // Two syncers: one continues from the last change it got (small pages), one from the horizon.
        const synced = [new Map<string, MessageRecord>(), new Map<string, MessageRecord>()];
        let marks = 0;
        const apply = (into: Map<string, MessageRecord>, changes: StoredChange[]): void => {
          for (const c of changes) {
            if (c.kind === 'message') into.set(c.message.id, c.message);
            else marks++;
          }
        };
        let writing = true;
        const syncer = async (into: Map<string, MessageRecord>, limit: number, onlyStamps: boolean): Promise<void> => {
          let next = start;
          while (writing) {
            const page = await drain(fx.store, me.email, next, limit, onlyStamps);
            apply(into, page.changes);
            next = page.next;
            await new Promise((resolve) => setImmediate(resolve));
          }
          apply(into, (await drain(fx.store, me.email, next, limit, onlyStamps)).changes);
        };
        const syncing = Promise.all([syncer(synced[0]!, 3, true), syncer(synced[1]!, 50, false)]);
        try {
          await Promise.all(
            writers.map(async ({ store }, w) => {
              const session = sessions[w % sessions.length]!;
              const sender = w % 2 ? session.a.profileId : session.b.profileId;
              const mine: string[] = [];
              for (let i = 0; i < perWriter; i++) {
                const kind = i % 4 === 3 && mine.length > 0 ? (i % 8 === 7 ? 'delete' : 'edit') : 'append';
                if (kind === 'append') {
                  const { message } = await store.appendMessage({
                    sessionId: session.id, senderProfileId: sender, content: `w${w}-${i}`, clientMessageId: randomUUID(), sentAt: new Date(), toEvent: envelopeFor(session),
                  });
                  mine.push(message.id);
                } else {
                  const messageId = mine.shift()!;
                  await store.changeMessage({
                    sessionId: session.id, messageId, requesterProfileId: sender, at: new Date(),
                    change: kind === 'edit' ? { kind: 'edit', content: `w${w}-${i} edited` } : { kind: 'delete' },
                    toEvent: changeFor(session, kind),
                  });
                }
              }
            }),
          );
        } finally {
          writing = false;
        }
        await syncing;

        const written = (await Promise.all(sessions.map((s) => fx.store.history(s.id, { limit: 200 })))).flat();
        expect(written).toHaveLength(writerCount * (perWriter - perWriter / 4));
        expect(written.filter((m) => m.deleted).length).toBeGreaterThan(0);
        expect(written.filter((m) => m.editedAt).length).toBeGreaterThan(0);
        // The last state each message was synced in is the one the store holds: no change skipped.
        const state = (m: MessageRecord) => ({ id: m.id, seq: m.seq, content: m.content, deleted: m.deleted, edited: m.editedAt?.getTime() ?? null });
        for (const seen of synced) {
          expect([...seen.values()].map(state).sort((x, y) => x.id.localeCompare(y.id))).toEqual(written.map(state).sort((x, y) => x.id.localeCompare(y.id)));
        }
        expect(marks).toBe(0);
        await Promise.all(writers.map((w) => (w.store === fx.store ? undefined : w.close())));
      });
    });
  });
}
