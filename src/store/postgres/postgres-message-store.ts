/**
 * MessageStore on PostgreSQL (server or PGlite). All SQL is literal and lives here.
 *
 * Appends are group-committed (see group-committer.ts), and a batch is one statement run on its own
 * (APPEND_BATCH_SQL): the sessions are locked in id order (FOR UPDATE, so concurrent batches on any
 * instance serialise per session and never deadlock), seqs are assigned from last_seq, and messages
 * plus one outbox row per event are inserted from the batch, sent as one JSON document. A concurrent insert of the same
 * idempotency key by another transaction makes the statement fail and run again, so seq stays
 * gapless and a repeat never writes a second row.
 *
 * With webhooks configured, an event of a configured type also gets a row in chat_webhook_outbox,
 * in the same statement as its outbox row; without, the statements are the ones they always were.
 */
import { randomUUID } from 'node:crypto';
import { ChatError } from '../../chat/chat-errors.js';
import type {
  AppendMessage,
  BusEnvelope,
  ChangeMessage,
  ChangeStamp,
  MessageRecord,
  MessageStore,
  NewReport,
  Participant,
  ReceiptUpdate,
  ReportRecord,
  SessionRecord,
  SessionSummary,
  StoredChange,
  WrittenOutbox,
} from '../../chat/ports.js';
import { sessionTopic } from '../../chat/chat-events.js';
import { webhookTypeOf, type WebhookEventType } from '../../chat/webhook-events.js';
import { type BatchOutcome, GroupCommitter } from './group-committer.js';
import { isConnectionFailure, type Queryable, type SqlDatabase } from './sql-database.js';
import { inSpan, traceCarrier } from '../../observability/tracing.js';

/** The NOTIFY channel that announces new outbox rows to every instance's relay. */
export const OUTBOX_CHANNEL = 'chat_outbox';

type AppendResult = { message: MessageRecord; created: boolean };


interface QueuedRow {
  id: string;
  key: string | null;
  createdAt: string;
  lease: string;
}


interface SessionRow {
  id: string;
  intent: string;
  sender_profile_id: string;
  receiver_profile_id: string;
  sender_email: string;
  receiver_email: string;
  sender_display_name: string;
  receiver_display_name: string;
  created_at: Date;
  last_seq: string | number;
  blocked_by_sender_at?: Date | null;
  blocked_by_receiver_at?: Date | null;
}

interface MessageRow {
  id: string;
  session_id: string;
  seq: string | number;
  sender_profile_id: string;
  content: string;
  client_msg_id: string;
  sent_at: Date;
  delivered: boolean;
  seen: boolean;
  edited_at: Date | null;
  deleted: boolean;
}

const MESSAGE_COLUMNS = 'id, session_id, seq, sender_profile_id, content, client_msg_id, sent_at, delivered, seen, edited_at, deleted_at IS NOT NULL AS deleted';
const MESSAGE_COLUMNS_OF = (alias: string): string =>
  MESSAGE_COLUMNS.split(', ')
    .map((c) => `${alias}.${c}`)
    .join(', ');

/** A message row as json_agg returns it: timestamps as text. */
type MessageJsonRow = Omit<MessageRow, 'sent_at' | 'edited_at'> & { sent_at: string; edited_at: string | null };

export class PostgresMessageStore implements MessageStore {
  private readonly appends: GroupCommitter<AppendMessage, AppendResult>;
  private readonly outboxListeners: Array<(written: WrittenOutbox) => void> = [];
  private readonly leaseOutboxMs: number | null;
  private readonly webhooks: Webhooks;

  /**
   * `origin` names this instance in the NOTIFY payload, so its own relay (told directly through
   * onOutboxWritten) can tell its commits from other instances'. With `leaseOutboxMs`, outbox rows
   * are written already leased to this instance for that long: its relay publishes them straight
   * from memory after the commit, with no claim round trip, and if this instance dies before it
   * has, any relay claims them once the lease ends. With `webhookTypes` (non-empty), events of
   * those types also get a webhook row in the same transaction (docs/adr/0015).
   */
  constructor(
    private readonly db: SqlDatabase,
    private readonly origin = '',
    options: { leaseOutboxMs?: number; webhookTypes?: ReadonlySet<WebhookEventType> } = {},
  ) {
    this.appends = new GroupCommitter((items) => this.appendBatch(items), db.parallelism);
    this.leaseOutboxMs = options.leaseOutboxMs ?? null;
    this.webhooks = options.webhookTypes && options.webhookTypes.size > 0 ? options.webhookTypes : null;
  }

  /** Called after each commit that wrote outbox rows, with those rows, so the local relay need not wait for a poll. */
  onOutboxWritten(listener: (written: WrittenOutbox) => void): void {
    this.outboxListeners.push(listener);
  }

