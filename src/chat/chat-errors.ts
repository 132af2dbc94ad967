/**
 * The one error type of the service and its catalogue: every code any wire carries is here. Codes
 * are public API (problem+json bodies, /user/queue/error messages, STOMP ERROR frames): never
 * renamed, never reused. `problem.ts` turns an error into what a client is told; STOMP says which
 * codes end a connection, and whether to reconnect, in `realtime/stomp/connection-codes.ts`.
 */

export const CHAT_ERROR_CATALOGUE = {
  VALIDATION_FAILED: { status: 400, title: 'Request is not valid' },
  MALFORMED_JSON: { status: 400, title: 'Request body is not valid JSON' },
  CONTENT_EMPTY: { status: 400, title: 'Message content is empty' },
  INVALID_CONTENT: { status: 400, title: 'Text is not well-formed' },
  CONTENT_TOO_LONG: { status: 413, title: 'Message content is too long' },
  SELF_CHAT: { status: 400, title: 'A session needs two different people' },
  INTENT_MISMATCH: { status: 400, title: 'Intent does not match the session' },
  UNAUTHENTICATED: { status: 401, title: 'Authentication required' },
  IDENTITY_MISMATCH: { status: 403, title: 'Identity in the request differs from the token' },
  NOT_A_PARTICIPANT: { status: 403, title: 'Not a participant of this session' },
  PEER_BLOCKED: { status: 403, title: 'Messages in this session are blocked' },
  IDENTITY_CHANGED: { status: 403, title: 'A refreshed token names another user' },
  ORIGIN_NOT_ALLOWED: { status: 403, title: 'Origin not allowed' },
  FORBIDDEN_SCOPE: { status: 403, title: 'The token lacks the scope this route needs' },
  DESTINATION_FORBIDDEN: { status: 403, title: 'Destination not allowed' },
  NOT_MESSAGE_SENDER: { status: 403, title: 'Only the sender of a message may change it' },
  SESSION_NOT_FOUND: { status: 404, title: 'Session not found' },
  PROFILE_NOT_FOUND: { status: 404, title: 'Profile not found' },
  MESSAGE_NOT_FOUND: { status: 404, title: 'Message not found' },
  ROUTE_NOT_FOUND: { status: 404, title: 'No such route' },
  UNKNOWN_DESTINATION: { status: 404, title: 'No such destination' },
  METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed' },
  IDEMPOTENCY_KEY_REUSED: { status: 409, title: 'clientMessageId was already used for a different message' },
  MESSAGE_DELETED: { status: 409, title: 'Message was deleted' },
  BODY_TOO_LARGE: { status: 413, title: 'Request body is too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Unsupported media type' },
  RATE_LIMITED: { status: 429, title: 'Too many requests' },
  TOO_MANY_FRAMES: { status: 429, title: 'Too many frames on one connection' },
  TOO_MANY_CONNECTIONS: { status: 429, title: 'Too many connections for one user' },
  IDLE_TIMEOUT: { status: 408, title: 'Connection idle for too long' },
  INTERNAL: { status: 500, title: 'Internal error' },
  STORE_UNAVAILABLE: { status: 503, title: 'Message store unavailable' },
  PROFILE_SERVICE_UNAVAILABLE: { status: 503, title: 'Profile service unavailable' },
  BUS_UNAVAILABLE: { status: 503, title: 'Event bus unavailable' },
  TOO_MANY_PENDING_CONNECTIONS: { status: 503, title: 'Too many connections waiting to authenticate' },
  TOO_MANY_PENDING_FROM_ADDRESS: { status: 429, title: 'Too many connections waiting to authenticate from this address' },
  // A STOMP connection's own failures: its ERROR frame and close.
  CONNECT_TIMEOUT: { status: 408, title: 'No CONNECT frame in time' },
  NOT_CONNECTED: { status: 400, title: 'The first frame must be CONNECT' },
  ALREADY_CONNECTED: { status: 400, title: 'Already connected' },
  UNSUPPORTED_VERSION: { status: 400, title: 'No STOMP version in common' },
  UNSUPPORTED: { status: 400, title: 'Not supported' },
  UNKNOWN_COMMAND: { status: 400, title: 'Unknown STOMP command' },
  FRAME_TOO_LARGE: { status: 413, title: 'Frame is too large' },
  TOO_MANY_HEADERS: { status: 431, title: 'Too many headers' },
  HEADER_TOO_LONG: { status: 431, title: 'Header line is too long' },
  COMMAND_TOO_LONG: { status: 400, title: 'Command line is too long' },
  BAD_ESCAPE: { status: 400, title: 'Undefined escape in a header' },
  BAD_CONTENT_LENGTH: { status: 400, title: 'content-length is not valid' },
  INVALID_UTF8: { status: 400, title: 'Text is not valid UTF-8' },
  UNEXPECTED_BODY: { status: 400, title: 'This frame may not have a body' },
  MALFORMED_FRAME: { status: 400, title: 'Frame is malformed' },
  HEARTBEAT_TIMEOUT: { status: 408, title: 'Heart-beats stopped' },
  TOKEN_EXPIRED: { status: 401, title: 'Token expired' },
  SLOW_CONSUMER: { status: 429, title: 'Client does not read fast enough' },
  SERVER_SHUTDOWN: { status: 503, title: 'Server is shutting down' },
  DISCONNECTED_BY_ADMIN: { status: 403, title: 'Disconnected by an administrator' },
  DEAD_LETTER_NOT_FOUND: { status: 404, title: 'No such dead letter' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ChatErrorCode = keyof typeof CHAT_ERROR_CATALOGUE;

export class ChatError extends Error {
  override name = 'ChatError';
  readonly status: number;

  constructor(
    readonly code: ChatErrorCode,
    detail?: string,
    readonly extra?: Readonly<Record<string, unknown>>,
    options?: { cause?: unknown },
  ) {
    super(detail ?? CHAT_ERROR_CATALOGUE[code].title, options);
    this.status = CHAT_ERROR_CATALOGUE[code].status;
  }
}
