/**
 * Events that leave the chat core through the outbox and the bus. Their JSON form is what STOMP
 * clients receive as the MESSAGE body, so field names are public API.
 */
import type { Problem } from './problem.js';

/** ChatMessageResponse of the low-level design, plus `seq` and `clientMessageId`. */
export interface ChatMessageView {
  messageId: string;
  sessionId: string;
  seq: number;
  senderId: string;
  senderEmail: string;
  senderDisplayName: string;
  content: string;
  clientMessageId: string;
  sentAt: string;
  delivered: boolean;
  seen: boolean;
  /** When its sender last edited it (ISO 8601), or null. */
  editedAt: string | null;
  /** A deleted message stays in its place as a tombstone: same id and seq, content "". */
  deleted: boolean;
}

/** Where an event goes: a session topic, or a user queue resolved to that user's connections. */
export type Destination =
  | { readonly topic: string }
  | { readonly user: string; readonly queue: 'messages' | 'ack' | 'error' | 'receipts' | 'presence' };

/** A session peer's presence as GET /api/chat/{id}/presence returns it (`{peer: …}`). */
export interface PeerPresenceView {
  online: boolean;
  /** When their last connection closed (ISO 8601); null while online or never seen. */
  lastSeenAt: string | null;
}

/** A user's presence change as their peers get it on /user/queue/presence. */
export interface PresenceView extends PeerPresenceView {
  email: string;
}

export type ChatEvent =
  | { type: 'message'; sessionId: string; destinations: Destination[]; message: ChatMessageView }
  /** A message changed in place: the body is the message as it is now (a delete's is the tombstone). */
  | { type: 'edit' | 'delete'; sessionId: string; destinations: Destination[]; message: ChatMessageView }
  | {
      type: 'receipt';
      sessionId: string;
      destinations: Destination[];
      receipt: { sessionId: string; readerEmail: string; upToSeq: number; status: 'seen' | 'delivered'; messageIds: string[] };
    }
  | {
      /** The outcome of a send that failed where it was processed (another instance, via the send queue). */
      type: 'error';
      sessionId: string;
      destinations: Destination[];
      error: Problem & { clientMessageId?: string };
    }
  | {
      type: 'typing';
      sessionId: string;
      destinations: Destination[];
      typing: { sessionId: string; email: string; typing: boolean };
    }
  | {
      /** For moderation (webhooks), written through the outbox with the report; delivered to no connection. */
      type: 'report';
      sessionId: string;
      destinations: [];
      report: ReportView;
    }
  | {
      /**
       * A user went online or offline across the cluster; published straight to the bus (never the
       * outbox), to each user who shares a session with them. `sessionId`: one session they share.
       */
      type: 'presence';
      sessionId: string;
      destinations: Destination[];
      presence: PresenceView;
    }
  | {
      /**
       * An administrator closed every connection of `email`: each instance that holds some closes
       * them. Published straight to the bus, recipient `email`; never written to a client, so no
       * destinations and no session (`sessionId` is '').
       */
      type: 'disconnect';
      sessionId: string;
      destinations: Destination[];
      disconnect: { email: string; by: string };
    };

/** A participant's report of a session or one of its messages, with the message's content as it was then. */
export interface ReportView {
  reportId: string;
  sessionId: string;
  reporterEmail: string;
  messageId: string | null;
  reason: string;
  content: string | null;
  createdAt: string;
}

export const sessionTopic = (sessionId: string): string => `/topic/session.${sessionId}`;