  async upsertSession(input: { a: Participant; b: Participant; intent: string }): Promise<SessionRecord> {
    const { a, b, intent } = input;
    if (!(a.profileId < b.profileId)) throw new Error('upsertSession: participants must be in canonical order');
    const rows = await this.run(() =>
      this.db.query<SessionRow>(
        `INSERT INTO chat_sessions (id, sender_profile_id, receiver_profile_id, intent, sender_email, receiver_email, sender_display_name, receiver_display_name)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (sender_profile_id, receiver_profile_id, intent) DO UPDATE
           SET sender_email = EXCLUDED.sender_email, receiver_email = EXCLUDED.receiver_email,
               sender_display_name = EXCLUDED.sender_display_name, receiver_display_name = EXCLUDED.receiver_display_name
         RETURNING *`,
        [randomUUID(), a.profileId, b.profileId, intent, a.email, b.email, a.displayName, b.displayName],
      ),
    );
    return toSession(rows[0]!);
  }

  async getSession(sessionId: string): Promise<SessionRecord | undefined> {
    const rows = await this.run(() => this.db.query<SessionRow>('SELECT * FROM chat_sessions WHERE id = $1', [sessionId]));
    return rows[0] ? toSession(rows[0]) : undefined;
  }

  appendMessage(cmd: AppendMessage): Promise<AppendResult> {
    // The caller's trace context, captured here: the group commit runs the batch in whichever
    // caller's context flushed it, and each event must carry its own sender's.
    const carrier = traceCarrier();
    if (!carrier) return this.appends.submit(cmd);
    const toEvent: AppendMessage['toEvent'] = (stored) => ({ ...cmd.toEvent(stored), trace: carrier });
    return inSpan('chat.store', { 'chat.session_id': cmd.sessionId }, () => this.appends.submit({ ...cmd, toEvent }));
  }

  async history(sessionId: string, page: { limit: number; beforeSeq?: number; afterSeq?: number }): Promise<MessageRecord[]> {
    const rows = await this.run(() => {
      if (page.afterSeq !== undefined) {
        return this.db.query<MessageRow>(
          `SELECT * FROM (SELECT ${MESSAGE_COLUMNS} FROM chat_messages WHERE session_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3) page
           ORDER BY seq DESC`,
          [sessionId, page.afterSeq, page.limit],
        );
      }
      if (page.beforeSeq !== undefined) {
        return this.db.query<MessageRow>(
          `SELECT ${MESSAGE_COLUMNS} FROM chat_messages WHERE session_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`,
          [sessionId, page.beforeSeq, page.limit],
        );
      }
      return this.db.query<MessageRow>(`SELECT ${MESSAGE_COLUMNS} FROM chat_messages WHERE session_id = $1 ORDER BY seq DESC LIMIT $2`, [
        sessionId,
        page.limit,
      ]);
    });
    return rows.map(toMessage);
  }

  async unseen(sessionId: string, readerProfileId: string, limit: number): Promise<{ count: number; messages: MessageRecord[] }> {
    const [countRows, rows] = await this.run(() =>
      Promise.all([
        this.db.query<{ count: string | number }>(
          'SELECT count(*) AS count FROM chat_messages WHERE session_id = $1 AND sender_profile_id <> $2 AND NOT seen AND deleted_at IS NULL',
          [sessionId, readerProfileId],
        ),
        this.db.query<MessageRow>(
          `SELECT ${MESSAGE_COLUMNS} FROM chat_messages WHERE session_id = $1 AND sender_profile_id <> $2 AND NOT seen AND deleted_at IS NULL ORDER BY seq ASC LIMIT $3`,
          [sessionId, readerProfileId, limit],
        ),
      ]),
    );
    return { count: Number(countRows[0]?.count ?? 0), messages: rows.map(toMessage) };
  }

  markSeen(sessionId: string, readerProfileId: string, upToSeq: number, toEvent: (u: ReceiptUpdate) => BusEnvelope): Promise<ReceiptUpdate> {
    return this.updateReceipts(
      `UPDATE chat_messages SET seen = true, delivered = true
       WHERE session_id = $1 AND sender_profile_id <> $2 AND seq <= $3 AND NOT seen
       RETURNING id, seq`,
      [sessionId, readerProfileId, upToSeq],
      { sessionId, readerProfileId, seen: true },
      toEvent,
    );
  }

  markDelivered(
    sessionId: string,
    readerProfileId: string,
    messageIds: readonly string[],
    toEvent: (u: ReceiptUpdate) => BusEnvelope,
  ): Promise<ReceiptUpdate> {
    return this.updateReceipts(
      `UPDATE chat_messages SET delivered = true
       WHERE session_id = $1 AND sender_profile_id <> $2 AND id = ANY($3::uuid[]) AND NOT delivered
       RETURNING id, seq`,
      [sessionId, readerProfileId, [...messageIds]],
      { sessionId, readerProfileId, seen: false },
      toEvent,
    );
  }

