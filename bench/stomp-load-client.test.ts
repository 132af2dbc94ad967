import { describe, expect, it } from 'vitest';
import { readFrames } from './stomp-load-client.js';

describe('readFrames (the load generator\u2019s frame reader)', () => {
  it('reads every frame of a message, skips heart-beats, unescapes 1.2 headers, keeps the first of a repeated header', () => {
    const text = '\n\nMESSAGE\nsubscription:s1\nclient-message-id:a\\cb\nclient-message-id:second\n\n{"x":1}\0\r\nRECEIPT\r\nreceipt-id:r2\r\n\r\n\0\n';
    expect(readFrames(text, true)).toEqual([
      { command: 'MESSAGE', headers: { subscription: 's1', 'client-message-id': 'a:b' }, body: '{"x":1}' },
      { command: 'RECEIPT', headers: { 'receipt-id': 'r2' }, body: '' },
    ]);
  });

  it('leaves CONNECTED headers as they are (no escaping before the version is agreed)', () => {
    expect(readFrames('CONNECTED\nversion:1.2\nserver:a\\cb\n\n\0', false)).toEqual([{ command: 'CONNECTED', headers: { version: '1.2', server: 'a\\cb' }, body: '' }]);
  });
});
