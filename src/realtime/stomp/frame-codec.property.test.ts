/**
 * Property and fuzz tests of the decoder and encoder together. Run counts are bounded so the file
 * stays well under a second or two; raise them locally with a seed when hunting a bug.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { STOMP_DECODE_ERROR_CODES, StompFrameDecoder } from './frame-decoder.js';
import type { StompDecoderEvent, StompFrameDecoderOptions } from './frame-decoder.js';
import { encodeFrame, encodeMessage, encodeMessagePart } from './frame-encoder.js';
import { CLIENT_COMMANDS, SERVER_COMMANDS } from './stomp-frame.js';
import type { StompFrame } from './stomp-frame.js';

type Header = readonly [string, string];

// ---------------------------------------------------------------------------------------------
// Generators

/** Characters that need escaping, that look like escapes, multi-byte UTF-8, and anything but NUL. */
const headerChar = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(':', '\n', '\r', '\\', 'c', 'n', 'r', ' ', '\u00e9', '\u20ac', '\u{1F600}', '\ufeff') },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }).filter((c) => c !== '\0') },
);
/** CONNECT and CONNECTED are not escaped, so they cannot carry CR or LF, nor `:` in a name. */
const unescapedValueChar = headerChar.filter((c) => c !== '\r' && c !== '\n');
const unescapedNameChar = unescapedValueChar.filter((c) => c !== ':');

function headersFor(command: string): fc.Arbitrary<Header[]> {
  const unescaped = command === 'CONNECT' || command === 'CONNECTED';
  const name = fc
    .string({ unit: unescaped ? unescapedNameChar : headerChar, minLength: 1, maxLength: 8 })
    .filter((n) => n !== 'content-length');
  const value = fc.string({ unit: unescaped ? unescapedValueChar : headerChar, maxLength: 12 });
  // Repeated names are common on purpose: the decoder must keep every occurrence in order.
  const repeatedName = fc.constantFrom('destination', 'id', 'receipt');
  return fc.array(fc.tuple(fc.oneof(name, repeatedName), value), { maxLength: 6 });
}

const bodyFor = (command: string) =>
  ['SEND', 'MESSAGE', 'ERROR'].includes(command)
    ? fc.oneof(fc.uint8Array({ maxLength: 48 }), fc.constant(new Uint8Array([0, 10, 13, 0])))
    : fc.constant(new Uint8Array(0));

/** A client frame as a client would put it on the wire. */
interface ClientWireFrame {
  readonly command: string;
  readonly headers: Header[];
  readonly body: Uint8Array;
  readonly eol: '\n' | '\r\n';
  readonly sendContentLength: boolean;
  readonly contentLengthAt: number;
}

const clientWireFrame: fc.Arbitrary<ClientWireFrame> = fc.constantFrom(...CLIENT_COMMANDS).chain((command) =>
  fc.record({
    command: fc.constant(command),
    headers: headersFor(command),
    body: bodyFor(command),
    eol: fc.constantFrom('\n' as const, '\r\n' as const),
    sendContentLength: fc.boolean(),
    contentLengthAt: fc.nat(),
  }),
);

type StreamItem = { readonly kind: 'frame'; readonly frame: ClientWireFrame } | { readonly kind: 'heartbeat'; readonly eol: string };

const clientStream = fc.array(
  fc.oneof(
    { weight: 3, arbitrary: clientWireFrame.map((frame): StreamItem => ({ kind: 'frame', frame })) },
    { weight: 1, arbitrary: fc.constantFrom('\n', '\r\n').map((eol): StreamItem => ({ kind: 'heartbeat', eol })) },
  ),
  { maxLength: 6 },
);

/** Arbitrary cut points; `split` maps them into the buffer, so any length works. */
const cuts = fc.array(fc.nat(), { maxLength: 24 });

const smallLimits: fc.Arbitrary<StompFrameDecoderOptions> = fc.record(
  {
    maxFrameSize: fc.integer({ min: 1, max: 160 }),
    maxHeaders: fc.integer({ min: 0, max: 4 }),
    maxHeaderLineLength: fc.integer({ min: 1, max: 32 }),
    maxCommandLineLength: fc.integer({ min: 1, max: 12 }),
  },
  { requiredKeys: [] },
);

// ---------------------------------------------------------------------------------------------
// Test-side client encoder, written independently of encodeFrame so that a shared misreading of
// the spec cannot make both sides agree on a wrong wire format.

function escapeLikeAClient(text: string): string {
  return text.replaceAll('\\', '\\\\').replaceAll('\r', '\\r').replaceAll('\n', '\\n').replaceAll(':', '\\c');
}