  async listSessions(email: string, limit: number): Promise<SessionSummary[]> {
    const rows = await this.run(() =>
      this.db.query<SessionRow & { m_id: string | null; m_seq: string | null; m_sender: string | null; m_content: string | null; m_client_msg_id: string | null; m_sent_at: Date | null; m_delivered: boolean | null; m_seen: boolean | null; m_edited_at: Date | null; m_deleted: boolean | null; unread: string | number; blocked_by_me: boolean }>(
        `SELECT s.*,
                m.id AS m_id, m.seq AS m_seq, m.sender_profile_id AS m_sender, m.content AS m_content,
                m.client_msg_id AS m_client_msg_id, m.sent_at AS m_sent_at, m.delivered AS m_delivered, m.seen AS m_seen,
                m.edited_at AS m_edited_at, m.deleted_at IS NOT NULL AS m_deleted,
                (SELECT count(*) FROM chat_messages u
                  WHERE u.session_id = s.id AND NOT u.seen AND u.deleted_at IS NULL
                    AND u.sender_profile_id <> CASE WHEN s.sender_email = $1 THEN s.sender_profile_id ELSE s.receiver_profile_id END) AS unread,
                CASE WHEN s.sender_email = $1 THEN s.blocked_by_sender_at IS NOT NULL ELSE s.blocked_by_receiver_at IS NOT NULL END AS blocked_by_me
           FROM (SELECT * FROM chat_sessions WHERE sender_email = $1
                 UNION ALL
                 SELECT * FROM chat_sessions WHERE receiver_email = $1 AND sender_email <> $1) s
           LEFT JOIN LATERAL (SELECT * FROM chat_messages m WHERE m.session_id = s.id AND m.seq = s.last_seq LIMIT 1) m ON true
          ORDER BY COALESCE(s.last_message_at, s.created_at) DESC, s.id
          LIMIT $2`,
        [email, limit],
      ),
    );
    return rows.map((r) => ({
      session: toSession(r),
      unreadCount: Number(r.unread),
      blockedByMe: r.blocked_by_me,
      lastMessage: r.m_id
        ? toMessage({
            id: r.m_id,
            session_id: r.id,
            seq: r.m_seq!,
            sender_profile_id: r.m_sender!,
            content: r.m_content!,
            client_msg_id: r.m_client_msg_id!,
            sent_at: r.m_sent_at!,
            delivered: r.m_delivered!,
            seen: r.m_seen!,
            edited_at: r.m_edited_at,
            deleted: r.m_deleted!,
          })
        : undefined,
    }));
  }

  async setBlocked(sessionId: string, blockerProfileId: string, blocked: boolean): Promise<void> {
    // Taking the session row's lock orders the block with the sends that lock it: a send that
    // commits after this statement sees the block.
    const rows = await this.run(() =>
      this.db.query<{ id: string }>(
        `UPDATE chat_sessions SET
           blocked_by_sender_at = CASE WHEN sender_profile_id = $2::uuid
             THEN (CASE WHEN $3::boolean THEN coalesce(blocked_by_sender_at, now()) END) ELSE blocked_by_sender_at END,
           blocked_by_receiver_at = CASE WHEN receiver_profile_id = $2::uuid
             THEN (CASE WHEN $3::boolean THEN coalesce(blocked_by_receiver_at, now()) END) ELSE blocked_by_receiver_at END
         WHERE id = $1
         RETURNING id`,
        [sessionId, blockerProfileId, blocked],
      ),
    );
    if (rows.length === 0) throw new ChatError('SESSION_NOT_FOUND', `session ${sessionId} does not exist`);
  }

  async blockers(sessionId: string): Promise<string[]> {
    const rows = await this.run(() =>
      this.db.query<SessionRow>(
        'SELECT sender_profile_id, receiver_profile_id, blocked_by_sender_at, blocked_by_receiver_at FROM chat_sessions WHERE id = $1',
        [sessionId],
      ),
    );
    const row = rows[0];
    if (!row) return [];
    return [...(row.blocked_by_sender_at ? [row.sender_profile_id] : []), ...(row.blocked_by_receiver_at ? [row.receiver_profile_id] : [])];
  }

  async report(input: NewReport): Promise<ReportRecord> {
    const { result, written } = await this.run(() =>
      this.db.transaction(async (tx) => {
        let content: string | null = null;
        if (input.messageId !== null) {
          const [message] = await tx.query<{ content: string }>('SELECT content FROM chat_messages WHERE id = $1 AND session_id = $2', [input.messageId, input.sessionId]);
          if (!message) throw new ChatError('MESSAGE_NOT_FOUND', `message ${input.messageId} is not in session ${input.sessionId}`, { field: 'messageId' });
          content = message.content;
        }
        const id = randomUUID();
        const [stored] = await tx.query<{ created_at: Date }>(
          `INSERT INTO chat_reports (id, session_id, reporter_profile_id, reporter_email, message_id, reason, content)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING created_at`,
          [id, input.sessionId, input.reporterProfileId, input.reporterEmail, input.messageId, input.reason, content],
        );
        const report: ReportRecord = {
          id,
          sessionId: input.sessionId,
          reporterProfileId: input.reporterProfileId,
          reporterEmail: input.reporterEmail,
          messageId: input.messageId,
          reason: input.reason,
          content,
          createdAt: new Date(stored!.created_at),
        };
        const envelope = input.toEvent(report);
        const queued = await insertOutbox(tx, sessionTopic(input.sessionId), envelope, this.origin, this.leaseOutboxMs, this.webhooks);
        return { result: report, written: this.writtenOf([queued], () => envelope) };
      }),
    );
    this.announceOutbox(written);
    return result;
  }

