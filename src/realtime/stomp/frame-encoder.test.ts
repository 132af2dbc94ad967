import { describe, it, expect } from 'vitest';
import { HEARTBEAT_EOL, encodeFrame } from './frame-encoder.js';
import type { StompFrame } from './stomp-frame.js';

const frame = (command: string, headers: Array<readonly [string, string]>, body = ''): StompFrame => ({
  command,
  headers,
  body: Buffer.from(body),
});

const wire = (f: StompFrame) => encodeFrame(f).toString('utf8');

describe('encodeFrame', () => {
  it('writes command, headers in order, content-length, blank line, body and NUL', () => {
    const f = frame('MESSAGE', [
      ['subscription', 'sub-0'],
      ['message-id', '42'],
      ['destination', '/topic/session.7'],
    ], 'h\u00e9');
    expect(wire(f)).toBe('MESSAGE\nsubscription:sub-0\nmessage-id:42\ndestination:/topic/session.7\ncontent-length:3\n\nh\u00e9\0');
  });

  it('escapes backslash, CR, LF and colon in header names and values', () => {
    expect(wire(frame('ERROR', [['a:b\\', 'x\ny\rz:\\']]))).toBe('ERROR\na\\cb\\\\:x\\ny\\rz\\c\\\\\ncontent-length:0\n\n\0');
  });

  it('writes CONNECTED headers unescaped', () => {
    expect(wire(frame('CONNECTED', [['version', '1.2'], ['server', 'chat\\1:0']]))).toBe('CONNECTED\nversion:1.2\nserver:chat\\1:0\n\n\0');
  });

  it('gives SEND, MESSAGE and ERROR a content-length even when the body is empty', () => {
    expect(wire(frame('MESSAGE', []))).toBe('MESSAGE\ncontent-length:0\n\n\0');
    expect(wire(frame('RECEIPT', [['receipt-id', '1']]))).toBe('RECEIPT\nreceipt-id:1\n\n\0');
  });

  it('replaces a caller-supplied content-length with the real body length', () => {
    expect(wire(frame('MESSAGE', [['content-length', '1'], ['a', 'b']], 'xyz'))).toBe('MESSAGE\na:b\ncontent-length:3\n\nxyz\0');
  });

  it('writes binary bodies with NUL bytes verbatim', () => {
    const body = Buffer.from([0, 255, 0, 10]);
    const out = encodeFrame({ command: 'MESSAGE', headers: [], body });
    expect(out.subarray(out.length - 5)).toEqual(Buffer.from([0, 255, 0, 10, 0]));
  });

  it('refuses what the frame cannot represent', () => {
    expect(() => encodeFrame(frame('PUBLISH', []))).toThrow(RangeError);
    expect(() => encodeFrame(frame('RECEIPT', [], 'x'))).toThrow(RangeError);
    expect(() => encodeFrame(frame('MESSAGE', [['', 'v']]))).toThrow(RangeError);
    expect(() => encodeFrame(frame('MESSAGE', [['k', 'a\0b']]))).toThrow(RangeError);
    expect(() => encodeFrame(frame('CONNECTED', [['k', 'a\nb']]))).toThrow(RangeError);
    expect(() => encodeFrame(frame('CONNECTED', [['k:', 'v']]))).toThrow(RangeError);
  });
});

describe('HEARTBEAT_EOL', () => {
  it('is a single LF', () => {
    expect(HEARTBEAT_EOL).toEqual(Buffer.from('\n'));
  });
});
