/**
 * The codes that end a STOMP connection (README, "Real time"), and whether to reconnect after each:
 * `reconnect` (with backoff; after TOKEN_EXPIRED with a fresh token) or `terminal` (reconnecting
 * would fail the same way until the client, its credentials or its configuration change). The
 * service also says so in every ERROR frame's `reconnect` header; this copy lets a client decide
 * from a code alone. It is the SDK's own copy, held equal to the service's by a test.
 */
export const CONNECTION_CODES = {
  UNAUTHENTICATED: 'terminal',
  UNSUPPORTED_VERSION: 'terminal',
  NOT_CONNECTED: 'terminal',
  ALREADY_CONNECTED: 'terminal',
  CONNECT_TIMEOUT: 'reconnect',
  TOO_MANY_CONNECTIONS: 'reconnect',
  BUS_UNAVAILABLE: 'reconnect',
  FRAME_TOO_LARGE: 'terminal',
  TOO_MANY_HEADERS: 'terminal',
  HEADER_TOO_LONG: 'terminal',
  COMMAND_TOO_LONG: 'terminal',
  UNKNOWN_COMMAND: 'terminal',
  BAD_ESCAPE: 'terminal',
  BAD_CONTENT_LENGTH: 'terminal',
  INVALID_UTF8: 'terminal',
  UNEXPECTED_BODY: 'terminal',
  MALFORMED_FRAME: 'terminal',
  UNSUPPORTED: 'terminal',
  TOO_MANY_FRAMES: 'reconnect',
  SLOW_CONSUMER: 'reconnect',
  HEARTBEAT_TIMEOUT: 'reconnect',
  IDLE_TIMEOUT: 'reconnect',
  TOKEN_EXPIRED: 'reconnect',
  IDENTITY_CHANGED: 'terminal',
  SERVER_SHUTDOWN: 'reconnect',
  INTERNAL: 'reconnect',
  DISCONNECTED_BY_ADMIN: 'terminal',
  ORIGIN_NOT_ALLOWED: 'terminal',
  TOO_MANY_PENDING_CONNECTIONS: 'reconnect',
  TOO_MANY_PENDING_FROM_ADDRESS: 'reconnect',
} as const satisfies Record<string, 'reconnect' | 'terminal'>;

export type ConnectionCode = keyof typeof CONNECTION_CODES;

/**
 * True when reconnecting would fail the same way. Any other code (a refused frame's, or one newer
 * than this SDK) is not terminal: reconnect with backoff.
 */
export function isTerminal(code: string): boolean {
  return Object.hasOwn(CONNECTION_CODES, code) && CONNECTION_CODES[code as ConnectionCode] === 'terminal';
}
