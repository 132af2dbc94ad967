import { describe, it, expect } from 'vitest';
import { DEFAULT_DECODER_LIMITS, StompFrameDecoder } from './frame-decoder.js';
import type { StompDecoderEvent, StompFrameDecoderOptions } from './frame-decoder.js';
import { CLIENT_COMMANDS, SERVER_COMMANDS, header } from './stomp-frame.js';
import type { StompFrame } from './stomp-frame.js';

type Chunk = string | Buffer;

function decode(chunks: Chunk | Chunk[], options?: StompFrameDecoderOptions): StompDecoderEvent[] {
  const decoder = new StompFrameDecoder(options);
  return (Array.isArray(chunks) ? chunks : [chunks]).flatMap((c) => decoder.push(c));
}

function bytewise(input: Chunk): Buffer[] {
  const bytes = Buffer.from(input);
  return Array.from({ length: bytes.length }, (_, i) => bytes.subarray(i, i + 1));
}

function singleFrame(events: StompDecoderEvent[]): StompFrame {
  expect(events).toHaveLength(1);
  const [event] = events;
  if (event?.kind !== 'frame') throw new Error(`expected a frame, got ${JSON.stringify(event)}`);
  return event.frame;
}

function errorCode(events: StompDecoderEvent[]): string | undefined {
  const last = events.at(-1);
  return last?.kind === 'error' ? last.code : undefined;
}

const kinds = (events: StompDecoderEvent[]) => events.map((e) => (e.kind === 'error' ? `error:${e.code}` : e.kind));

/** A SEND frame of exactly `size` octets, NUL included. */
function sendOfSize(size: number, withContentLength: boolean): Buffer {
  if (!withContentLength) {
    const head = 'SEND\ndestination:/q\n\n';
    return Buffer.from(`${head}${'x'.repeat(size - head.length - 1)}\0`);
  }
  for (let digits = 1; digits < 10; digits++) {
    const bodyLength = size - 'SEND\ncontent-length:\n\n'.length - digits - 1;
    if (String(bodyLength).length === digits) {
      return Buffer.from(`SEND\ncontent-length:${bodyLength}\n\n${'x'.repeat(bodyLength)}\0`);
    }
  }
  throw new Error('unreachable');
}

/** A SEND frame whose single header line is exactly `length` octets, EOL excluded. */
function sendWithHeaderLine(length: number, eol = '\n'): string {
  return `SEND${eol}h:${'v'.repeat(length - 2)}${eol}${eol}\0`;
}