  async listReports(limit: number, before?: string): Promise<ReportRecord[]> {
    const rows = await this.run(() =>
      this.db.query<{ id: string; session_id: string; reporter_profile_id: string; reporter_email: string; message_id: string | null; reason: string; content: string | null; created_at: Date }>(
        `SELECT id, session_id, reporter_profile_id, reporter_email, message_id, reason, content, created_at
           FROM chat_reports
          WHERE $2::uuid IS NULL OR position < (SELECT position FROM chat_reports WHERE id = $2::uuid)
          ORDER BY position DESC
          LIMIT $1`,
        [limit, before ?? null],
      ),
    );
    return rows.map((r) => ({
      id: r.id,
      sessionId: r.session_id,
      reporterProfileId: r.reporter_profile_id,
      reporterEmail: r.reporter_email,
      messageId: r.message_id,
      reason: r.reason,
      content: r.content,
      createdAt: new Date(r.created_at),
    }));
  }

  async unreadTotals(email: string): Promise<{ total: number; sessions: number }> {
    const rows = await this.run(() =>
      this.db.query<{ total: string | number; sessions: string | number }>(
        `SELECT coalesce(sum(unread), 0) AS total, count(*) FILTER (WHERE unread > 0) AS sessions
           FROM (SELECT (SELECT count(*) FROM chat_messages m
                          WHERE m.session_id = s.id AND NOT m.seen AND m.deleted_at IS NULL
                            AND m.sender_profile_id <> CASE WHEN s.sender_email = $1 THEN s.sender_profile_id ELSE s.receiver_profile_id END) AS unread
                   FROM (SELECT * FROM chat_sessions WHERE sender_email = $1
                         UNION ALL
                         SELECT * FROM chat_sessions WHERE receiver_email = $1 AND sender_email <> $1) s) per_session`,
        [email],
      ),
    );
    return { total: Number(rows[0]?.total ?? 0), sessions: Number(rows[0]?.sessions ?? 0) };
  }

  async changeMessage(cmd: ChangeMessage): Promise<{ message: MessageRecord; changed: boolean }> {
    const { result, written } = await this.run(() =>
      this.db.transaction(async (tx) => {
        // Locked, so a concurrent edit and delete of one message apply one after the other.
        const [current] = await tx.query<MessageRow>(
          `SELECT ${MESSAGE_COLUMNS} FROM chat_messages WHERE id = $1 AND session_id = $2 FOR UPDATE`,
          [cmd.messageId, cmd.sessionId],
        );
        if (!current) throw new ChatError('MESSAGE_NOT_FOUND', `message ${cmd.messageId} is not in session ${cmd.sessionId}`);
        if (current.sender_profile_id !== cmd.requesterProfileId) throw new ChatError('NOT_MESSAGE_SENDER', 'only the sender of a message may change it');
        if (current.deleted) {
          if (cmd.change.kind === 'edit') throw new ChatError('MESSAGE_DELETED', 'a deleted message cannot be edited');
          return { result: { message: toMessage(current), changed: false }, written: undefined };
        }
        // The stamp is renewed so that a sync returns the message again, as it is now.
        const [row] =
          cmd.change.kind === 'edit'
            ? await tx.query<MessageRow>(
                `UPDATE chat_messages SET content = $2, edited_at = $3, change_xid = pg_current_xact_id(), change_id = nextval('chat_change_seq')
                  WHERE id = $1 RETURNING ${MESSAGE_COLUMNS}`,
                [cmd.messageId, cmd.change.content, cmd.at.toISOString()],
              )
            : await tx.query<MessageRow>(
                `UPDATE chat_messages SET content = '', deleted_at = $2, change_xid = pg_current_xact_id(), change_id = nextval('chat_change_seq')
                  WHERE id = $1 RETURNING ${MESSAGE_COLUMNS}`,
                [cmd.messageId, cmd.at.toISOString()],
              );
        const message = toMessage(row!);
        const envelope = cmd.toEvent(message);
        const queued = await insertOutbox(tx, sessionTopic(cmd.sessionId), envelope, this.origin, this.leaseOutboxMs, this.webhooks);
        return { result: { message, changed: true }, written: this.writtenOf([queued], () => envelope) };
      }),
    );
    if (written) this.announceOutbox(written);
    return result;
  }

