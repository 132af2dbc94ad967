/**
 * Streaming STOMP 1.2 frame decoder, one instance per connection.
 *
 * Lifecycle: bytes go in through `push` in whatever pieces the transport delivers; each call
 * returns the events those bytes completed. The first error poisons the decoder: it is reported
 * once, the buffered bytes are dropped and every later `push` returns no events, because after a
 * framing error the stream has no trustworthy frame boundary left to resynchronise on. The owner
 * answers with an ERROR frame and closes the connection.
 *
 * Invariants:
 * - The events are a function of the byte stream only, never of how it was cut into chunks; the
 *   limits are checked at fixed byte positions (see `scanLine`) so that even the choice between
 *   two errors does not depend on chunking.
 * - At most one partial frame is buffered, and never more than `maxFrameSize` bytes of it: a
 *   limit is refused at the first byte that proves it broken, not when a NUL finally arrives.
 * - `push` never throws.
 *
 * Spec: https://stomp.github.io/stomp-specification-1.2.html
 */
import type { ChatErrorCode } from '../../chat/chat-errors.js';
import { CLIENT_COMMANDS, escapesHeaders, header, mayHaveBody } from './stomp-frame.js';
import type { StompFrame } from './stomp-frame.js';

/** Stable error codes from the service's one catalogue; they reach clients in ERROR frames. */
export const STOMP_DECODE_ERROR_CODES = [
  'FRAME_TOO_LARGE',
  'TOO_MANY_HEADERS',
  'HEADER_TOO_LONG',
  'COMMAND_TOO_LONG',
  'UNKNOWN_COMMAND',
  'BAD_ESCAPE',
  'BAD_CONTENT_LENGTH',
  'INVALID_UTF8',
  'UNEXPECTED_BODY',
  'MALFORMED_FRAME',
  'INTERNAL',
] as const satisfies readonly ChatErrorCode[];

export type StompDecodeErrorCode = (typeof STOMP_DECODE_ERROR_CODES)[number];

/** A complete frame. Its body is a private copy: it stays valid after later pushes. */
export interface StompFrameEvent {
  readonly kind: 'frame';
  readonly frame: StompFrame;
}

/** One EOL (`\n` or `\r\n`) between frames: a heart-beat, proof the peer is alive. */
export interface StompHeartbeatEvent {
  readonly kind: 'heartbeat';
}

/**
 * The stream is broken; always the last event the decoder produces. `message` is fit for the
 * `message` header of an ERROR frame: it never quotes the client's bytes.
 * `INTERNAL` means a decoder bug was contained instead of thrown.
 */
export interface StompDecodeError {
  readonly kind: 'error';
  readonly code: StompDecodeErrorCode;
  readonly message: string;
}

export type StompDecoderEvent = StompFrameEvent | StompHeartbeatEvent | StompDecodeError;

/**
 * Limits, all in octets except `maxHeaders`. Each is inclusive: a frame exactly at a limit is
 * accepted, one octet (or one header) more is refused.
 */
export interface StompFrameDecoderLimits {
  /** Whole frame from the command's first octet through the NUL; heart-beat EOLs not counted. */
  readonly maxFrameSize: number;
  /** Header lines per frame, repeats included. */
  readonly maxHeaders: number;
  /** One header line (`name:value`, escapes as sent), excluding its EOL. */
  readonly maxHeaderLineLength: number;
  /** The command line excluding its EOL. */
  readonly maxCommandLineLength: number;
}

export interface StompFrameDecoderOptions extends Partial<StompFrameDecoderLimits> {
  /** Commands accepted; anything else is UNKNOWN_COMMAND. Default: {@link CLIENT_COMMANDS}. */
  readonly commands?: ReadonlyArray<string>;
}

export const DEFAULT_DECODER_LIMITS: StompFrameDecoderLimits = Object.freeze({
  maxFrameSize: 64 * 1024,
  maxHeaders: 64,
  maxHeaderLineLength: 8 * 1024,
  maxCommandLineLength: 64,
});

const LF = 0x0a;
const CR = 0x0d;
const NUL = 0x00;
const COLON = 0x3a;

