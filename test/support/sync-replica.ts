/**
 * What a client holds after applying sync events to what it loaded, kept the way the service
 * defines the events: a message event as the message now, receipts as "every message of the other
 * side up to upToSeq". Tests compare it with history to prove a sync loses nothing.
 */
export interface SyncedMessage {
  messageId: string;
  sessionId: string;
  seq: number;
  senderEmail: string;
  content: string;
  delivered: boolean;
  seen: boolean;
  editedAt: string | null;
  deleted: boolean;
  [field: string]: unknown;
}

export type SyncEventBody =
  | { type: 'message' | 'edit' | 'delete'; sessionId: string; message: SyncedMessage }
  | { type: 'receipt'; sessionId: string; receipt: { sessionId: string; readerEmail: string; upToSeq: number; status: 'seen' | 'delivered' } };

export class SyncReplica {
  /** Per session, messages by seq. */
  readonly sessions = new Map<string, Map<number, SyncedMessage>>();

  load(messages: readonly SyncedMessage[]): void {
    for (const m of messages) this.session(m.sessionId).set(m.seq, { ...m });
  }

  apply(events: readonly SyncEventBody[]): void {
    for (const event of events) {
      const session = this.session(event.sessionId);
      if (event.type !== 'receipt') {
        session.set(event.message.seq, { ...event.message });
        continue;
      }
      const { readerEmail, upToSeq, status } = event.receipt;
      for (const m of session.values()) {
        if (m.senderEmail === readerEmail || m.seq > upToSeq) continue;
        m.delivered = true;
        if (status === 'seen') m.seen = true;
      }
    }
  }

  /** A session's messages newest first, as history returns them. */
  messages(sessionId: string): SyncedMessage[] {
    return [...this.session(sessionId).values()].sort((x, y) => y.seq - x.seq);
  }

  private session(sessionId: string): Map<number, SyncedMessage> {
    let session = this.sessions.get(sessionId);
    if (!session) this.sessions.set(sessionId, (session = new Map()));
    return session;
  }
}