  /**
   * One statement, so the horizon (the oldest transaction still running, pg_snapshot_xmin) and the
   * rows it reads come from the same snapshot: every change stamped below the horizon has committed
   * or never will, and every transaction still to commit has an id at or above it (ADR 0017).
   */
  async changesSince(email: string, after: ChangeStamp, limit: number): Promise<{ changes: StoredChange[]; horizon: ChangeStamp }> {
    const rows = await this.run(() =>
      this.db.query<MessageRow & { horizon: string; kind: 'message' | 'mark' | null; xid: string; cid: string; reader: string | null; seen_up_to: string | null; delivered_up_to: string | null }>(
        `WITH horizon AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),
         mine AS (SELECT id FROM chat_sessions WHERE sender_email = $1 UNION SELECT id FROM chat_sessions WHERE receiver_email = $1)
         SELECT h.xmin::text AS horizon, c.*, c.change_xid::text AS xid, c.change_id::text AS cid FROM horizon h LEFT JOIN LATERAL (
           SELECT * FROM (
             SELECT 'message' AS kind, m.change_xid, m.change_id, m.id, m.session_id, m.seq, m.sender_profile_id, m.content, m.client_msg_id,
                    m.sent_at, m.delivered, m.seen, m.edited_at, m.deleted_at IS NOT NULL AS deleted,
                    NULL::uuid AS reader, NULL::bigint AS seen_up_to, NULL::bigint AS delivered_up_to
               FROM mine JOIN chat_messages m ON m.session_id = mine.id
              WHERE (m.change_xid, m.change_id) > ($2::xid8, $3::bigint) AND m.change_xid < h.xmin
             UNION ALL
             SELECT 'mark', r.change_xid, r.change_id, NULL, r.session_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                    r.reader_profile_id, r.seen_up_to, r.delivered_up_to
               FROM mine JOIN chat_read_marks r ON r.session_id = mine.id
              WHERE (r.change_xid, r.change_id) > ($2::xid8, $3::bigint) AND r.change_xid < h.xmin
           ) changed
           ORDER BY change_xid, change_id
           LIMIT $4
         ) c ON true`,
        [email, after.xid, after.id, limit],
      ),
    );
    // The changes' stamps as text: xid8 and bigint exceed a JavaScript number.
    const changes: StoredChange[] = [];
    for (const r of rows) {
      if (r.kind === null) continue;
      const stamp = { xid: r.xid, id: r.cid };
      if (r.kind === 'message') changes.push({ kind: 'message', stamp, message: toMessage(r) });
      else {
        changes.push({
          kind: 'readMark',
          stamp,
          sessionId: r.session_id,
          readerProfileId: r.reader!,
          seenUpTo: Number(r.seen_up_to),
          deliveredUpTo: Number(r.delivered_up_to),
        });
      }
    }
    return { changes, horizon: { xid: rows[0]!.horizon, id: '0' } };
  }

  async changeHorizon(): Promise<ChangeStamp> {
    const [row] = await this.run(() => this.db.query<{ xmin: string }>('SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin'));
    return { xid: row!.xmin, id: '0' };
  }

  private async updateReceipts(
    sql: string,
    params: unknown[],
    mark: { sessionId: string; readerProfileId: string; seen: boolean },
    toEvent: (u: ReceiptUpdate) => BusEnvelope,
  ): Promise<ReceiptUpdate> {
    const { sessionId } = mark;
    const { result, written } = await this.run(() =>
      this.db.transaction(async (tx) => {
        const rows = await tx.query<{ id: string; seq: string | number }>(sql, params);
        const messages = rows.map((r) => ({ id: r.id, seq: Number(r.seq) })).sort((x, y) => x.seq - y.seq);
        const update: ReceiptUpdate = { messages };
        if (messages.length === 0) return { result: update, written: undefined };
        const upTo = messages.at(-1)!.seq;
        // Re-stamped on every raise, so a sync tells this receipt (chat_read_marks in 0003).
        await tx.query(
          `INSERT INTO chat_read_marks (session_id, reader_profile_id, seen_up_to, delivered_up_to) VALUES ($1, $2, $3, $4)
           ON CONFLICT (session_id, reader_profile_id) DO UPDATE
             SET seen_up_to = greatest(chat_read_marks.seen_up_to, EXCLUDED.seen_up_to),
                 delivered_up_to = greatest(chat_read_marks.delivered_up_to, EXCLUDED.delivered_up_to),
                 change_xid = pg_current_xact_id(), change_id = nextval('chat_change_seq')`,
          [sessionId, mark.readerProfileId, mark.seen ? upTo : 0, upTo],
        );
        const envelope = toEvent(update);
        const queued = await insertOutbox(tx, sessionTopic(sessionId), envelope, this.origin, this.leaseOutboxMs, this.webhooks);
        return { result: update, written: this.writtenOf([queued], () => envelope) };
      }),
    );
    if (written) this.announceOutbox(written);
    return result;
  }

  /**
   * A batch holds other users' sends, so one item the database refuses must not fail them: the
   * batch is split in halves, committed one after the other (so a session's seq order stays its
   * send order), until the item that fails stands alone and only its sender gets the error. An
   * outage (STORE_UNAVAILABLE) is the same for every item and fails the batch as it is.
   */
  private async appendBatch(items: readonly AppendMessage[]): Promise<ReadonlyArray<BatchOutcome<AppendResult>>> {
    try {
      return await this.commitBatch(items);
    } catch (err) {
      if (err instanceof ChatError) throw err;
      if (items.length === 1) return [{ ok: false, error: refusedItemError(err) }];
      const half = Math.ceil(items.length / 2);
      const first = await this.appendBatch(items.slice(0, half));
      const second = await this.appendBatch(items.slice(half));
      return [...first, ...second];
    }
  }

  private async commitBatch(items: readonly AppendMessage[]): Promise<ReadonlyArray<BatchOutcome<AppendResult>>> {
    for (let attempt = 1; ; attempt++) {
      try {
        const { outcomes, queued, envelopes } = await appendInOneStatement(this.db, items, this.origin, this.leaseOutboxMs, this.webhooks);
        if (queued.length > 0) this.announceOutbox(this.writtenOf(queued, (row) => envelopes.get(row.key ?? '')));
        return outcomes;
      } catch (err) {
        if (isConcurrentDuplicate(err) && attempt < 5) continue;
        throw mapStoreError(err);
      }
    }
  }

