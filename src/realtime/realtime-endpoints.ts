/**
 * The `/ws` endpoint: raw WebSocket STOMP (mobile, servers) on the exact paths `/ws` and
 * `/ws/websocket`, and SockJS (browsers) on the rest of `/ws/*`, all on the HTTP port.
 *
 * We route upgrades and SockJS requests ourselves (see STACK.md): sockjs-node would capture the
 * exact `/ws` upgrade and answer `/ws/websocket` without a subprotocol. Hardening, each for a
 * known weakness:
 * - Origin is checked on WebSocket handshakes and on every SockJS HTTP request (cross-site
 *   WebSocket hijacking; sockjs-node itself reflects any Origin with credentials).
 * - `xhr_send` bodies are capped before sockjs-node sees them (it buffers them unbounded).
 * - JSONP and htmlfile transports and the iframe page are off (script-injection surface, CDN page).
 * - A SockJS session is bound to the client that opened it (address + user agent): sockjs-node
 *   finds sessions by the URL's id alone, so otherwise anyone who learns the id could post frames
 *   that act as the session's authenticated user, or poll its messages away.
 * - `ws` takes at most one frame's worth per message, and no permessage-deflate (compression
 *   bombs, CPU and memory per connection).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import sockjs from 'sockjs';
import { WebSocketServer, type WebSocket } from 'ws';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';
import { DEFAULT_STOMP_OPTIONS, StompConnection, type StompConnectionOptions, type StompHandler } from './stomp/stomp-connection.js';
import { DEFAULT_DECODER_LIMITS } from './stomp/frame-decoder.js';

export interface RealtimeEndpointsOptions {
  handler: StompHandler;
  logger: Logger;
  metrics: Metrics;
  /** Browser origins allowed; ['*'] allows any. Requests without an Origin (non-browsers) pass. */
  allowedOrigins: readonly string[];
  stomp?: Partial<StompConnectionOptions>;
  /** Largest SockJS xhr_send body accepted, in bytes. */
  maxXhrSendBytes?: number;
  /** SockJS server heart-beat ('h' frames keep proxies from idling out xhr-streaming). */
  sockjsHeartbeatMs?: number;
}

const PREFIX = '/ws';
const SOCKJS_TRANSPORT = /^\/ws\/[^/.]+\/([^/.]+)\/([a-z_]+)\/?$/;
const DISABLED_SOCKJS_TRANSPORTS = new Set(['jsonp', 'jsonp_send', 'htmlfile']);
const STOMP_SUBPROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];

export class RealtimeEndpoints {
  private readonly connections = new Set<StompConnection>();
  private readonly wss: WebSocketServer;
  private readonly sockjsHandler: (req: IncomingMessage, res: ServerResponse | Duplex, head?: Buffer) => boolean;
  private readonly sockjsSessions = new LRUCache<string, string>({ max: 200_000, ttl: 3_600_000, updateAgeOnGet: true });
  private readonly stompOptions: StompConnectionOptions;
  private readonly maxXhrSendBytes: number;

  constructor(private readonly options: RealtimeEndpointsOptions) {
    this.stompOptions = {
      ...DEFAULT_STOMP_OPTIONS,
      ...options.stomp,
      onInternalError: (err) => options.logger.error({ err }, 'STOMP frame handling failed'),
      stats: {
        frameIn: (command) => options.metrics.stompFrames.inc({ direction: 'in', command }),
        frameOut: (command) => options.metrics.stompFrames.inc({ direction: 'out', command }),
      },
    };
    const frameLimit = this.stompOptions.limits?.maxFrameSize ?? DEFAULT_DECODER_LIMITS.maxFrameSize;
    // JSON string escaping in SockJS can grow a frame up to 6× (\u0000); the decoder still enforces the frame limit.
    this.maxXhrSendBytes = options.maxXhrSendBytes ?? frameLimit * 6 + 1024;

    this.wss = new WebSocketServer({
      noServer: true,
      // Slack over the frame limit so a slightly oversized frame gets a STOMP ERROR from the decoder.
      maxPayload: frameLimit + 4096,
      perMessageDeflate: false,
      clientTracking: false,
      // ws would pick the first protocol offered; prefer STOMP 1.2 whatever the client's order.
      handleProtocols: (offered) => STOMP_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
    });

    const server = sockjs.createServer({
      prefix: PREFIX,
      websocket: true,
      heartbeat_delay: options.sockjsHeartbeatMs ?? 25_000,
      disconnect_delay: 5_000,
      log: (severity: string, line: string) => {
        if (severity === 'error') options.logger.warn({ component: 'sockjs' }, line);
      },
    });
    server.on('connection', (conn) => {
      if (conn) this.acceptSockJs(conn);
    });
    const listener = (server as unknown as { listener(o?: object): { getHandler(): RealtimeEndpoints['sockjsHandler'] } }).listener();
    this.sockjsHandler = listener.getHandler();
  }

