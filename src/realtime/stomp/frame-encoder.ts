/**
 * STOMP 1.2 frame encoder. Written for server frames but encodes any of the fifteen commands, so
 * test clients and the load generator can share it.
 * Spec: https://stomp.github.io/stomp-specification-1.2.html
 */
import { escapesHeaders, isStompCommand, mayHaveBody } from './stomp-frame.js';
import type { StompFrame } from './stomp-frame.js';

/** A heart-beat: one bare LF. Shared instance; do not mutate. */
export const HEARTBEAT_EOL: Buffer = Buffer.from('\n', 'latin1');

const ESCAPES: Readonly<Record<string, string>> = { '\\': '\\\\', '\r': '\\r', '\n': '\\n', ':': '\\c' };

/**
 * Serialises a frame: command, headers in the given order, blank line, body, NUL; LF line endings.
 *
 * - Header names and values are escaped (`\\ \r \n :`), except in CONNECT and CONNECTED frames,
 *   which the spec leaves unescaped.
 * - SEND, MESSAGE and ERROR always get a `content-length` equal to the body's length, appended
 *   after the other headers, so a body may contain NUL. Any `content-length` in `frame.headers` is
 *   dropped: because the first occurrence wins, a stale one would truncate the body on the peer.
 * - Strings are written as UTF-8.
 *
 * @throws RangeError for an unknown command, a non-empty body on a command that may not carry one,
 *   an empty header name, a NUL in a header, or, in CONNECT/CONNECTED, a CR or LF in a header or a
 *   `:` in a header name (none of which that frame can represent).
 */
export function encodeFrame(frame: StompFrame): Buffer {
  const { command, body } = frame;
  if (!isStompCommand(command)) throw new RangeError(`encodeFrame: unknown STOMP command ${JSON.stringify(command)}`);
  const withBody = mayHaveBody(command);
  if (!withBody && body.length > 0) throw new RangeError(`encodeFrame: ${command} frames must not have a body`);
  const escaped = escapesHeaders(command);

  let head = `${command}\n${headerLines(frame.headers, escaped)}`;
  if (withBody) head += `content-length:${body.length}\n`;
  head += '\n';

  const headLength = Buffer.byteLength(head, 'utf8');
  const out = Buffer.allocUnsafe(headLength + body.length + 1);
  out.write(head, 0, 'utf8');
  body.copy(out, headLength);
  out[out.length - 1] = 0;
  return out;
}

/**
 * What a MESSAGE frame holds that is the same for every subscription it goes to: the headers after
 * the subscription's own, escaped and ending with `content-length`, and the body. An event delivered
 * to several subscriptions is encoded once (encodeMessagePart), then framed per subscription
 * (encodeMessage).
 */
export interface MessagePart {
  readonly headText: string;
  readonly headBytes: number;
  readonly body: Buffer;
}

/** @throws RangeError as encodeFrame does for a header it cannot represent. */
export function encodeMessagePart(headers: ReadonlyArray<readonly [string, string]>, body: Buffer): MessagePart {
  const headText = `${headerLines(headers, true)}content-length:${body.length}\n\n`;
  return { headText, headBytes: Buffer.byteLength(headText, 'utf8'), body };
}

/** A MESSAGE frame: `own` headers (the subscription's), then the shared part; equal to encodeFrame of the same headers and body. */
export function encodeMessage(own: ReadonlyArray<readonly [string, string]>, part: MessagePart): Buffer {
  const head = `MESSAGE\n${headerLines(own, true)}`;
  const ownBytes = Buffer.byteLength(head, 'utf8');
  const out = Buffer.allocUnsafe(ownBytes + part.headBytes + part.body.length + 1);
  out.write(head, 0, 'utf8');
  out.write(part.headText, ownBytes, 'utf8');
  part.body.copy(out, ownBytes + part.headBytes);
  out[out.length - 1] = 0;
  return out;
}

/** Header lines, each `name:value\n`; a `content-length` is left out (the encoder writes the true one). */
function headerLines(headers: ReadonlyArray<readonly [string, string]>, escaped: boolean): string {
  let lines = '';
  for (const [name, value] of headers) {
    if (name === 'content-length') continue;
    if (name === '') throw new RangeError('encodeFrame: empty header name');
    lines += `${encodeHeaderText(name, escaped, true)}:${encodeHeaderText(value, escaped, false)}\n`;
  }
  return lines;
}

/** Any character a header may need escaped or refused for. */
const SPECIAL = /[\\\r\n:\0]/;

function encodeHeaderText(text: string, escaped: boolean, isName: boolean): string {
  // Most headers (ids, destinations, numbers) need nothing: one scan instead of two.
  if (!SPECIAL.test(text)) return text;
  if (text.includes('\0')) throw new RangeError('encodeFrame: NUL in header');
  if (escaped) return text.replace(/[\\\r\n:]/g, (c) => ESCAPES[c] ?? c);
  if (/[\r\n]/.test(text) || (isName && text.includes(':'))) {
    throw new RangeError('encodeFrame: CONNECT/CONNECTED headers cannot contain CR, LF or, in names, ":"');
  }
  return text;
}
