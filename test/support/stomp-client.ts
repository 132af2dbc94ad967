/**
 * Real STOMP clients for tests: @stomp/stompjs over `ws` (as mobile and server clients connect) or
 * over sockjs-client (as browsers do), with collectors that tests poll.
 */
import { Client, type IFrame, type IMessage, type StompSubscription } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import WebSocket from 'ws';

export type StompTransportKind = 'ws' | 'sockjs' | 'sockjs-xhr-streaming' | 'sockjs-xhr-polling' | 'sockjs-eventsource';

export interface ReceivedMessage {
  destination: string;
  headers: Record<string, string>;
  body: any;
  raw: IMessage;
  /** performance.now() when the frame was handed to the test. */
  receivedAt: number;
}

export interface TestStompClient {
  client: Client;
  /** Every MESSAGE received, in arrival order. */
  messages: ReceivedMessage[];
  /** ERROR frames received. */
  errors: IFrame[];
  closed: boolean;
  subscribe(destination: string, headers?: Record<string, string>): Promise<StompSubscription>;
  on(destination: string): ReceivedMessage[];
  send(destination: string, body: unknown, headers?: Record<string, string>): void;
  /** Sends and waits for the server's RECEIPT (the frame has been fully processed). */
  sendWithReceipt(destination: string, body: unknown, headers?: Record<string, string>): Promise<void>;
  close(): Promise<void>;
}

let receiptCounter = 0;

export interface ConnectOptions {
  baseUrl: string;
  token?: string;
  transport?: StompTransportKind;
  heartbeatMs?: number;
  /** Use passcode instead of the Authorization header. */
  asPasscode?: boolean;
  origin?: string;
}

export function openSocket(options: ConnectOptions): WebSocket | InstanceType<typeof SockJS> {
  const transport = options.transport ?? 'ws';
  if (transport === 'ws') {
    return new WebSocket(`${options.baseUrl.replace(/^http/, 'ws')}/ws`, ['v12.stomp', 'v11.stomp'], options.origin ? { headers: { origin: options.origin } } : {});
  }
  const transports = transport === 'sockjs' ? undefined : [transport.slice('sockjs-'.length)];
  return new SockJS(`${options.baseUrl}/ws`, null, transports ? { transports } : {});
}

/** Connects and resolves once CONNECTED arrived; rejects with the ERROR frame's message otherwise. */
export async function connectStomp(options: ConnectOptions): Promise<TestStompClient> {
  const messages: ReceivedMessage[] = [];
  const errors: IFrame[] = [];
  const receipts = new Map<string, () => void>();
  const connectHeaders: Record<string, string> = {};
  if (options.token) {
    if (options.asPasscode) connectHeaders.passcode = options.token;
    else connectHeaders.Authorization = `Bearer ${options.token}`;
  }
  const client = new Client({
    webSocketFactory: () => openSocket(options),
    connectHeaders,
    reconnectDelay: 0,
    heartbeatIncoming: options.heartbeatMs ?? 0,
    heartbeatOutgoing: options.heartbeatMs ?? 0,
    debug: () => undefined,
  });
  const wrapper: TestStompClient = {
    client,
    messages,
    errors,
    closed: false,
    async subscribe(destination, headers = {}) {
      // A receipt on the SUBSCRIBE proves the server has registered it before the test goes on.
      const receipt = `s-${++receiptCounter}`;
      const registered = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no RECEIPT for SUBSCRIBE ${destination}`)), 10_000);
        client.watchForReceipt(receipt, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      const sub = client.subscribe(
        destination,
        (msg) => {
          let body: unknown = msg.body;
          try {
            body = JSON.parse(msg.body);
          } catch {
            // keep the text
          }
          messages.push({ destination, headers: msg.headers, body, raw: msg, receivedAt: performance.now() });
        },
        { ...headers, receipt },
      );
      await registered;
      return sub;
    },
    on(destination) {
      return messages.filter((m) => m.destination === destination);
    },
    send(destination, body, headers = {}) {
      client.publish({ destination, body: typeof body === 'string' ? body : JSON.stringify(body), headers });
    },
    sendWithReceipt(destination, body, headers = {}) {
      const receipt = `r-${++receiptCounter}`;
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no RECEIPT for ${destination}`)), 10_000);
        receipts.set(receipt, () => {
          clearTimeout(timer);
          resolve();
        });
        client.watchForReceipt(receipt, () => receipts.get(receipt)?.());
        client.publish({ destination, body: typeof body === 'string' ? body : JSON.stringify(body), headers: { ...headers, receipt } });
      });
    },
    async close() {
      await client.deactivate();
    },
  };
  await new Promise<void>((resolve, reject) => {
    client.onConnect = () => resolve();
    client.onStompError = (frame) => {
      errors.push(frame);
      reject(new Error(frame.headers.message ?? 'STOMP ERROR'));
    };
    client.onWebSocketClose = () => {
      wrapper.closed = true;
      reject(new Error('socket closed before CONNECTED'));
    };
    client.activate();
  });
  client.onStompError = (frame) => errors.push(frame);
  client.onWebSocketClose = () => {
    wrapper.closed = true;
  };
  return wrapper;
}