function clientEncode(f: ClientWireFrame): { bytes: Buffer; expected: StompFrame } {
  const headers: Header[] = [...f.headers];
  const body = Buffer.from(f.body);
  if (f.sendContentLength || body.includes(0)) {
    headers.splice(f.contentLengthAt % (headers.length + 1), 0, ['content-length', String(body.length)]);
  }
  const escape = f.command === 'CONNECT' ? (s: string) => s : escapeLikeAClient;
  const head = [f.command, ...headers.map(([n, v]) => `${escape(n)}:${escape(v)}`), '', ''].join(f.eol);
  return {
    bytes: Buffer.concat([Buffer.from(head, 'utf8'), body, Buffer.from([0])]),
    expected: { command: f.command, headers, body },
  };
}

function encodeStream(items: readonly StreamItem[]): { bytes: Buffer; expected: StompDecoderEvent[] } {
  const parts: Buffer[] = [];
  const expected: StompDecoderEvent[] = [];
  for (const item of items) {
    if (item.kind === 'heartbeat') {
      parts.push(Buffer.from(item.eol));
      expected.push({ kind: 'heartbeat' });
    } else {
      const { bytes, expected: frame } = clientEncode(item.frame);
      parts.push(bytes);
      expected.push({ kind: 'frame', frame });
    }
  }
  return { bytes: Buffer.concat(parts), expected };
}

// ---------------------------------------------------------------------------------------------
// Helpers

