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
}

/** A delivered/seen receipt: the reader's client ACKed (`delivered`) or read (`seen`) messages. */
export interface Receipt {
  sessionId: string;
  readerEmail: string;
  upToSeq: number;
  status: 'seen' | 'delivered';
  messageIds: string[];
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
