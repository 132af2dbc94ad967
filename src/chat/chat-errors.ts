/**
 * The one error type of the service and its catalogue. Codes are public API (they appear in
 * problem+json bodies and STOMP error messages): never renamed, never reused. Transports map
 * `status` to HTTP and to STOMP ERROR frames or /user/queue/error messages.
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
  ORIGIN_NOT_ALLOWED: { status: 403, title: 'Origin not allowed' },
  DESTINATION_FORBIDDEN: { status: 403, title: 'Destination not allowed' },
  SESSION_NOT_FOUND: { status: 404, title: 'Session not found' },
  PROFILE_NOT_FOUND: { status: 404, title: 'Profile not found' },
  ROUTE_NOT_FOUND: { status: 404, title: 'No such route' },
  UNKNOWN_DESTINATION: { status: 404, title: 'No such destination' },
  METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed' },
  IDEMPOTENCY_KEY_REUSED: { status: 409, title: 'clientMessageId was already used for a different message' },
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

export const isChatError = (err: unknown): err is ChatError => err instanceof ChatError;
