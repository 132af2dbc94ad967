/**
 * The STOMP 1.2 frame model shared by the decoder, the encoder and the session layer.
 * Spec: https://stomp.github.io/stomp-specification-1.2.html
 */

/** Commands a client sends, in the order the spec lists them. */
export const CLIENT_COMMANDS = [
  'CONNECT',
  'STOMP',
  'SEND',
  'SUBSCRIBE',
  'UNSUBSCRIBE',
  'ACK',
  'NACK',
  'BEGIN',
  'COMMIT',
  'ABORT',
  'DISCONNECT',
] as const;

/** Commands the server sends. */
export const SERVER_COMMANDS = ['CONNECTED', 'MESSAGE', 'RECEIPT', 'ERROR'] as const;

export type ClientCommand = (typeof CLIENT_COMMANDS)[number];
export type ServerCommand = (typeof SERVER_COMMANDS)[number];
export type StompCommand = ClientCommand | ServerCommand;

/**
 * One STOMP frame.
 *
 * `headers` keeps every header line in wire order, repeats included, because STOMP 1.2 §"Repeated
 * Header Entries" says only the first occurrence counts while a proxy may still forward the rest.
 * Read headers with {@link header} only, never by scanning the list: if routing took one copy and
 * authorisation another, a client could repeat `destination` to be authorised for one destination
 * and delivered to another.
 *
 * Header names and values are already unescaped; `body` is raw bytes (no charset applied).
 */
export interface StompFrame {
  readonly command: string;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
}

/**
 * Returns the value of the first header named `name` (case-sensitive, as in the spec), or
 * `undefined` when the frame has none. This is the only sanctioned header lookup.
 */
export function header(frame: Pick<StompFrame, 'headers'>, name: string): string | undefined {
  for (const [key, value] of frame.headers) {
    if (key === name) return value;
  }
  return undefined;
}

const ALL_COMMANDS: ReadonlySet<string> = new Set<string>([...CLIENT_COMMANDS, ...SERVER_COMMANDS]);

/** True for the fifteen commands of STOMP 1.2, client and server. */
export function isStompCommand(command: string): command is StompCommand {
  return ALL_COMMANDS.has(command);
}

/**
 * Whether header names and values of frames with this command use the `\r \n \c \\` escapes.
 * CONNECT and CONNECTED do not, so that STOMP 1.0 peers can still negotiate
 * (spec §"Value Encoding"); a backslash in a CONNECT passcode is therefore literal.
 */
export function escapesHeaders(command: string): boolean {
  return command !== 'CONNECT' && command !== 'CONNECTED';
}

const BODY_COMMANDS: ReadonlySet<string> = new Set<string>(['SEND', 'MESSAGE', 'ERROR']);

/** Only SEND, MESSAGE and ERROR may carry a non-empty body (spec §"Body"). */
export function mayHaveBody(command: string): boolean {
  return BODY_COMMANDS.has(command);
}
