/**
 * A lean STOMP 1.2 client over `ws` for load generation: thousands of real STOMP connections from
 * one process, speaking the same frames @stomp/stompjs does, with our own codec instead of a
 * heavier client per connection.
 */
import WebSocket from 'ws';
import { StompFrameDecoder } from '../src/realtime/stomp/frame-decoder.js';
import { encodeFrame } from '../src/realtime/stomp/frame-encoder.js';
import { header, SERVER_COMMANDS, type StompFrame } from '../src/realtime/stomp/stomp-frame.js';

export class LoadClient {
  private readonly decoder = new StompFrameDecoder({ commands: SERVER_COMMANDS, maxFrameSize: 1024 * 1024 });
  private readonly handlers = new Map<string, (frame: StompFrame) => void>();
  private receiptWaiters = new Map<string, () => void>();
  private counter = 0;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      for (const event of this.decoder.push(data)) {
        if (event.kind !== 'frame') continue;
        const frame = event.frame;
        if (frame.command === 'MESSAGE') this.handlers.get(header(frame, 'subscription') ?? '')?.(frame);
        else if (frame.command === 'RECEIPT') {
          const id = header(frame, 'receipt-id') ?? '';
          this.receiptWaiters.get(id)?.();
          this.receiptWaiters.delete(id);
        } else if (frame.command === 'ERROR') console.error('STOMP ERROR', header(frame, 'message'));
      }
    });
  }

  private heartbeat: NodeJS.Timeout | undefined;

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
    const connected = new Promise<void>((resolve, reject) => {
      const onMessage = (data: Buffer): void => {
        if (data.toString('latin1', 0, 9) === 'CONNECTED') {
          ws.off('message', onMessage);
          resolve();
        } else if (data.toString('latin1', 0, 5) === 'ERROR') reject(new Error(data.toString()));
      };
      ws.on('message', onMessage);
    });
    const beat = options.heartbeatMs ?? 0;
    ws.send(encodeFrame({ command: 'CONNECT', headers: [['accept-version', '1.2'], ['host', 'chat'], ['heart-beat', `${beat},${beat}`], ['Authorization', `Bearer ${token}`]], body: Buffer.alloc(0) }));
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
  async subscribe(destination: string, onMessage: (frame: StompFrame) => void): Promise<void> {
    const id = `s${++this.counter}`;
    this.handlers.set(id, onMessage);
    const receipt = `r${++this.counter}`;
    const done = new Promise<void>((resolve) => this.receiptWaiters.set(receipt, resolve));
    this.ws.send(encodeFrame({ command: 'SUBSCRIBE', headers: [['id', id], ['destination', destination], ['receipt', receipt]], body: Buffer.alloc(0) }));
    await done;
  }

  send(destination: string, body: unknown): void {
    this.ws.send(encodeFrame({ command: 'SEND', headers: [['destination', destination], ['content-type', 'application/json']], body: Buffer.from(JSON.stringify(body)) }));
  }

  close(): void {
    clearTimeout(this.heartbeat);
    clearInterval(this.heartbeat);
    this.ws.close();
  }
}