describe('StompFrameDecoder: framing', () => {
  it('decodes command, headers in order and body up to the NUL', () => {
    const f = singleFrame(decode('SEND\ndestination:/app/chat.send\nreceipt:r1\n\nhello\0'));
    expect(f.command).toBe('SEND');
    expect(f.headers).toEqual([
      ['destination', '/app/chat.send'],
      ['receipt', 'r1'],
    ]);
    expect(f.body.toString()).toBe('hello');
  });

  it('accepts CRLF line endings and keeps CR out of values', () => {
    const f = singleFrame(decode('SEND\r\ndestination:/q\r\n\r\nbody\0'));
    expect(f.headers).toEqual([['destination', '/q']]);
    expect(f.body.toString()).toBe('body');
  });

  it('accepts a frame with no headers and no body', () => {
    expect(singleFrame(decode('DISCONNECT\n\n\0'))).toEqual({ command: 'DISCONNECT', headers: [], body: Buffer.alloc(0) });
  });

  it('reports each LF or CRLF between frames as a heart-beat', () => {
    const events = decode('\n\r\nSEND\n\n\0\n\r\n\nDISCONNECT\n\n\0\r\n');
    expect(kinds(events)).toEqual(['heartbeat', 'heartbeat', 'frame', 'heartbeat', 'heartbeat', 'heartbeat', 'frame', 'heartbeat']);
  });

  it('waits for the LF of a CRLF heart-beat split across chunks', () => {
    const decoder = new StompFrameDecoder();
    expect(decoder.push('\r')).toEqual([]);
    expect(kinds(decoder.push('\n'))).toEqual(['heartbeat']);
  });

  it('refuses a CR between frames that is not followed by LF', () => {
    expect(errorCode(decode('\rSEND\n\n\0'))).toBe('MALFORMED_FRAME');
  });

  it('decodes many frames from one chunk and one frame from many chunks', () => {
    const wire = 'SEND\ndestination:/a\n\n1\0SEND\ndestination:/b\n\n2\0';
    const whole = decode(wire);
    expect(whole.map((e) => (e.kind === 'frame' ? e.frame.body.toString() : e.kind))).toEqual(['1', '2']);
    expect(decode(bytewise(wire))).toEqual(whole);
  });

  it('decodes a multi-byte UTF-8 header split between chunks', () => {
    const wire = Buffer.from('SEND\nnote:h\u00e9llo \u{1F600}\n\n\0');
    const cut = wire.indexOf(0xf0) + 2;
    const f = singleFrame(decode([wire.subarray(0, cut), wire.subarray(cut)]));
    expect(header(f, 'note')).toBe('h\u00e9llo \u{1F600}');
  });

  it('accepts string chunks as UTF-8', () => {
    const f = singleFrame(decode(['SEND\nnote:\u00e9', '\n\n\u20ac\0']));
    expect(header(f, 'note')).toBe('\u00e9');
    expect(f.body).toEqual(Buffer.from('\u20ac'));
  });

  it('returns no events for an empty chunk', () => {
    expect(new StompFrameDecoder().push(Buffer.alloc(0))).toEqual([]);
  });

  it('gives frames a body that later pushes and caller reuse cannot change', () => {
    const decoder = new StompFrameDecoder();
    const chunk = Buffer.from('SEND\n\nabc\0SEND\n\nde');
    const [event] = decoder.push(chunk);
    chunk.fill(0x21);
    decoder.push('f\0');
    expect(event?.kind === 'frame' && event.frame.body.toString()).toBe('abc');
  });

  it('holds no buffer between complete frames', () => {
    const decoder = new StompFrameDecoder();
    decoder.push('SEND\n\nabc');
    expect(decoder.bufferedBytes).toBe(9);
    decoder.push('\0\n');
    expect(decoder.bufferedBytes).toBe(0);
  });
});