function split(bytes: Buffer, cutPoints: readonly number[]): Buffer[] {
  const at = [...new Set(cutPoints.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const to of [...at, bytes.length]) {
    chunks.push(bytes.subarray(from, to));
    from = to;
  }
  return chunks;
}

const bytewise = (bytes: Buffer) => Array.from({ length: bytes.length }, (_, i) => bytes.subarray(i, i + 1));

/** Pushes every chunk, checking the invariants that must hold after each push. */
function decodeChunks(chunks: readonly Buffer[], options?: StompFrameDecoderOptions): StompDecoderEvent[] {
  const decoder = new StompFrameDecoder(options);
  const events: StompDecoderEvent[] = [];
  for (const chunk of chunks) {
    events.push(...decoder.push(chunk));
    expect(decoder.bufferedBytes).toBeLessThanOrEqual(decoder.limits.maxFrameSize);
  }
  return events;
}

/** Frames and heart-beats, then at most one error, last; never an INTERNAL (contained bug). */
function expectWellFormed(events: readonly StompDecoderEvent[]): void {
  const errors = events.filter((e) => e.kind === 'error');
  expect(errors.length).toBeLessThanOrEqual(1);
  if (errors.length === 1) {
    expect(events.at(-1)).toBe(errors[0]);
    const { code } = errors[0] as Extract<StompDecoderEvent, { kind: 'error' }>;
    expect(STOMP_DECODE_ERROR_CODES).toContain(code);
    expect(code).not.toBe('INTERNAL');
  }
}

function expectSameDecodingHoweverChunked(bytes: Buffer, cutPoints: readonly number[], options?: StompFrameDecoderOptions): void {
  const whole = decodeChunks([bytes], options);
  expectWellFormed(whole);
  expect(decodeChunks(split(bytes, cutPoints), options)).toEqual(whole);
}

// ---------------------------------------------------------------------------------------------

describe('STOMP codec properties', () => {
  it('decodes what a client encodes: commands, escaped headers in order, binary bodies, heart-beats', () => {
    fc.assert(
      fc.property(clientStream, (items) => {
        const { bytes, expected } = encodeStream(items);
        expect(decodeChunks([bytes])).toEqual(expected);
      }),
      { numRuns: 400 },
    );
  });

  it('decodes the same frames and heart-beats however the stream is cut into chunks', () => {
    fc.assert(
      fc.property(clientStream, cuts, (items, cutPoints) => {
        const { bytes, expected } = encodeStream(items);
        expect(decodeChunks(split(bytes, cutPoints))).toEqual(expected);
      }),
      { numRuns: 400 },
    );
  });

  it('decodes the same frames and heart-beats when fed one byte at a time', () => {
    fc.assert(
      fc.property(clientStream, (items) => {
        const { bytes, expected } = encodeStream(items);
        expect(decodeChunks(bytewise(bytes))).toEqual(expected);
      }),
      { numRuns: 100 },
    );
  });

  it('decodes every frame encodeFrame writes, with content-length added to body commands', () => {
    const anyFrame = fc.constantFrom(...CLIENT_COMMANDS, ...SERVER_COMMANDS).chain((command) =>
      fc.record({ command: fc.constant(command), headers: headersFor(command), body: bodyFor(command).map((b) => Buffer.from(b)) }),
    );
    const decoderOptions = { commands: [...CLIENT_COMMANDS, ...SERVER_COMMANDS] };
    fc.assert(
      fc.property(anyFrame, cuts, (frame, cutPoints) => {
        const expectedHeaders: Header[] = ['SEND', 'MESSAGE', 'ERROR'].includes(frame.command)
          ? [...frame.headers, ['content-length', String(frame.body.length)]]
          : frame.headers;
        const events = decodeChunks(split(encodeFrame(frame), cutPoints), decoderOptions);
        expect(events).toEqual([{ kind: 'frame', frame: { ...frame, headers: expectedHeaders } }]);
      }),
      { numRuns: 400 },
    );
  });

  it('frames a message encoded once for many subscriptions exactly as encodeFrame frames it', () => {
    fc.assert(
      fc.property(headersFor('MESSAGE'), headersFor('MESSAGE'), bodyFor('MESSAGE'), (own, shared, bytes) => {
        const body = Buffer.from(bytes);
        const part = encodeMessagePart(shared, body);
        expect(encodeMessage(own, part)).toEqual(encodeFrame({ command: 'MESSAGE', headers: [...own, ...shared], body }));
      }),
      { numRuns: 400 },
    );
  });
});

describe('STOMP decoder fuzzing', () => {
  it('never throws on random bytes, and answers the same however they are chunked', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), cuts, fc.option(smallLimits, { nil: undefined }), (raw, cutPoints, limits) => {
        expectSameDecodingHoweverChunked(Buffer.from(raw), cutPoints, limits);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on streams built from STOMP-ish tokens, and answers the same however they are chunked', () => {
    // Each segment starts with a command line so the fuzzing reaches headers, escapes and bodies
    // instead of stopping at UNKNOWN_COMMAND.
    const token = fc.oneof(
      {
        weight: 4,
        arbitrary: fc
          .constantFrom(
            '\n', '\r\n', '\r', ':', '\\', '\\c', '\\n', '\\t', 'content-length:', 'content-length:3', '0', '5', '\0',
            '\n\n', 'destination:/q\n', 'a:b\n', '\u00e9', '\u{1F600}',
          )
          .map((s) => Buffer.from(s)),
      },
      { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 4 }).map((b) => Buffer.from(b)) },
      { weight: 1, arbitrary: fc.constantFrom(Buffer.from([0xff]), Buffer.from([0xc3]), Buffer.from([0xed, 0xa0, 0x80])) },
    );
    const segment = fc
      .tuple(fc.constantFrom('SEND\n', 'CONNECT\n', 'STOMP\r\n', 'SUBSCRIBE\n', 'DISCONNECT\n', 'MESSAGE\n', '\n'), fc.array(token, { maxLength: 12 }))
      .map(([command, tokens]) => Buffer.concat([Buffer.from(command), ...tokens]));
    const stream = fc.array(segment, { maxLength: 4 }).map((parts) => Buffer.concat(parts));
    fc.assert(
      fc.property(stream, cuts, fc.option(smallLimits, { nil: undefined, freq: 2 }), (bytes, cutPoints, limits) => {
        expectSameDecodingHoweverChunked(bytes, cutPoints, limits);
      }),
      { numRuns: 500 },
    );
  });

  it('never throws on mutated valid frames, and answers the same however they are chunked', () => {
    const mutation = fc.record({
      at: fc.nat(),
      op: fc.constantFrom('set', 'insert', 'delete', 'truncate'),
      byte: fc.oneof(fc.constantFrom(0x00, 0x0a, 0x0d, 0x3a, 0x5c, 0xff, 0xc3, 0x30), fc.integer({ min: 0, max: 255 })),
    });
    const mutate = (bytes: Buffer, mutations: ReadonlyArray<{ at: number; op: string; byte: number }>): Buffer => {
      let out = Buffer.from(bytes);
      for (const { at, op, byte } of mutations) {
        const i = at % (out.length + 1);
        if (op === 'set' && i < out.length) out[i] = byte;
        else if (op === 'insert') out = Buffer.concat([out.subarray(0, i), Buffer.from([byte]), out.subarray(i)]);
        else if (op === 'delete') out = Buffer.concat([out.subarray(0, i), out.subarray(i + 1)]);
        else if (op === 'truncate') out = out.subarray(0, i);
      }
      return out;
    };
    fc.assert(
      fc.property(
        clientStream,
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        cuts,
        fc.option(smallLimits, { nil: undefined, freq: 2 }),
        (items, mutations, cutPoints, limits) => {
          expectSameDecodingHoweverChunked(mutate(encodeStream(items).bytes, mutations), cutPoints, limits);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('ignores everything pushed after an error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.uint8Array({ maxLength: 64 }), (garbage, more) => {
        const decoder = new StompFrameDecoder({ maxCommandLineLength: 8 });
        const events = decoder.push(Buffer.concat([Buffer.from('BOGUS\n'), garbage]));
        expect(events.at(-1)).toMatchObject({ kind: 'error', code: 'UNKNOWN_COMMAND' });
        expect(decoder.push(Buffer.from(more))).toEqual([]);
        expect(decoder.push('SEND\n\n\0')).toEqual([]);
      }),
      { numRuns: 100 },
    );
  });
});
