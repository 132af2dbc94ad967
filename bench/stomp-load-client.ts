/**
 * A lean STOMP 1.2 client over `ws` for load generation: thousands of real STOMP connections from
 * one process. It frames with @stomp/stompjs's own parser and marshaller, so the service sees the
 * bytes a real client sends, without a full stompjs Client (state machine, timers, reconnects) per
 * connection. Client side only: it shares no code with the service it measures.
 */
import { FrameImpl, Parser, type IFrame, type StompHeaders } from '@stomp/stompjs';
import WebSocket from 'ws';

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
    const parser = new Parser(
      (raw) => this.received(FrameImpl.fromRawFrame(raw, this.escapeHeaders)),
      () => undefined, // the service's heart-beats: nothing to do, the socket stays open
    );
    // An ArrayBuffer is what the parser takes, and it reads it in place.
    ws.binaryType = 'arraybuffer';
    ws.on('message', (data: ArrayBuffer) => parser.parseChunk(data));
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