const HEARTBEAT: StompHeartbeatEvent = Object.freeze({ kind: 'heartbeat' });

// ignoreBOM: a value may legitimately start with U+FEFF; the default would silently strip it.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

type Phase = 'command' | 'headers' | 'body';

interface LineBounds {
  /** End of the line's content: before its `\r\n` or `\n`. */
  readonly contentEnd: number;
  /** First octet after the line's `\n`. */
  readonly next: number;
}

/**
 * Decodes the frames a STOMP client sends.
 *
 * Contract: `push` accepts bytes split anywhere (inside a UTF-8 sequence, a `\r\n`, an escape or
 * a body) and returns, in stream order, the frames and heart-beats they complete, followed by at
 * most one error; it never throws. After an error every call returns `[]`.
 * String chunks are encoded as UTF-8, so a string must not split a surrogate pair.
 *
 * Header values are unescaped except in CONNECT and CONNECTED frames. With `content-length` the
 * body is exactly that many octets and must be followed by NUL; without it the body ends at the
 * first NUL. A raw CR or NUL inside a header line is MALFORMED_FRAME; a raw `:` inside a value is
 * accepted as part of the value, because CONNECT values cannot escape it and common clients do
 * not escape it elsewhere either.
 */
export class StompFrameDecoder {
  readonly #limits: StompFrameDecoderLimits;
  readonly #commands: ReadonlySet<string>;

  // Bytes carried over between pushes: the tail of an incomplete frame or heart-beat.
  #carry: Buffer | undefined;
  #carryLength = 0;
  #poisoned = false;

  // Parse state; offsets are relative to the first carried byte and rebased after each push.
  #phase: Phase = 'command';
  #frameStart = 0;
  #lineStart = 0;
  /** Where the search for the current line's LF or the body's NUL resumes, so a slow sender's
   *  partial frame is not searched again from its start on every push. */
  #scanFrom = 0;
  #command = '';
  #headers: Array<readonly [string, string]> = [];
  #bodyStart = 0;
  #contentLength: number | undefined;

  /** @throws RangeError when a limit is not a positive safe integer (`maxHeaders` may be 0). */
  constructor(options: StompFrameDecoderOptions = {}) {
    const limits: StompFrameDecoderLimits = {
      maxFrameSize: options.maxFrameSize ?? DEFAULT_DECODER_LIMITS.maxFrameSize,
      maxHeaders: options.maxHeaders ?? DEFAULT_DECODER_LIMITS.maxHeaders,
      maxHeaderLineLength: options.maxHeaderLineLength ?? DEFAULT_DECODER_LIMITS.maxHeaderLineLength,
      maxCommandLineLength: options.maxCommandLineLength ?? DEFAULT_DECODER_LIMITS.maxCommandLineLength,
    };
    for (const [name, value] of Object.entries(limits)) {
      const min = name === 'maxHeaders' ? 0 : 1;
      if (!Number.isSafeInteger(value) || value < min) {
        throw new RangeError(`StompFrameDecoder: ${name} must be an integer >= ${min}, got ${String(value)}`);
      }
    }
    this.#limits = Object.freeze(limits);
    this.#commands = new Set(options.commands ?? CLIENT_COMMANDS);
  }

  /** The limits in force, defaults filled in. */
  get limits(): StompFrameDecoderLimits {
    return this.#limits;
  }

  /** True once an error has been reported; the decoder then ignores all input. */
  get poisoned(): boolean {
    return this.#poisoned;
  }

  /** Octets held for an incomplete frame; never more than `maxFrameSize`. */
  get bufferedBytes(): number {
    return this.#carryLength;
  }

