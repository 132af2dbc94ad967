/**
 * An in-memory STOMP server for unit tests of the SDK's connection: each socket its factory opens
 * is answered by a script (CONNECTED or an ERROR frame per CONNECT, a RECEIPT for every frame that
 * asks for one) and can be cut at will. No service and no network, so every test is exact; what
 * the real service does is chat-client.test.ts's business.
 */
import type { IStompSocket } from '@stomp/stompjs';
import type { WebSocketFactory } from '../stomp-transport.js';

export interface ScriptedFrame {
  command: string;
  headers: Record<string, string>;
  body: string;
}

/** How to answer a CONNECT: accept it, or send an ERROR frame with these headers and close. */
export type ConnectAnswer = 'accept' | { error: Record<string, string> };

const OPEN = 1;
const CLOSED = 3;

export class ScriptedSocket implements IStompSocket {
  onclose: ((ev?: unknown) => unknown) | null = null;
  onerror: ((ev: unknown) => unknown) | null = null;
  onmessage: ((ev: unknown) => unknown) | null = null;
  onopen: ((ev?: unknown) => unknown) | null = null;
  binaryType = 'arraybuffer';
  readyState = 0;
  /** Every frame the client wrote, parsed. */
  readonly received: ScriptedFrame[] = [];
  /** destination → subscription id, as the client subscribed them on this socket. */
  readonly subscriptions = new Map<string, string>();
  private messageIds = 0;

  constructor(
    readonly url: string,
    private readonly server: ScriptedStompServer,
  ) {
    setTimeout(() => {
      if (this.readyState !== 0) return;
      this.readyState = OPEN;
      this.onopen?.({});
    }, 0);
  }

  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    const text = typeof data === 'string' ? data : new TextDecoder().decode(data as ArrayBuffer);
    for (const raw of text.split('\0')) {
      const frame = parseFrame(raw);
      if (!frame) continue;
      this.received.push(frame);
      this.server.handle(this, frame);
    }
  }

  close(): void {
    this.end(1000);
  }

  /** The network fails: the socket closes without a closing handshake. */
  cut(): void {
    this.end(1006);
  }

  /** Sends a frame to the client on a later tick, as a network would (stompjs's parser is not re-entrant). */
  write(command: string, headers: Record<string, string>, body = ''): void {
    if (this.readyState !== OPEN) return;
    const lines = [command, ...Object.entries(headers).map(([k, v]) => `${k}:${v}`)];
    const data = `${lines.join('\n')}\n\n${body}\0`;
    setTimeout(() => this.onmessage?.({ data }), 0);
  }

  /** A MESSAGE to what the client subscribed at `destination`. */
  deliver(destination: string, body: string, headers: Record<string, string> = {}): void {
    const subscription = this.subscriptions.get(destination);
    if (subscription === undefined) throw new Error(`nothing subscribed to ${destination}`);
    this.write('MESSAGE', { destination, subscription, 'message-id': `m-${++this.messageIds}`, ...headers }, body);
  }

  private end(code: number): void {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    setTimeout(() => this.onclose?.({ code, reason: '', wasClean: code === 1000 }), 0);
  }
}

export class ScriptedStompServer {
  readonly sockets: ScriptedSocket[] = [];
  /** The answer to each CONNECT; `index` counts the sockets opened so far from 0. */
  answerConnect: (frame: ScriptedFrame, index: number) => ConnectAnswer = () => 'accept';
  /** While false, frames that ask for a RECEIPT get none. */
  answerReceipts = true;
  userName = 'tester@example.com';

  readonly factory: WebSocketFactory = (url) => {
    const socket = new ScriptedSocket(url, this);
    this.sockets.push(socket);
    return socket;
  };

  get current(): ScriptedSocket {
    const socket = this.sockets.at(-1);
    if (!socket) throw new Error('no socket opened yet');
    return socket;
  }

  /** Every frame with this command the client wrote, on every socket. */
  framesReceived(command: string): ScriptedFrame[] {
    return this.sockets.flatMap((s) => s.received).filter((f) => f.command === command);
  }

  handle(socket: ScriptedSocket, frame: ScriptedFrame): void {
    switch (frame.command) {
      case 'CONNECT':
      case 'STOMP': {
        const answer = this.answerConnect(frame, this.sockets.indexOf(socket));
        if (answer === 'accept') {
          socket.write('CONNECTED', { version: '1.2', 'heart-beat': '0,0', 'user-name': this.userName });
        } else {
          socket.write('ERROR', answer.error);
          socket.close();
        }
        return;
      }
      case 'SUBSCRIBE':
        socket.subscriptions.set(frame.headers.destination ?? '', frame.headers.id ?? '');
        break;
      case 'UNSUBSCRIBE':
        for (const [destination, id] of socket.subscriptions) if (id === frame.headers.id) socket.subscriptions.delete(destination);
        break;
      default:
        break;
    }
    const receipt = frame.headers.receipt;
    if (receipt && this.answerReceipts) socket.write('RECEIPT', { 'receipt-id': receipt });
    if (frame.command === 'DISCONNECT') socket.close();
  }
}

function parseFrame(raw: string): ScriptedFrame | undefined {
  const text = raw.replace(/^[\r\n]+/, ''); // heart-beats
  if (!text) return undefined;
  const split = text.indexOf('\n\n');
  const head = split < 0 ? text : text.slice(0, split);
  const [command = '', ...lines] = head.split('\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0 && !(line.slice(0, colon) in headers)) headers[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return { command, headers, body: split < 0 ? '' : text.slice(split + 2) };
}
