/**
 * The codes that end a STOMP connection, and what a client should do after each, modelled on
 * centrifuge's disconnect codes: **reconnect** (with backoff; after TOKEN_EXPIRED with a fresh
 * token) or **terminal** (reconnecting would fail the same way until the client, its credentials
 * or its configuration change).
 *
 * Every ERROR frame carries `code` and `reconnect: true|false` headers beside `message`
 * ("CODE: detail", for people and older clients). An ERROR frame whose code is not here refused
 * one frame of a client that does not listen on /user/queue/error: its code is the refusal's
 * (chat catalogue), and since the connection itself was fine its `reconnect` is true (without
 * sending that frame again). Codes sent as `handshake` refuse the WebSocket upgrade or SockJS
 * request as problem+json before STOMP begins; there is no frame to carry `reconnect`.
 *
 * Public API (README, "Real time"): names are never renamed or reused. The SDK keeps a copy in
 * client/connection-codes.ts, held equal to this one by its test.
 */
import type { ChatErrorCode } from '../../chat/chat-errors.js';

export interface ConnectionCodeEntry {
  readonly reconnect: boolean;
  readonly sentAs: 'ERROR' | 'handshake';
  /** When it is sent, for people (the README's table). */
  readonly reason: string;
}

export const CONNECTION_CODES = {
  // CONNECT
  UNAUTHENTICATED: { reconnect: false, sentAs: 'ERROR', reason: 'CONNECT without a token, or with one the verifier refused (signature, issuer, audience, lifetime, expiry, claims); it would be refused again, get a new one first' },
  UNSUPPORTED_VERSION: { reconnect: false, sentAs: 'ERROR', reason: 'CONNECT accepts no version the server speaks (1.2, 1.1)' },
  NOT_CONNECTED: { reconnect: false, sentAs: 'ERROR', reason: 'a frame other than CONNECT came first' },
  ALREADY_CONNECTED: { reconnect: false, sentAs: 'ERROR', reason: 'a second CONNECT on a connected connection' },
  CONNECT_TIMEOUT: { reconnect: true, sentAs: 'ERROR', reason: 'no CONNECT within 10 s of opening' },
  TOO_MANY_CONNECTIONS: { reconnect: true, sentAs: 'ERROR', reason: 'the user already holds `MAX_CONNECTIONS_PER_USER` connections on this instance; a slot frees when one of them closes or times out' },
  BUS_UNAVAILABLE: { reconnect: true, sentAs: 'ERROR', reason: 'real-time delivery to the user could not be set up (broker unreachable)' },
  // Frames the decoder refuses: the client would send them again.
  FRAME_TOO_LARGE: { reconnect: false, sentAs: 'ERROR', reason: 'a frame over 64 KiB' },
  TOO_MANY_HEADERS: { reconnect: false, sentAs: 'ERROR', reason: 'a frame with more than 64 headers' },
  HEADER_TOO_LONG: { reconnect: false, sentAs: 'ERROR', reason: 'a header line over 8 KiB' },
  COMMAND_TOO_LONG: { reconnect: false, sentAs: 'ERROR', reason: 'a command line over 64 bytes' },
  UNKNOWN_COMMAND: { reconnect: false, sentAs: 'ERROR', reason: 'a command that is not a STOMP client command' },
  BAD_ESCAPE: { reconnect: false, sentAs: 'ERROR', reason: 'an undefined escape sequence in a header' },
  BAD_CONTENT_LENGTH: { reconnect: false, sentAs: 'ERROR', reason: 'a content-length that is not a non-negative integer' },
  INVALID_UTF8: { reconnect: false, sentAs: 'ERROR', reason: 'a header that is not valid UTF-8' },
  UNEXPECTED_BODY: { reconnect: false, sentAs: 'ERROR', reason: 'a body on a frame that may not have one' },
  MALFORMED_FRAME: { reconnect: false, sentAs: 'ERROR', reason: 'any other framing error (a header without a colon, a stray CR, a body not ended by NUL, a SockJS message that is not a string)' },
  UNSUPPORTED: { reconnect: false, sentAs: 'ERROR', reason: 'a transaction frame (BEGIN, COMMIT, ABORT)' },
  // Limits and liveness
  TOO_MANY_FRAMES: { reconnect: true, sentAs: 'ERROR', reason: 'kept sending over the frame budget while refused, or 1,024 frames / 1 MiB ahead of their handling; reconnect with backoff and send slower' },
  SLOW_CONSUMER: { reconnect: true, sentAs: 'ERROR', reason: '4 MiB of frames queued for a client that does not read them; reconnect and catch up from history' },
  HEARTBEAT_TIMEOUT: { reconnect: true, sentAs: 'ERROR', reason: 'nothing from the client for twice the agreed heart-beat interval' },
  IDLE_TIMEOUT: { reconnect: true, sentAs: 'ERROR', reason: 'no client heart-beats agreed and nothing received for `STOMP_IDLE_TIMEOUT_MS`; agree heart-beats to stay connected' },
  TOKEN_EXPIRED: { reconnect: true, sentAs: 'ERROR', reason: "the token's `exp` passed while connected (refresh it with SEND `/app/auth.refresh` before then); reconnect with a fresh token" },
  IDENTITY_CHANGED: { reconnect: false, sentAs: 'ERROR', reason: 'SEND `/app/auth.refresh` with a token for another user; a connection is one user\'s, connect again as the new one' },
  // The server
  SERVER_SHUTDOWN: { reconnect: true, sentAs: 'ERROR', reason: 'the instance is stopping; another one (or this one, restarted) will take the connection' },
  INTERNAL: { reconnect: true, sentAs: 'ERROR', reason: 'our bug, contained to this connection' },
  DISCONNECTED_BY_ADMIN: { reconnect: false, sentAs: 'ERROR', reason: 'an administrator closed all of the user’s connections (`POST /admin/users/{email}/disconnect`); reconnect only when the user acts again' },
  // Before STOMP: the upgrade or SockJS request is refused with problem+json.
  ORIGIN_NOT_ALLOWED: { reconnect: false, sentAs: 'handshake', reason: 'a browser Origin not in `ALLOWED_ORIGINS` (HTTP 403)' },
  TOO_MANY_PENDING_CONNECTIONS: { reconnect: true, sentAs: 'handshake', reason: '`MAX_PENDING_CONNECTIONS` connections are waiting to authenticate on this instance (HTTP 503)' },
  TOO_MANY_PENDING_FROM_ADDRESS: { reconnect: true, sentAs: 'handshake', reason: '`MAX_PENDING_CONNECTIONS_PER_ADDRESS` connections from this address are waiting to authenticate (HTTP 429)' },
} as const satisfies Partial<Record<ChatErrorCode, ConnectionCodeEntry>>;

export type ConnectionCode = keyof typeof CONNECTION_CODES;

/** The `reconnect` header of an ERROR frame with this code. */
export function reconnectAfter(code: ChatErrorCode): boolean {
  return Object.hasOwn(CONNECTION_CODES, code) ? CONNECTION_CODES[code as ConnectionCode].reconnect : true;
}