  private writtenOf(queued: readonly QueuedRow[], envelopeOf: (row: QueuedRow) => BusEnvelope | undefined): WrittenOutbox {
    const rows: Array<{ id: string; payload: BusEnvelope; createdAt: Date }> = [];
    for (const row of queued) {
      const payload = envelopeOf(row);
      if (payload) rows.push({ id: row.id, payload, createdAt: new Date(row.createdAt) });
    }
    return { leased: this.leaseOutboxMs !== null, lease: queued[0]?.lease ?? '0', rows };
  }

  private announceOutbox(written: WrittenOutbox): void {
    for (const listener of this.outboxListeners) listener(written);
  }

  private async run<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw mapStoreError(err);
    }
  }
}

/**
 * The outbox row as the store tells the relay about it; `key` finds its envelope (the message id).
 * `lease` is its next_retry_at in epoch microseconds, the same for every row of the commit (now()
 * is per transaction): the form PostgresOutboxStore's claims return and its markFailed compares.
 */
const QUEUED_COLUMNS = `id::text AS id, payload->'event'->'message'->>'messageId' AS key, created_at AS "createdAt",
           (extract(epoch FROM next_retry_at) * 1000000)::bigint::text AS lease`;

/**
 * NOTIFY is delivered at commit, once per transaction, to every instance's relay (LISTEN), which
 * then claims. Rows written leased to this instance are not due for any other relay until the lease
 * ends, and this instance's relay was handed them directly: a NOTIFY would only make every other
 * instance (and PostgreSQL, and each LISTEN connection) do work per commit to find nothing. So it
 * is sent only for rows written due at once.
 */
const NOTIFY_UNLESS_LEASED = (origin: string, leaseMs: string): string =>
  `(SELECT pg_notify('${OUTBOX_CHANNEL}', ${origin}) WHERE ${leaseMs}::double precision IS NULL) AS notified`;

/**
 * The SQL of a group commit: one statement, run on its own (autocommit), so a commit costs one
 * round trip instead of four (BEGIN, lock and look up, write, COMMIT). In order, it locks the
 * batch's sessions in id order (concurrent batches on any instance serialise per session and never
 * deadlock; FOR UPDATE returns each session's newest last_seq, also after waiting), finds the items
 * whose idempotency key is stored already, numbers the others from last_seq in batch order, inserts
 * them, advances the sessions, and writes one outbox row per message with the seq set in its
 * payload (the payload is built before the seq is known). Items of an unknown session, or of one a
 * participant blocks (read under the lock, so a block committed before it refuses them), are left out.
 * A key committed by another transaction after this statement's snapshot makes the insert fail on
 * the key's unique constraint, and the statement writes nothing: the caller runs it again, and the
 * key is then found as a repeat. So seq stays gapless and a repeat never writes a second row.
 */
// Sessions and repeats are looked up one key at a time (LATERAL … LIMIT 1), never as a join the
// planner may hash: the plan a connection caches must read both tables by index even when it was
// made on an empty database (docs/adr/0019).
const appendBatchSql = (webhookType: boolean): string => `
WITH item AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb)
    AS t(id uuid, session_id uuid, sender_profile_id uuid, content text, client_msg_id uuid, sent_at timestamptz, destination text, payload jsonb, n int)
), locked AS MATERIALIZED (
  SELECT s.* FROM (SELECT DISTINCT session_id FROM item ORDER BY session_id) i CROSS JOIN LATERAL (
    SELECT id, last_seq, (blocked_by_sender_at IS NOT NULL OR blocked_by_receiver_at IS NOT NULL) AS blocked
      FROM chat_sessions WHERE id = i.session_id LIMIT 1 FOR UPDATE) s
), existing AS MATERIALIZED (
  SELECT m.* FROM item i CROSS JOIN LATERAL (
    SELECT ${MESSAGE_COLUMNS_OF('m')} FROM chat_messages m
     WHERE m.sender_profile_id = i.sender_profile_id AND m.client_msg_id = i.client_msg_id LIMIT 1) m
), fresh AS MATERIALIZED (
  SELECT i.*, l.last_seq + row_number() OVER (PARTITION BY i.session_id ORDER BY i.n) AS seq
    FROM item i JOIN locked l ON l.id = i.session_id AND NOT l.blocked
   WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.sender_profile_id = i.sender_profile_id AND e.client_msg_id = i.client_msg_id)
), inserted AS (
  INSERT INTO chat_messages (id, session_id, seq, sender_profile_id, content, client_msg_id, sent_at)
  SELECT id, session_id, seq, sender_profile_id, content, client_msg_id, sent_at FROM fresh
), advanced AS (
  UPDATE chat_sessions s SET last_seq = f.seq, last_message_at = f.sent_at
    FROM (SELECT DISTINCT ON (session_id) session_id, seq, sent_at FROM fresh ORDER BY session_id, seq DESC) f
   WHERE s.id = f.session_id
), queued AS (
  INSERT INTO chat_message_outbox (destination, payload, next_retry_at)
  SELECT destination, jsonb_set(payload, '{event,message,seq}', to_jsonb(seq)),
         now() + coalesce($3::double precision, 0) * interval '1 millisecond'
    FROM fresh ORDER BY n
  RETURNING ${QUEUED_COLUMNS}
)${webhookType ? `, hooked AS (
  INSERT INTO chat_webhook_outbox (session_id, event_type, payload)
  SELECT session_id::text, $4, jsonb_set(payload, '{event,message,seq}', to_jsonb(seq)) FROM fresh ORDER BY n
)` : ''}
SELECT (SELECT json_agg(json_build_array(id, seq)) FROM fresh) AS created,
       (SELECT json_agg(existing) FROM existing) AS existing,
       (SELECT json_agg(queued) FROM queued) AS queued,
       (SELECT json_agg(id) FROM locked WHERE blocked) AS blocked,
       ${NOTIFY_UNLESS_LEASED('$2', '$3')}`;