describe('StompFrameDecoder: headers', () => {
  it('keeps repeated headers in order and header() returns the first value', () => {
    const f = singleFrame(decode('SEND\ndestination:/app/chat.send\ndestination:/topic/session.x\n\n\0'));
    expect(f.headers).toHaveLength(2);
    expect(header(f, 'destination')).toBe('/app/chat.send');
  });

  it('frames the body by the first content-length when it repeats', () => {
    const f = singleFrame(decode('SEND\ncontent-length:3\ncontent-length:1\n\na\0b\0'));
    expect(f.body).toEqual(Buffer.from('a\0b'));
  });

  it('unescapes \\r \\n \\c and \\\\ in header names and values', () => {
    const f = singleFrame(decode('SEND\na\\cb\\\\:line1\\nline2\\r\\c\\\\n\n\n\0'));
    expect(f.headers).toEqual([['a:b\\', 'line1\nline2\r:\\n']]);
  });

  it('refuses an undefined escape with BAD_ESCAPE', () => {
    expect(errorCode(decode('SEND\nnote:tab\\there\n\n\0'))).toBe('BAD_ESCAPE');
    expect(errorCode(decode('SEND\nnote\\x:v\n\n\0'))).toBe('BAD_ESCAPE');
  });

  it('refuses a backslash that ends a header value with BAD_ESCAPE', () => {
    expect(errorCode(decode('SEND\nnote:trailing\\\n\n\0'))).toBe('BAD_ESCAPE');
  });

  it('does not unescape CONNECT headers, so backslashes in credentials stay literal', () => {
    const f = singleFrame(decode('CONNECT\naccept-version:1.2\nlogin:dom\\user\npasscode:p\\ta\\c\\n\n\n\0'));
    expect(header(f, 'login')).toBe('dom\\user');
    expect(header(f, 'passcode')).toBe('p\\ta\\c\\n');
  });

  it('unescapes headers of the STOMP command, which unlike CONNECT is escaped', () => {
    expect(header(singleFrame(decode('STOMP\nlogin:a\\cb\n\n\0')), 'login')).toBe('a:b');
    expect(errorCode(decode('STOMP\nlogin:a\\tb\n\n\0'))).toBe('BAD_ESCAPE');
  });

  it('keeps raw colons after the first as part of the value', () => {
    const f = singleFrame(decode('CONNECT\nAuthorization:Bearer a:b:c\nhost:chat:8080\n\n\0'));
    expect(header(f, 'Authorization')).toBe('Bearer a:b:c');
    expect(header(f, 'host')).toBe('chat:8080');
  });

  it('keeps whitespace around names and values', () => {
    expect(singleFrame(decode('SEND\n name : value \n\n\0')).headers).toEqual([[' name ', ' value ']]);
  });

  it('accepts an empty value', () => {
    expect(singleFrame(decode('SEND\nreceipt:\n\n\0')).headers).toEqual([['receipt', '']]);
  });

  it('refuses a header line without a colon', () => {
    expect(errorCode(decode('SEND\ndestination\n\n\0'))).toBe('MALFORMED_FRAME');
  });

  it('refuses an empty header name', () => {
    expect(errorCode(decode('SEND\n:value\n\n\0'))).toBe('MALFORMED_FRAME');
  });

  it('refuses a bare CR or a NUL inside a header line', () => {
    expect(errorCode(decode('SEND\nnote:a\rb\n\n\0'))).toBe('MALFORMED_FRAME');
    expect(errorCode(decode('SEND\nnote:a\0b\n\n\0'))).toBe('MALFORMED_FRAME');
    expect(errorCode(decode('SEND\nnote:a\r\r\n\n\0'))).toBe('MALFORMED_FRAME');
  });

  it('refuses invalid UTF-8 in a header name or value', () => {
    expect(errorCode(decode(Buffer.from('SEND\nnote:\xff\n\n\0', 'latin1')))).toBe('INVALID_UTF8');
    expect(errorCode(decode(Buffer.from('SEND\nn\xc3:v\n\n\0', 'latin1')))).toBe('INVALID_UTF8');
    // UTF-8-encoded surrogate half and overlong '/': both forbidden by the UTF-8 spec.
    expect(errorCode(decode(Buffer.from('SEND\nnote:\xed\xa0\x80\n\n\0', 'latin1')))).toBe('INVALID_UTF8');
    expect(errorCode(decode(Buffer.from('SEND\nnote:\xc0\xaf\n\n\0', 'latin1')))).toBe('INVALID_UTF8');
  });

  it('keeps a leading byte order mark in a value', () => {
    expect(header(singleFrame(decode('SEND\nnote:\ufeffx\n\n\0')), 'note')).toBe('\ufeffx');
  });
});

describe('StompFrameDecoder: commands', () => {
  it('accepts every client command by default', () => {
    for (const command of CLIENT_COMMANDS) {
      const body = command === 'SEND' ? 'x' : '';
      expect(singleFrame(decode(`${command}\n\n${body}\0`)).command).toBe(command);
    }
  });

  it('refuses server commands and unknown or lower-case commands with UNKNOWN_COMMAND', () => {
    for (const command of ['MESSAGE', 'CONNECTED', 'send', 'PUBLISH', 'SEND ', '\u00c9']) {
      expect(errorCode(decode(`${command}\n\n\0`))).toBe('UNKNOWN_COMMAND');
    }
  });

  it('accepts server commands when configured to decode a server stream', () => {
    const f = singleFrame(decode('MESSAGE\nsubscription:s\n\nhi\0', { commands: SERVER_COMMANDS }));
    expect(f.command).toBe('MESSAGE');
    expect(errorCode(decode('SEND\n\n\0', { commands: SERVER_COMMANDS }))).toBe('UNKNOWN_COMMAND');
  });

  it('refuses a non-empty body on a command that may not have one', () => {
    expect(errorCode(decode('SUBSCRIBE\nid:1\ndestination:/q\n\nx\0'))).toBe('UNEXPECTED_BODY');
    expect(errorCode(decode('DISCONNECT\ncontent-length:1\n\nx\0'))).toBe('UNEXPECTED_BODY');
  });

  it('accepts an explicit zero content-length on a command without a body', () => {
    expect(singleFrame(decode('SUBSCRIBE\nid:1\ncontent-length:0\n\n\0')).body.length).toBe(0);
  });
});