  /** Takes HTTP requests under /ws (SockJS); returns false for anything else. */
  handleRequest(req: IncomingMessage, res: ServerResponse): boolean {
    const path = pathOf(req);
    if (path !== PREFIX && !path.startsWith(`${PREFIX}/`)) return false;
    const refusal = this.refuseSockJsRequest(req, path);
    if (refusal) {
      this.options.metrics.realtimeClosed.inc({ reason: refusal.reason });
      res.writeHead(refusal.status, { 'content-type': 'application/problem+json' });
      res.end(JSON.stringify({ type: 'about:blank', title: refusal.reason, status: refusal.status, code: refusal.code, detail: refusal.detail }));
      return true;
    }
    if (req.method === 'POST' && pathOf(req).endsWith('/xhr_send')) this.capBody(req, res);
    this.sockjsHandler(req, res);
    return true;
  }

  /** Chunked bodies have no Content-Length to check up front: count as they stream, cut at the cap. */
  private capBody(req: IncomingMessage, res: ServerResponse): void {
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > this.maxXhrSendBytes && !res.headersSent) {
        this.options.metrics.realtimeClosed.inc({ reason: 'xhr_send_too_large' });
        res.writeHead(413, { 'content-type': 'application/problem+json', connection: 'close' });
        res.end(JSON.stringify({ type: 'about:blank', title: 'xhr_send_too_large', status: 413, code: 'BODY_TOO_LARGE' }));
        req.destroy();
      }
    });
  }

  /** Takes WebSocket upgrades under /ws; others are refused. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = pathOf(req);
    const reject = (status: number, reason: string): void => {
      this.options.metrics.realtimeClosed.inc({ reason });
      socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    if (!this.originAllowed(req)) return reject(403, 'Origin Not Allowed');
    if (path === PREFIX || path === `${PREFIX}/websocket`) {
      this.wss.handleUpgrade(req, socket, head, (ws) => this.acceptWebSocket(ws));
      return;
    }
    const match = SOCKJS_TRANSPORT.exec(path);
    if (match && match[2] === 'websocket') {
      if (!this.bindSockJsSession(match[1]!, req)) return reject(403, 'Session Bound Elsewhere');
      this.sockjsHandler(req, socket, head);
      return;
    }
    reject(404, 'Not Found');
  }

  get openConnections(): number {
    return this.connections.size;
  }

  /** Ends every connection with an ERROR frame, so clients reconnect elsewhere. */
  async close(): Promise<void> {
    for (const conn of [...this.connections]) conn.fail('SERVER_SHUTDOWN', 'the server is shutting down; reconnect');
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  private acceptWebSocket(ws: WebSocket): void {
    // A relay batch fans out many frames to one connection within one turn of the event loop (one
    // bus delivery per callback): corking until setImmediate turns them into one write system call
    // instead of one each. process.nextTick would uncork after every single callback.
    const socket = (ws as unknown as { _socket?: Duplex })._socket;
    let corked = false;
    const conn = new StompConnection(
      {
        send: (data) => {
          if (socket && !corked) {
            corked = true;
            socket.cork();
            setImmediate(() => {
              corked = false;
              socket.uncork();
            });
          }
          ws.send(data, { binary: false });
        },
        bufferedBytes: () => ws.bufferedAmount,
        close: () => ws.close(1000),
      },
      this.options.handler,
      this.stompOptions,
      'websocket',
    );
    this.track(conn);
    // Attached synchronously: a frame arriving before the listener would be lost.
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => conn.receive(toBuffer(data)));
    ws.on('close', () => conn.transportClosed());
    ws.on('error', () => conn.transportClosed());
  }

  private acceptSockJs(sock: sockjs.Connection): void {
    const conn = new StompConnection(
      {
        send: (data) => sock.write(data.toString('utf8')),
        bufferedBytes: () => sockJsBacklog(sock),
        close: () => sock.close('1000', 'closed'),
      },
      this.options.handler,
      this.stompOptions,
      'sockjs',
    );
    this.track(conn);
    sock.on('data', (data: string) => conn.receive(data));
    sock.on('close', () => conn.transportClosed());
  }

  private track(conn: StompConnection): void {
    this.connections.add(conn);
    conn.onClosed(() => this.connections.delete(conn));
  }

  private refuseSockJsRequest(req: IncomingMessage, path: string): { status: number; reason: string; code: string; detail: string } | undefined {
    if (!this.originAllowed(req)) return { status: 403, reason: 'origin_not_allowed', code: 'ORIGIN_NOT_ALLOWED', detail: 'this Origin may not use the chat endpoint' };
    if (/^\/ws\/iframe[0-9-.a-z_]*\.html$/.test(path)) return { status: 404, reason: 'iframe_disabled', code: 'ROUTE_NOT_FOUND', detail: 'iframe transports are disabled' };
    const match = SOCKJS_TRANSPORT.exec(path);
    if (!match) return undefined;
    const [, sessionId, transport] = match as unknown as [string, string, string];
    if (DISABLED_SOCKJS_TRANSPORTS.has(transport)) return { status: 404, reason: 'transport_disabled', code: 'ROUTE_NOT_FOUND', detail: `the ${transport} transport is disabled` };
    if (transport === 'xhr_send' && req.method === 'POST' && Number(req.headers['content-length'] ?? 0) > this.maxXhrSendBytes) {
      return { status: 413, reason: 'xhr_send_too_large', code: 'BODY_TOO_LARGE', detail: `xhr_send bodies are limited to ${this.maxXhrSendBytes} bytes` };
    }
    if (req.method !== 'OPTIONS' && !this.bindSockJsSession(sessionId, req)) {
      return { status: 403, reason: 'session_bound_elsewhere', code: 'ORIGIN_NOT_ALLOWED', detail: 'this SockJS session belongs to another client' };
    }
    return undefined;
  }

  /** The first request of a session id binds it to its client; later ones must come from the same client. */
  private bindSockJsSession(sessionId: string, req: IncomingMessage): boolean {
    const fingerprint = `${req.socket.remoteAddress ?? ''}|${req.headers['user-agent'] ?? ''}`;
    const bound = this.sockjsSessions.get(sessionId);
    if (bound === undefined) {
      this.sockjsSessions.set(sessionId, fingerprint);
      return true;
    }
    return bound === fingerprint;
  }

  private originAllowed(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    if (this.options.allowedOrigins.includes('*')) return true;
    return this.options.allowedOrigins.includes(origin);
  }
}

function pathOf(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

function toBuffer(data: Buffer | ArrayBuffer | Buffer[]): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** sockjs-node keeps unsent messages in its session and the streaming response; it exposes neither. */
function sockJsBacklog(sock: sockjs.Connection): number {
  const session = (sock as unknown as { _session?: { send_buffer?: string[]; recv?: { response?: { writableLength?: number } } } })._session;
  let bytes = session?.recv?.response?.writableLength ?? 0;
  for (const message of session?.send_buffer ?? []) bytes += message.length;
  return bytes;
}