const APPEND_BATCH_SQL = appendBatchSql(false);
const APPEND_BATCH_WITH_WEBHOOK_SQL = appendBatchSql(true);

async function appendInOneStatement(
  db: Queryable,
  items: readonly AppendMessage[],
  origin: string,
  leaseMs: number | null,
  webhooks: Webhooks,
): Promise<{ outcomes: Array<BatchOutcome<AppendResult>>; queued: QueuedRow[]; envelopes: Map<string, BusEnvelope> }> {
  const outcomes: Array<BatchOutcome<AppendResult> | undefined> = new Array(items.length);
  const key = (m: { senderProfileId: string; clientMessageId: string }): string => `${m.senderProfileId}|${m.clientMessageId}`;

  // Items whose key repeats inside this batch resolve like the first one; only firsts are sent.
  const firstIndexByKey = new Map<string, number>();
  const repeats: Array<[number, number]> = [];
  const firsts: number[] = [];
  items.forEach((item, i) => {
    const k = key(item);
    const first = firstIndexByKey.get(k);
    if (first !== undefined) repeats.push([i, first]);
    else {
      firstIndexByKey.set(k, i);
      firsts.push(i);
    }
  });

  // Each event is built once, before its seq is known; the statement writes the seq into the stored
  // payload and the returned seq is set on the record and the event handed to the local relay.
  const candidates = firsts.map((i) => {
    const item = items[i]!;
    const message: MessageRecord = {
      id: randomUUID(),
      sessionId: item.sessionId,
      seq: 0,
      senderProfileId: item.senderProfileId,
      content: item.content,
      clientMessageId: item.clientMessageId,
      sentAt: item.sentAt,
      delivered: false,
      seen: false,
      editedAt: null,
      deleted: false,
    };
    return { index: i, message, envelope: item.toEvent(message) };
  });

  // Every appended event is a 'message' event: its webhook rows, when wanted, come from the same rows.
  const webhookType = webhooks && webhookTypeOf('message', webhooks);
  const [row] = await db.query<{ created: Array<[string, number]> | null; existing: MessageJsonRow[] | null; queued: QueuedRow[] | null; blocked: string[] | null }>(webhookType ? APPEND_BATCH_WITH_WEBHOOK_SQL : APPEND_BATCH_SQL, [
    // One JSON document, not eight arrays: the driver escapes array literals element by element in
    // JavaScript (the events' JSON twice over), where JSON.stringify is one native pass.
    JSON.stringify(
      candidates.map((c, n) => ({
        id: c.message.id,
        session_id: c.message.sessionId,
        sender_profile_id: c.message.senderProfileId,
        content: c.message.content,
        client_msg_id: c.message.clientMessageId,
        sent_at: c.message.sentAt,
        destination: sessionTopic(c.message.sessionId),
        payload: c.envelope,
        n,
      })),
    ),
    origin,
    leaseMs,
    ...(webhookType ? [webhookType] : []),
  ]);

  const createdSeq = new Map((row?.created ?? []).map(([id, seq]) => [id, Number(seq)]));
  const existing = new Map((row?.existing ?? []).map((r) => [`${r.sender_profile_id}|${r.client_msg_id}`, toMessage({ ...r, sent_at: new Date(r.sent_at), edited_at: r.edited_at === null ? null : new Date(r.edited_at) })]));
  const blocked = new Set(row?.blocked ?? []);
  const envelopes = new Map<string, BusEnvelope>();
  for (const { index, message, envelope } of candidates) {
    const item = items[index]!;
    const stored = existing.get(key(item));
    const seq = createdSeq.get(message.id);
    if (stored) outcomes[index] = repeatOutcome(stored, item);
    else if (seq === undefined && blocked.has(item.sessionId)) outcomes[index] = { ok: false, error: new ChatError('PEER_BLOCKED', 'a participant has blocked this session: no new messages until the block is lifted') };
    else if (seq === undefined) outcomes[index] = { ok: false, error: new ChatError('SESSION_NOT_FOUND', `session ${item.sessionId} does not exist`) };
    else {
      const created: MessageRecord = { ...message, seq };
      if (envelope.event.type === 'message') envelope.event.message.seq = seq;
      envelopes.set(message.id, envelope);
      outcomes[index] = { ok: true, value: { message: created, created: true } };
    }
  }
  for (const [i, first] of repeats) {
    const firstOutcome = outcomes[first]!;
    outcomes[i] = firstOutcome.ok ? repeatOutcome(firstOutcome.value.message, items[i]!) : firstOutcome;
  }
  return { outcomes: outcomes as Array<BatchOutcome<AppendResult>>, queued: row?.queued ?? [], envelopes };
}

