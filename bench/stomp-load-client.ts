/**
 * A lean STOMP 1.2 client over `ws` for load generation: thousands of real STOMP connections from
 * one process. It writes frames with @stomp/stompjs's marshaller, so the service sees the bytes a
 * real client sends, without a full stompjs Client (state machine, timers, reconnects) per
 * connection. It reads them with `readFrames` below rather than stompjs's byte-at-a-time parser,
 * which cost the load generator ~200 µs per message and so took CPU from the service it measures
 * on a shared machine. Client side only: it shares no code with the service.
 */
import { FrameImpl, type StompHeaders } from '@stomp/stompjs';
import WebSocket from 'ws';

export interface IFrame {
  command: string;
  headers: Record<string, string>;
  body: string;
}

/**
 * The frames in one WebSocket message (the service writes whole frames, one or more per message;
 * heart-beat EOLs skipped). Bodies here are JSON text, never binary, so NUL ends every frame.
 */
export function readFrames(text: string, escaped: boolean): IFrame[] {
  const frames: IFrame[] = [];
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\0', start);
    if (end < 0) end = text.length;
    let raw = text.slice(start, end);
    start = end + 1;
    raw = raw.replace(/^[\r\n]+/, '');
    if (!raw) continue;
    const split = raw.indexOf('\n\n');
    const head = split < 0 ? raw : raw.slice(0, split);
    const lines = head.split('\n');
    const headers: Record<string, string> = {};
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!.endsWith('\r') ? lines[i]!.slice(0, -1) : lines[i]!;
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon);
      // The first occurrence of a repeated header wins (STOMP 1.2).
      if (!(name in headers)) headers[name] = escaped ? unescapeHeader(line.slice(colon + 1)) : line.slice(colon + 1);
    }
    frames.push({ command: lines[0]!.replace(/\r$/, ''), headers, body: split < 0 ? '' : raw.slice(split + 2) });
  }
  return frames;
}

function unescapeHeader(value: string): string {
  if (!value.includes('\\')) return value;
  return value.replace(/\\([\\nrc])/g, (_m, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c === 'c' ? ':' : '\\'));
}

export class LoadClient {
  private readonly handlers = new Map<string, (frame: IFrame) => void>();
  private readonly receiptWaiters = new Map<string, () => void>();
  private counter = 0;
  private heartbeat: NodeJS.Timeout | undefined;
  /** STOMP 1.2 escapes header values in every frame but CONNECT and CONNECTED. */
  private escapeHeaders = false;
  /** Settles `connect` on CONNECTED or on an ERROR before it. */
  private connecting: { resolve: () => void; reject: (err: Error) => void } | undefined;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      for (const frame of readFrames(data.toString('utf8'), this.escapeHeaders)) this.received(frame);
    });
  }

  /**
   * `localAddress` picks the source address (anything in 127.0.0.0/8 on loopback), so more
   * connections than one address has ephemeral ports can be opened. With `heartbeatMs`, both sides
   * agree to beat at that period and this client sends its beats.
   */
  static async connect(wsUrl: string, token: string, options: { localAddress?: string; heartbeatMs?: number } = {}): Promise<LoadClient> {
    const ws = new WebSocket(wsUrl, ['v12.stomp'], { perMessageDeflate: false, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const client = new LoadClient(ws);
    const connected = new Promise<void>((resolve, reject) => (client.connecting = { resolve, reject }));
    const beat = options.heartbeatMs ?? 0;
    client.transmit('CONNECT', { 'accept-version': '1.2', host: 'chat', 'heart-beat': `${beat},${beat}`, Authorization: `Bearer ${token}` });
    await connected;
    if (beat > 0) {
      // Spread over the period, so thousands of clients do not beat in the same millisecond.
      const first = setTimeout(() => {
        ws.send('\n');
        client.heartbeat = setInterval(() => ws.send('\n'), beat);
      }, Math.random() * beat);
      client.heartbeat = first;
    }
    return client;
  }

  /** Subscribes and resolves once the server has registered it (RECEIPT). */
  async subscribe(destination: string, onMessage: (frame: IFrame) => void): Promise<void> {
    const id = `s${++this.counter}`;
    this.handlers.set(id, onMessage);
    const receipt = `r${++this.counter}`;
    const done = new Promise<void>((resolve) => this.receiptWaiters.set(receipt, resolve));
    this.transmit('SUBSCRIBE', { id, destination, receipt });
    await done;
  }

  send(destination: string, body: unknown): void {
    this.transmit('SEND', { destination, 'content-type': 'application/json' }, JSON.stringify(body));
  }

  close(): void {
    clearTimeout(this.heartbeat);
    clearInterval(this.heartbeat);
    this.ws.close();
  }

  private transmit(command: string, headers: StompHeaders, body = ''): void {
    this.ws.send(FrameImpl.marshall({ command, headers, body, escapeHeaderValues: this.escapeHeaders }));
  }

  private received(frame: IFrame): void {
    switch (frame.command) {
      case 'MESSAGE':
        this.handlers.get(frame.headers.subscription ?? '')?.(frame);
        return;
      case 'RECEIPT': {
        const id = frame.headers['receipt-id'] ?? '';
        this.receiptWaiters.get(id)?.();
        this.receiptWaiters.delete(id);
        return;
      }
      case 'CONNECTED':
        this.escapeHeaders = true;
        this.connecting?.resolve();
        this.connecting = undefined;
        return;
      case 'ERROR':
        console.error('STOMP ERROR', frame.headers.message);
        this.connecting?.reject(new Error(`STOMP ERROR before CONNECTED: ${frame.headers.message ?? frame.body}`));
        this.connecting = undefined;
        return;
    }
  }
}