describe('StompFrameDecoder: content-length', () => {
  it('reads exactly content-length octets, NULs included', () => {
    const body = Buffer.from([0, 1, 0, 255, 10, 13]);
    const wire = Buffer.concat([Buffer.from('SEND\ncontent-length:6\n\n'), body, Buffer.from('\0')]);
    expect(singleFrame(decode(wire)).body).toEqual(body);
    expect(singleFrame(decode(bytewise(wire))).body).toEqual(body);
  });

  it('accepts leading zeros as a decimal integer', () => {
    expect(singleFrame(decode('SEND\ncontent-length:003\n\nabc\0')).body.toString()).toBe('abc');
  });

  it('refuses a content-length that is not a non-negative decimal integer', () => {
    for (const value of ['-1', '1.5', ' 3', '3 ', '', 'abc', '0x3', '+3', '1e1', '\u0663']) {
      expect(errorCode(decode(`SEND\ncontent-length:${value}\n\nabc\0`)), value).toBe('BAD_CONTENT_LENGTH');
    }
  });

  it('refuses a frame whose content-length body is not followed by NUL', () => {
    expect(errorCode(decode('SEND\ncontent-length:2\n\nabc\0'))).toBe('MALFORMED_FRAME');
  });

  it('waits for the whole declared body before deciding', () => {
    const decoder = new StompFrameDecoder();
    expect(decoder.push('SEND\ncontent-length:5\n\nab\0')).toEqual([]);
    expect(singleFrame(decoder.push('cd\0')).body).toEqual(Buffer.from('ab\0cd'));
  });

  it('ends the body at the first NUL when there is no content-length', () => {
    const events = decode('SEND\n\nab\0cd\0\n');
    expect(singleFrame(events.slice(0, 1)).body.toString()).toBe('ab');
    expect(errorCode(events)).toBe('UNKNOWN_COMMAND');
  });
});