  /**
   * Feeds the next bytes of the stream. Returns the events they complete, in order; an error, if
   * any, is the last event and poisons the decoder. Never throws.
   */
  push(chunk: Buffer | string): StompDecoderEvent[] {
    if (this.#poisoned) return [];
    const events: StompDecoderEvent[] = [];
    try {
      const incoming = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
      if (incoming.length === 0) return events;
      const fromCarry = this.#carryLength > 0;
      const data = fromCarry ? this.#appendToCarry(incoming) : incoming;
      this.#parse(data, events);
      if (this.#poisoned) this.#dropCarry();
      else this.#keepTail(data, fromCarry);
    } catch {
      // A throw from a socket 'data' handler would take the whole process down with every other
      // connection on it; a decoder bug must cost one connection at most.
      this.#fail(events, 'INTERNAL', 'internal decoder error');
      this.#dropCarry();
    }
    return events;
  }

  #parse(data: Buffer, events: StompDecoderEvent[]): void {
    let progressed = true;
    while (progressed && !this.#poisoned) {
      switch (this.#phase) {
        case 'command':
          progressed = this.#stepCommand(data, events);
          break;
        case 'headers':
          progressed = this.#stepHeader(data, events);
          break;
        case 'body':
          progressed = this.#stepBody(data, events);
          break;
      }
    }
  }

  #stepCommand(data: Buffer, events: StompDecoderEvent[]): boolean {
    const start = this.#lineStart;
    if (start >= data.length) return false;
    const first = data[start];
    if (first === LF || first === CR) {
      if (first === CR) {
        if (start + 1 >= data.length) return false;
        if (data[start + 1] !== LF) return this.#fail(events, 'MALFORMED_FRAME', 'CR not followed by LF');
      }
      events.push(HEARTBEAT);
      this.#lineStart = this.#scanFrom = start + (first === CR ? 2 : 1);
      return true;
    }

    this.#frameStart = start;
    const line = this.#scanLine(data, events, this.#limits.maxCommandLineLength, 'COMMAND_TOO_LONG');
    if (line === undefined) return false;
    // latin1 maps each octet to one char, so a non-ASCII command can never match a known one.
    const command = data.toString('latin1', start, line.contentEnd);
    if (!this.#commands.has(command)) return this.#fail(events, 'UNKNOWN_COMMAND', 'unknown command');
    this.#command = command;
    this.#headers = [];
    this.#phase = 'headers';
    this.#lineStart = this.#scanFrom = line.next;
    return true;
  }

  #stepHeader(data: Buffer, events: StompDecoderEvent[]): boolean {
    const start = this.#lineStart;
    const line = this.#scanLine(data, events, this.#limits.maxHeaderLineLength, 'HEADER_TOO_LONG');
    if (line === undefined) return false;
    if (line.contentEnd === start) return this.#beginBody(events, line.next);
    if (this.#headers.length >= this.#limits.maxHeaders) {
      return this.#fail(events, 'TOO_MANY_HEADERS', `more than ${this.#limits.maxHeaders} headers`);
    }

    const end = line.contentEnd;
    let colon = -1;
    let ascii = true;
    // One pass over the line instead of several indexOf calls: lines are short, and each Buffer
    // view allocated per header showed up as the top cost when profiling.
    for (let i = start; i < end; i++) {
      const octet = data[i]!;
      // A stray CR or NUL means the peer's framing is broken; letting it into a value would also
      // carry control bytes into logs and the database.
      if (octet === CR || octet === NUL) return this.#fail(events, 'MALFORMED_FRAME', 'control character in header line');
      if (octet === COLON && colon < 0) colon = i;
      if (octet >= 0x80) ascii = false;
    }
    if (colon < 0) return this.#fail(events, 'MALFORMED_FRAME', 'header line without colon');
    if (colon === start) return this.#fail(events, 'MALFORMED_FRAME', 'empty header name');

    let name: string;
    let value: string;
    if (ascii) {
      name = data.toString('latin1', start, colon);
      value = data.toString('latin1', colon + 1, end);
    } else {
      try {
        name = utf8.decode(data.subarray(start, colon));
        value = utf8.decode(data.subarray(colon + 1, end));
      } catch {
        return this.#fail(events, 'INVALID_UTF8', 'header is not valid UTF-8');
      }
    }
    if (escapesHeaders(this.#command)) {
      const unescapedName = unescapeHeader(name);
      const unescapedValue = unescapeHeader(value);
      if (unescapedName === undefined || unescapedValue === undefined) {
        return this.#fail(events, 'BAD_ESCAPE', 'undefined escape sequence in header');
      }
      name = unescapedName;
      value = unescapedValue;
    }
    this.#headers.push([name, value]);
    this.#lineStart = this.#scanFrom = line.next;
    return true;
  }

  #beginBody(events: StompDecoderEvent[], bodyStart: number): boolean {
    this.#bodyStart = this.#scanFrom = bodyStart;
    this.#contentLength = undefined;
    const declared = header({ headers: this.#headers }, 'content-length');
    if (declared !== undefined) {
      if (!/^[0-9]+$/.test(declared)) {
        return this.#fail(events, 'BAD_CONTENT_LENGTH', 'content-length is not a non-negative integer');
      }
      // Huge digit strings become Infinity or lose precision; either way they exceed the limit.
      const length = Number(declared);
      if (bodyStart - this.#frameStart + length + 1 > this.#limits.maxFrameSize) {
        return this.#fail(events, 'FRAME_TOO_LARGE', this.#frameTooLargeMessage());
      }
      this.#contentLength = length;
    }
    this.#phase = 'body';
    return true;
  }

  #stepBody(data: Buffer, events: StompDecoderEvent[]): boolean {
    if (this.#contentLength !== undefined) {
      const nulAt = this.#bodyStart + this.#contentLength;
      if (nulAt >= data.length) return false;
      if (data[nulAt] !== NUL) return this.#fail(events, 'MALFORMED_FRAME', 'body not terminated by NUL');
      return this.#completeFrame(data, events, nulAt);
    }
    // The NUL of a frame exactly at the limit sits at lastAllowed; no NUL by then means too large.
    const lastAllowed = this.#frameStart + this.#limits.maxFrameSize - 1;
    const searchEnd = Math.min(data.length, lastAllowed + 1);
    if (this.#scanFrom < searchEnd) {
      const found = data.indexOf(NUL, this.#scanFrom);
      if (found >= 0 && found < searchEnd) return this.#completeFrame(data, events, found);
      this.#scanFrom = searchEnd;
    }
    if (data.length > lastAllowed) return this.#fail(events, 'FRAME_TOO_LARGE', this.#frameTooLargeMessage());
    return false;
  }

  #completeFrame(data: Buffer, events: StompDecoderEvent[], nulAt: number): boolean {
    if (nulAt > this.#bodyStart && !mayHaveBody(this.#command)) {
      return this.#fail(events, 'UNEXPECTED_BODY', `${this.#command} frames must not have a body`);
    }
    // Copy: `data` is either the caller's chunk or our reused carry buffer.
    const body = Buffer.allocUnsafe(nulAt - this.#bodyStart);
    data.copy(body, 0, this.#bodyStart, nulAt);
    events.push({ kind: 'frame', frame: { command: this.#command, headers: this.#headers, body } });
    this.#headers = [];
    this.#phase = 'command';
    this.#lineStart = this.#scanFrom = nulAt + 1;
    return true;
  }

  /**
   * Finds the end of the line starting at #lineStart, or returns undefined when it needs more
   * bytes or has failed (then #poisoned is set).
   *
   * Each limit is decided by the byte at one fixed position, so the verdict never depends on how
   * the stream was chunked:
   * - frame: the byte at frameStart + maxFrameSize - 1 fails any frame still in its command or
   *   header lines, since such a frame still needs at least a NUL;
   * - line: the byte at lineStart + maxLength must be LF, or CR followed by LF.
   * Bytes beyond the earlier of these positions never influence the result.
   */
  #scanLine(
    data: Buffer,
    events: StompDecoderEvent[],
    maxLength: number,
    tooLong: 'HEADER_TOO_LONG' | 'COMMAND_TOO_LONG',
  ): LineBounds | undefined {
    const start = this.#lineStart;
    const frameLimitAt = this.#frameStart + this.#limits.maxFrameSize - 1;
    const lineLimitAt = start + maxLength;
    const limitAt = Math.min(frameLimitAt, lineLimitAt);

    const searchEnd = Math.min(data.length, limitAt);
    if (this.#scanFrom < searchEnd) {
      // Unbounded search, bounded use: a hit past searchEnd is never acted on, and the bytes it
      // passed are not searched again because the limit is decided in this same call.
      const found = data.indexOf(LF, this.#scanFrom);
      if (found >= 0 && found < searchEnd) return lineBounds(data, start, found);
      this.#scanFrom = searchEnd;
    }
    if (data.length <= limitAt) return undefined;

    if (frameLimitAt <= lineLimitAt) {
      this.#fail(events, 'FRAME_TOO_LARGE', this.#frameTooLargeMessage());
      return undefined;
    }
    const atLimit = data[lineLimitAt];
    if (atLimit === LF) return lineBounds(data, start, lineLimitAt);
    if (atLimit === CR) {
      const afterCr = lineLimitAt + 1;
      if (afterCr >= data.length) return undefined;
      if (afterCr === frameLimitAt) {
        this.#fail(events, 'FRAME_TOO_LARGE', this.#frameTooLargeMessage());
        return undefined;
      }
      if (data[afterCr] === LF) return lineBounds(data, start, afterCr);
    }
    const what = tooLong === 'HEADER_TOO_LONG' ? 'header line' : 'command line';
    this.#fail(events, tooLong, `${what} longer than ${maxLength} bytes`);
    return undefined;
  }

  #frameTooLargeMessage(): string {
    return `frame larger than ${this.#limits.maxFrameSize} bytes`;
  }

  /** Always returns false so step functions can `return this.#fail(...)` to stop the loop. */
  #fail(events: StompDecoderEvent[], code: StompDecodeErrorCode, message: string): false {
    events.push({ kind: 'error', code, message });
    this.#poisoned = true;
    this.#headers = [];
    return false;
  }

  /** Appends to the carried bytes, growing geometrically so many small chunks cost linear time. */
  #appendToCarry(incoming: Buffer): Buffer {
    const needed = this.#carryLength + incoming.length;
    let carry = this.#carry;
    if (carry === undefined || carry.length < needed) {
      const grown = Buffer.allocUnsafe(Math.max(needed, (carry?.length ?? 0) * 2));
      if (carry !== undefined) carry.copy(grown, 0, 0, this.#carryLength);
      carry = this.#carry = grown;
    }
    incoming.copy(carry, this.#carryLength);
    this.#carryLength = needed;
    return carry.subarray(0, needed);
  }

  /** Keeps the unconsumed tail for the next push and rebases every offset onto it. */
  #keepTail(data: Buffer, fromCarry: boolean): void {
    const consumed = this.#phase === 'command' ? this.#lineStart : this.#frameStart;
    const tail = data.length - consumed;
    if (tail === 0) {
      // Idle connections are the common case at 50k sockets: hold no buffer for them.
      this.#dropCarry();
    } else if (fromCarry) {
      if (consumed > 0) data.copy(data, 0, consumed);
      this.#carryLength = tail;
    } else {
      // The caller's chunk may be reused or be large; keep a copy of just the tail.
      this.#carry = Buffer.allocUnsafe(tail);
      data.copy(this.#carry, 0, consumed);
      this.#carryLength = tail;
    }
    this.#frameStart -= consumed;
    this.#lineStart -= consumed;
    this.#scanFrom -= consumed;
    this.#bodyStart -= consumed;
  }

  #dropCarry(): void {
    this.#carry = undefined;
    this.#carryLength = 0;
  }
}

function lineBounds(data: Buffer, start: number, lf: number): LineBounds {
  const contentEnd = lf > start && data[lf - 1] === CR ? lf - 1 : lf;
  return { contentEnd, next: lf + 1 };
}

/** Undoes STOMP 1.2 value escaping; `undefined` for an undefined escape, which the spec makes fatal. */
function unescapeHeader(text: string): string | undefined {
  let backslash = text.indexOf('\\');
  if (backslash < 0) return text;
  let out = '';
  let from = 0;
  while (backslash >= 0) {
    out += text.slice(from, backslash);
    switch (text[backslash + 1]) {
      case 'r':
        out += '\r';
        break;
      case 'n':
        out += '\n';
        break;
      case 'c':
        out += ':';
        break;
      case '\\':
        out += '\\';
        break;
      default:
        return undefined;
    }
    from = backslash + 2;
    backslash = text.indexOf('\\', from);
  }
  return out + text.slice(from);
}
