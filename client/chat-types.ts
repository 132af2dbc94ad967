/**
 * The wire shapes of the chat service as a client sees them (README "HTTP API" and "Real time"). The
 * SDK keeps its own copy rather than importing the server's types, so it builds on its own; the
 * field names are the service's public API and do not change.
 */

/** ChatMessageResponse: one stored message. `seq` is gapless per session and orders it. */
export interface ChatMessage {
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
  /** Deleted: a tombstone in its place (same id and seq), content "". */
  deleted: boolean;
}

/** A delivered/seen receipt: the reader's client ACKed (`delivered`) or read (`seen`) messages. */
export interface Receipt {
  sessionId: string;
  readerEmail: string;
  upToSeq: number;
  status: 'seen' | 'delivered';
  messageIds: string[];
}

/** A receipt as a sync tells it: how far one side has read (or received) the other's messages. */
export interface SyncReceipt {
  sessionId: string;
  readerEmail: string;
  upToSeq: number;
  status: 'seen' | 'delivered';
}

/** One change from `GET /api/chat/sync`: a message as it is now (typed by its state), or a receipt. */
export type SyncEvent =
  | { type: 'message' | 'edit' | 'delete'; sessionId: string; message: ChatMessage }
  | { type: 'receipt'; sessionId: string; receipt: SyncReceipt };

export interface SyncPage {
  /** Oldest first. */
  events: SyncEvent[];
  /** Pass as `since` next time. */
  next: string;
  /** More changes wait: call again with `next` now. */
  hasMore: boolean;
}

export interface TypingSignal {
  sessionId: string;
  email: string;
  typing: boolean;
}

/** A session peer's presence, as `ChatClient.presence(sessionId)` reads it. */
export interface PeerPresence {
  online: boolean;
  /** When their last connection closed (ISO 8601); null while online or never seen. */
  lastSeenAt: string | null;
}

/** Someone's presence change, as the `presence` event carries it (from /user/queue/presence). */
export interface Presence extends PeerPresence {
  email: string;
}

export interface Participant {
  profileId: string;
  email: string;
  displayName: string;
}

export interface SessionInfo {
  sessionId: string;
  intent: string;
  me: Participant;
  peer: Participant;
  createdAt: string;
}

export interface SessionSummary extends SessionInfo {
  lastSeq: number;
  lastMessage: ChatMessage | null;
  unreadCount: number;
  /** I block this session: nobody can send into it until I unblock it. */
  blockedByMe: boolean;
}

/** `GET /api/chat/unread-count`: messages from others I have not seen, and in how many sessions. */
export interface UnreadTotals {
  total: number;
  sessions: number;
}

export interface HistoryPage {
  sessionId: string;
  /** Newest first. */
  messages: ChatMessage[];
  /** The next `before` (paging back) or `after` (catching up) cursor; null at the end. */
  nextCursor: number | null;
}

export interface UnreadMessages {
  sessionId: string;
  count: number;
  /** Oldest first, at most 200. */
  messages: ChatMessage[];
}

/** RFC 9457 problem details with the service's stable `code`. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  clientMessageId?: string;
  [extension: string]: unknown;
}

export interface DevToken {
  token: string;
  expiresAt: string;
}
