/** A byte-level STOMP peer over `ws` for protocol tests that real clients would never send. */
import WebSocket from 'ws';
import { StompFrameDecoder } from '../../src/realtime/stomp/frame-decoder.js';
import { encodeFrame } from '../../src/realtime/stomp/frame-encoder.js';
import { SERVER_COMMANDS, type StompFrame } from '../../src/realtime/stomp/stomp-frame.js';

export interface RawStomp {
  ws: WebSocket;
  protocol: string;
  frames: StompFrame[];
  closed: boolean;
  send(command: string, headers: Array<[string, string]>, body?: string): void;
  sendRaw(data: string | Buffer): void;
  close(): void;
}

export async function openRawStomp(baseUrl: string, options: { path?: string; protocols?: string[]; origin?: string } = {}): Promise<RawStomp> {
  const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}${options.path ?? '/ws'}`, options.protocols ?? ['v12.stomp'], options.origin ? { headers: { origin: options.origin } } : {});
  const decoder = new StompFrameDecoder({ commands: SERVER_COMMANDS, maxFrameSize: 16 * 1024 * 1024 });
  const raw: RawStomp = {
    ws,
    protocol: '',
    frames: [],
    closed: false,
    send(command, headers, body = '') {
      ws.send(encodeFrame({ command, headers, body: Buffer.from(body) }));
    },
    sendRaw(data) {
      ws.send(data);
    },
    close() {
      ws.close();
    },
  };
  ws.on('message', (data: Buffer) => {
    for (const event of decoder.push(data)) if (event.kind === 'frame') raw.frames.push(event.frame);
  });
  ws.on('close', () => {
    raw.closed = true;
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`handshake refused: ${res.statusCode}`)));
  });
  raw.protocol = ws.protocol;
  return raw;
}

export const commandsOf = (raw: RawStomp): string[] => raw.frames.map((f) => f.command);
export const firstHeader = (frame: StompFrame | undefined, name: string): string | undefined => frame?.headers.find(([k]) => k === name)?.[1];