/** A unique violation on the idempotency key: another transaction stored the key after we looked. */
function isConcurrentDuplicate(err: unknown): boolean {
  const e = err as { code?: unknown; constraint?: unknown } | undefined;
  return e?.code === '23505' && e.constraint === 'chat_messages_sender_client_msg_uk';
}

function repeatOutcome(stored: MessageRecord, item: AppendMessage): BatchOutcome<AppendResult> {
  // An edited or deleted message no longer holds the content it was sent with: a retry of that
  // send (in the same session) is answered with the message as it is now.
  const changed = stored.editedAt !== null || stored.deleted;
  if (stored.sessionId !== item.sessionId || (stored.content !== item.content && !changed)) {
    return {
      ok: false,
      error: new ChatError('IDEMPOTENCY_KEY_REUSED', 'clientMessageId was already used for a different message', { clientMessageId: item.clientMessageId }),
    };
  }
  return { ok: true, value: { message: stored, created: false } };
}

async function insertOutbox(
  tx: Queryable,
  destination: string,
  envelope: BusEnvelope,
  origin: string,
  leaseMs: number | null,
  webhooks: Webhooks,
): Promise<QueuedRow> {
  const payload = JSON.stringify(envelope);
  const hooked = webhookRows([envelope], [payload], webhooks);
  const [row] = await tx.query<QueuedRow>(
    `WITH queued AS (
       INSERT INTO chat_message_outbox (destination, payload, next_retry_at)
       VALUES ($1, $2::jsonb, now() + coalesce($4::double precision, 0) * interval '1 millisecond')
       RETURNING ${QUEUED_COLUMNS}
     )${hooked ? WEBHOOK_ROWS_CTE('$5', '$6', '$7') : ''}
     SELECT queued.*, ${NOTIFY_UNLESS_LEASED('$3', '$4')} FROM queued`,
    [destination, payload, origin, leaseMs, ...(hooked ? [hooked.sessionIds, hooked.types, hooked.payloads] : [])],
  );
  return row!;
}

/** The webhook types this store writes rows for; null: webhooks are off and nothing is written. */
type Webhooks = ReadonlySet<WebhookEventType> | null;

/**
 * The webhook rows for a commit's events, in the events' order (so a session's rows get ids in seq
 * order); undefined when there are none, and then the statement has no webhook part at all.
 */
function webhookRows(
  envelopes: readonly BusEnvelope[],
  payloads: readonly string[],
  webhooks: Webhooks,
): { sessionIds: string[]; types: string[]; payloads: string[] } | undefined {
  if (!webhooks) return undefined;
  const rows = { sessionIds: [] as string[], types: [] as string[], payloads: [] as string[] };
  envelopes.forEach((envelope, i) => {
    const type = webhookTypeOf(envelope.event.type, webhooks);
    if (!type) return;
    rows.sessionIds.push(envelope.event.sessionId);
    rows.types.push(type);
    rows.payloads.push(payloads[i]!);
  });
  return rows.types.length > 0 ? rows : undefined;
}

/** A data-modifying CTE runs whether or not the statement reads it; ORDINALITY keeps the ids in event order. */
const WEBHOOK_ROWS_CTE = (sessionIds: string, types: string, payloads: string): string => `, hooked AS (
           INSERT INTO chat_webhook_outbox (session_id, event_type, payload)
           SELECT s, t, p FROM unnest(${sessionIds}::text[], ${types}::text[], ${payloads}::jsonb[]) WITH ORDINALITY AS w(s, t, p, i)
            ORDER BY i
           RETURNING 1
         )`;

/**
 * What the sender of the one item a batch could not store is told. A data exception (SQLSTATE
 * class 22: text PostgreSQL cannot encode, a value out of range) is the request's fault and says
 * so; anything else stays what it was (an internal error the transport logs).
 */
function refusedItemError(err: unknown): unknown {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && code.startsWith('22')) {
    return new ChatError('INVALID_CONTENT', 'the message store refused this message as not valid text', undefined, { cause: err });
  }
  return err;
}

function mapStoreError(err: unknown): unknown {
  if (err instanceof ChatError) return err;
  if (isConnectionFailure(err)) return new ChatError('STORE_UNAVAILABLE', 'the message store is unavailable, try again', undefined, { cause: err });
  return err;
}

function toSession(r: SessionRow): SessionRecord {
  return {
    id: r.id,
    intent: r.intent,
    a: { profileId: r.sender_profile_id, email: r.sender_email, displayName: r.sender_display_name },
    b: { profileId: r.receiver_profile_id, email: r.receiver_email, displayName: r.receiver_display_name },
    createdAt: r.created_at,
    lastSeq: Number(r.last_seq),
  };
}

function toMessage(r: MessageRow): MessageRecord {
  return {
    id: r.id,
    sessionId: r.session_id,
    seq: Number(r.seq),
    senderProfileId: r.sender_profile_id,
    content: r.content,
    clientMessageId: r.client_msg_id,
    sentAt: r.sent_at,
    delivered: r.delivered,
    seen: r.seen,
    editedAt: r.edited_at,
    deleted: r.deleted,
  };
}
