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

  let head = `${command}\n`;
  for (const [name, value] of frame.headers) {
    if (name === 'content-length') continue;
    if (name === '') throw new RangeError('encodeFrame: empty header name');
    head += `${encodeHeaderText(name, escaped, true)}:${encodeHeaderText(value, escaped, false)}\n`;
  }
  if (withBody) head += `content-length:${body.length}\n`;
  head += '\n';

  const headLength = Buffer.byteLength(head, 'utf8');
  const out = Buffer.allocUnsafe(headLength + body.length + 1);
  out.write(head, 0, 'utf8');
  body.copy(out, headLength);
  out[out.length - 1] = 0;
  return out;
}

function encodeHeaderText(text: string, escaped: boolean, isName: boolean): string {
  if (text.includes('\0')) throw new RangeError('encodeFrame: NUL in header');
  if (escaped) return text.replace(/[\\\r\n:]/g, (c) => ESCAPES[c] ?? c);
  if (/[\r\n]/.test(text) || (isName && text.includes(':'))) {
    throw new RangeError('encodeFrame: CONNECT/CONNECTED headers cannot contain CR, LF or, in names, ":"');
  }
  return text;
}