describe('StompFrameDecoder: limits', () => {
  const { maxFrameSize, maxHeaders, maxHeaderLineLength, maxCommandLineLength } = DEFAULT_DECODER_LIMITS;

  it('has the documented defaults', () => {
    expect(DEFAULT_DECODER_LIMITS).toEqual({ maxFrameSize: 65536, maxHeaders: 64, maxHeaderLineLength: 8192, maxCommandLineLength: 64 });
  });

  for (const withContentLength of [false, true]) {
    const label = withContentLength ? 'with content-length' : 'without content-length';

    it(`accepts a frame of exactly maxFrameSize octets ${label}`, () => {
      const wire = sendOfSize(maxFrameSize, withContentLength);
      expect(wire.length).toBe(maxFrameSize);
      expect(singleFrame(decode(wire)).command).toBe('SEND');
    });

    it(`refuses a frame of maxFrameSize + 1 octets ${label}`, () => {
      const wire = sendOfSize(maxFrameSize + 1, withContentLength);
      expect(wire.length).toBe(maxFrameSize + 1);
      expect(kinds(decode(wire))).toEqual(['error:FRAME_TOO_LARGE']);
    });
  }

  it('applies a configured maxFrameSize exactly', () => {
    expect(singleFrame(decode(sendOfSize(100, false), { maxFrameSize: 100 })).command).toBe('SEND');
    expect(errorCode(decode(sendOfSize(101, false), { maxFrameSize: 100 }))).toBe('FRAME_TOO_LARGE');
    expect(errorCode(decode(sendOfSize(101, true), { maxFrameSize: 100 }))).toBe('FRAME_TOO_LARGE');
  });

  it('refuses an oversized frame as soon as maxFrameSize octets arrive without a NUL', () => {
    const decoder = new StompFrameDecoder();
    const head = 'SEND\n\n';
    expect(decoder.push(head)).toEqual([]);
    let pushed = head.length;
    const piece = Buffer.alloc(1000, 'x');
    while (pushed + piece.length < maxFrameSize) {
      expect(decoder.push(piece)).toEqual([]);
      pushed += piece.length;
      expect(decoder.bufferedBytes).toBe(pushed);
    }
    expect(decoder.push(Buffer.alloc(maxFrameSize - pushed - 1, 'x'))).toEqual([]);
    expect(kinds(decoder.push('x'))).toEqual(['error:FRAME_TOO_LARGE']);
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('refuses a declared content-length beyond the frame limit before the body arrives', () => {
    expect(kinds(decode(`SEND\ncontent-length:${maxFrameSize}\n\n`))).toEqual(['error:FRAME_TOO_LARGE']);
    expect(kinds(decode('SEND\ncontent-length:99999999999999999999999999\n\n'))).toEqual(['error:FRAME_TOO_LARGE']);
  });

  it('refuses headers that alone reach the frame limit', () => {
    const lines = Array.from({ length: 20 }, (_, i) => `h${i}:${'v'.repeat(10)}\n`).join('');
    expect(errorCode(decode(`SEND\n${lines}\n\0`, { maxFrameSize: 100 }))).toBe('FRAME_TOO_LARGE');
  });

  it('reports FRAME_TOO_LARGE at the byte that crosses the frame limit, before judging that line', () => {
    // The header line `b:\` (a bad escape) is exactly maxHeaderLineLength; its EOL lands on the
    // frame limit, so the frame is too large before the line is complete.
    const limits = { maxHeaderLineLength: 3 };
    expect(errorCode(decode('SEND\nb:\\\n\n\0', { ...limits, maxFrameSize: 9 }))).toBe('FRAME_TOO_LARGE');
    expect(errorCode(decode('SEND\nb:\\\r\n\n\0', { ...limits, maxFrameSize: 10 }))).toBe('FRAME_TOO_LARGE');
    expect(errorCode(decode('SEND\nb:\\\r\n\n\0', { ...limits, maxFrameSize: 11 }))).toBe('BAD_ESCAPE');
  });

  it(`accepts exactly maxHeaders (${maxHeaders}) headers and refuses one more`, () => {
    const headers = (n: number) => Array.from({ length: n }, (_, i) => `h${i}:v\n`).join('');
    expect(singleFrame(decode(`SEND\n${headers(maxHeaders)}\n\0`)).headers).toHaveLength(maxHeaders);
    expect(kinds(decode(`SEND\n${headers(maxHeaders + 1)}\n\0`))).toEqual(['error:TOO_MANY_HEADERS']);
  });

  it('counts repeated headers towards maxHeaders', () => {
    expect(errorCode(decode('SEND\na:1\na:2\na:3\n\n\0', { maxHeaders: 2 }))).toBe('TOO_MANY_HEADERS');
  });

  for (const eol of ['\n', '\r\n']) {
    const label = JSON.stringify(eol);

    it(`accepts a header line of exactly maxHeaderLineLength octets ending ${label}`, () => {
      const wire = sendWithHeaderLine(maxHeaderLineLength, eol);
      expect(header(singleFrame(decode(wire)), 'h')).toHaveLength(maxHeaderLineLength - 2);
      expect(header(singleFrame(decode(bytewise(wire))), 'h')).toHaveLength(maxHeaderLineLength - 2);
    });

    it(`refuses a header line of maxHeaderLineLength + 1 octets ending ${label}`, () => {
      const wire = sendWithHeaderLine(maxHeaderLineLength + 1, eol);
      expect(kinds(decode(wire))).toEqual(['error:HEADER_TOO_LONG']);
      expect(kinds(decode(bytewise(wire)))).toEqual(['error:HEADER_TOO_LONG']);
    });
  }

  it('counts escapes as sent, not as decoded, towards maxHeaderLineLength', () => {
    expect(errorCode(decode('SEND\nh:\\n\\n\n\n\0', { maxHeaderLineLength: 5 }))).toBe('HEADER_TOO_LONG');
    expect(header(singleFrame(decode('SEND\nh:\\n\\n\n\n\0', { maxHeaderLineLength: 6 })), 'h')).toBe('\n\n');
  });

  it('refuses an over-long header line before its end arrives', () => {
    const decoder = new StompFrameDecoder();
    expect(decoder.push(`SEND\nh:${'v'.repeat(maxHeaderLineLength - 2)}`)).toEqual([]);
    expect(decoder.push('\r')).toEqual([]);
    expect(kinds(decoder.push('v'))).toEqual(['error:HEADER_TOO_LONG']);
  });

  it(`accepts a command line of exactly maxCommandLineLength octets and refuses one more`, () => {
    expect(singleFrame(decode('SEND\n\n\0', { maxCommandLineLength: 4 })).command).toBe('SEND');
    expect(singleFrame(decode('SEND\r\n\r\n\0', { maxCommandLineLength: 4 })).command).toBe('SEND');
    expect(errorCode(decode('SEND\n\n\0', { maxCommandLineLength: 3 }))).toBe('COMMAND_TOO_LONG');
  });

  it('refuses a command line longer than the default limit without waiting for its end', () => {
    const decoder = new StompFrameDecoder();
    expect(decoder.push('X'.repeat(maxCommandLineLength))).toEqual([]);
    expect(kinds(decoder.push('X'))).toEqual(['error:COMMAND_TOO_LONG']);
    const atLimit = new StompFrameDecoder();
    expect(atLimit.push(`${'X'.repeat(maxCommandLineLength)}\r`)).toEqual([]);
    expect(kinds(atLimit.push('\n'))).toEqual(['error:UNKNOWN_COMMAND']);
  });

  it('refuses limits that are not positive integers', () => {
    expect(() => new StompFrameDecoder({ maxFrameSize: 0 })).toThrow(RangeError);
    expect(() => new StompFrameDecoder({ maxHeaderLineLength: 1.5 })).toThrow(RangeError);
    expect(() => new StompFrameDecoder({ maxCommandLineLength: Number.NaN })).toThrow(RangeError);
    expect(() => new StompFrameDecoder({ maxHeaders: -1 })).toThrow(RangeError);
    expect(new StompFrameDecoder({ maxHeaders: 0 }).limits.maxHeaders).toBe(0);
  });
});

describe('StompFrameDecoder: after an error', () => {
  it('reports frames decoded before the error, then the error last', () => {
    expect(kinds(decode('SEND\n\n\0\nBOGUS\n\n\0SEND\n\n\0'))).toEqual(['frame', 'heartbeat', 'error:UNKNOWN_COMMAND']);
  });

  it('ignores all further input and drops its buffer', () => {
    const decoder = new StompFrameDecoder();
    expect(errorCode(decoder.push('SEND\nbad\\t:x\n\nabc'))).toBe('BAD_ESCAPE');
    expect(decoder.poisoned).toBe(true);
    expect(decoder.bufferedBytes).toBe(0);
    expect(decoder.push('\0SEND\n\n\0')).toEqual([]);
  });

  it('gives an error message fit for an ERROR frame without echoing client bytes', () => {
    const [event] = decode('EVIL\u00e9<script>\n\n\0');
    expect(event).toEqual({ kind: 'error', code: 'UNKNOWN_COMMAND', message: 'unknown command' });
  });
});
