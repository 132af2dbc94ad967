/**
 * The `/ws` endpoint: raw WebSocket STOMP (mobile, servers) on the exact paths `/ws` and
 * `/ws/websocket`, and SockJS (browsers) on the rest of `/ws/*`, all on the HTTP port.
 *
 * We route upgrades and SockJS requests ourselves: sockjs-node would capture the exact `/ws`
 * upgrade and answer `/ws/websocket` without a subprotocol. Hardening, each for a known weakness:
 * - Routing and every policy below are decided on the URL exactly as sockjs-node will route it:
 *   a URL it would normalise differently is refused, and only an allow-list of route shapes
 *   passes (sockjs-path.ts), so no spelling reaches sockjs-node with another decision than ours.
 * - Origin is checked on WebSocket handshakes and on every SockJS HTTP request (cross-site
 *   WebSocket hijacking; sockjs-node itself reflects any Origin with credentials).
 * - Connections that have not authenticated are capped, globally and per client address, may send
 *   16 KiB before CONNECT, and are gone soon after the CONNECT timeout (pending-connections.ts):
 *   anonymous floods cannot grow memory without bound.
 * - `xhr_send` is served here, not by sockjs-node (which buffers bodies unbounded, with quadratic
 *   copying): one at a time per session, counted while streaming, refused with 413 past the cap.
 * - JSONP and htmlfile transports and the iframe page are off (script-injection surface, CDN page).
 * - A SockJS session is bound to the client that opened it (address as the trusted proxy reports
 *   it, user agent, Origin), and records its caller once CONNECT succeeded: sockjs-node finds
 *   sessions by the URL's id alone, so otherwise anyone who learns the id could post frames that
 *   act as the session's authenticated user, or poll its messages away.
 * - `ws` and sockjs-node's own WebSocket take at most one frame's worth per message, and no
 *   permessage-deflate (compression bombs, CPU and memory per connection).
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import sockjs from 'sockjs';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from 'pino';
import { ChatError } from '../chat/chat-errors.js';
import { toProblem } from '../chat/problem.js';
import type { Metrics } from '../observability/metrics.js';
import { DEFAULT_STOMP_OPTIONS, StompConnection, type StompConnectionOptions, type StompHandler } from './stomp/stomp-connection.js';
import { DEFAULT_DECODER_LIMITS } from './stomp/frame-decoder.js';
import { clientAddress, compileTrustProxy, type TrustProxy } from './client-address.js';
import { PendingConnections, type PendingLimits, type PendingSlot } from './pending-connections.js';
import { discardRestOfBody, readCappedBody } from './read-capped-body.js';
import { routeWs } from './sockjs-path.js';
import { type SockJsClient, type SockJsSessionEntry, SockJsSessionTable } from './sockjs-session-table.js';

export interface RealtimeEndpointsOptions {
  handler: StompHandler;
  logger: Logger;
  metrics: Metrics;
  /** Browser origins allowed; ['*'] allows any. Requests without an Origin (non-browsers) pass. */
  allowedOrigins: readonly string[];
  stomp?: Partial<StompConnectionOptions>;
  /** Largest SockJS xhr_send body accepted from an authenticated session, in bytes. */
  maxXhrSendBytes?: number;
  /** SockJS server heart-beat ('h' frames keep proxies from idling out xhr-streaming). */
  sockjsHeartbeatMs?: number;
  /** Connections not yet authenticated: on this instance, and from one client address. */
  pending?: Partial<PendingLimits>;
  /** Which peers' X-Forwarded-For to believe for the client address; default loopback only. */
  trustProxy?: TrustProxy;
}

const DEFAULT_PENDING_LIMITS: PendingLimits = { max: 1000, maxPerAddress: 100 };

/**
 * One STOMP frame's worth, plus slack for the SockJS envelope (`["…"]`) and its JSON escaping:
 * sockjs-client escapes quotes, backslashes, control characters and some rare code points, so a
 * chat frame (content ≤ 4,000 code points, at most 12 bytes each as `\uXXXX\uXXXX`, plus headers)
 * stays far under 64 KiB; the STOMP decoder still enforces the frame limit on what it unwraps.
 */
const ENVELOPE_SLACK_BYTES = 4096;
/**
 * Before CONNECT succeeds the only legitimate traffic is one CONNECT frame: a bearer token within
 * the 8 KiB header-line limit plus a few short headers and the framing. Past this many bytes a
 * client is not connecting, it is filling our buffers; capping it keeps what an unauthenticated
 * connection can make us hold to this, not to a frame (64 KiB) plus a message in progress.
 */
const PRE_CONNECT_BYTES = 16 * 1024;
/** How long sockjs-node keeps a session with no request attached before closing it. */
const SOCKJS_DISCONNECT_DELAY_MS = 5_000;
/**
 * A WebSocket that ends before authenticating holds its pending slot until its socket is gone; ws
 * and faye-websocket wait up to 30 s for the peer's close frame, a silent client never sends one.
 */
const UNAUTHENTICATED_CLOSE_GRACE_MS = 1_000;
/** How long we keep reading and dropping a refused body so the client sees the 413, not a reset. */
const REFUSED_BODY_LINGER_MS = 2_000;
const SOCKJS_SESSION_PATH = /^\/ws\/[^/]+\/([^/]+)\//;
const SOCKJS_OPEN = 1;
const STOMP_SUBPROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];

/** A request or upgrade we answer with the error's problem; `reason` labels it in metrics. */
interface Refusal {
  reason: string;
  error: ChatError;
}

const DRAINING_REFUSAL: Refusal = { reason: 'draining', error: new ChatError('SERVER_SHUTDOWN', 'this instance is shutting down; connect again (another instance will take it)') };

export class RealtimeEndpoints {
  private readonly connections = new Set<StompConnection>();
  private readonly wss: WebSocketServer;
  private readonly sockjsHandler: (req: IncomingMessage, res: ServerResponse | Duplex, head?: Buffer) => boolean;
  private readonly sessions = new SockJsSessionTable();
  private readonly pending: PendingConnections;
  /** SockJS WebSocket upgrades waiting for sockjs-node's `connection`, by the TCP peer they came from. */
  private readonly upgrades = new Map<string, { slot: PendingSlot; socket: Duplex }>();
  /** What to do when a connection's CONNECT went through. */
  private readonly onAuthenticated = new WeakMap<StompConnection, () => void>();
  private readonly handler: StompHandler;
  private readonly trustProxy: TrustProxy;
  private readonly stompOptions: StompConnectionOptions;
  /** Largest WebSocket message: one frame in its envelope. */
  private readonly messageLimit: number;
  private readonly maxXhrSendBytes: number;

  constructor(private readonly options: RealtimeEndpointsOptions) {
    this.stompOptions = {
      ...DEFAULT_STOMP_OPTIONS,
      ...options.stomp,
      onInternalError: (err) => options.logger.error({ err }, 'STOMP frame handling failed'),
      stats: {
        frameIn: (command) => options.metrics.stompFrames.inc({ direction: 'in', command }),
        frameOut: (command) => options.metrics.stompFrames.inc({ direction: 'out', command }),
        frameHandled: (command, seconds) => options.metrics.stompFrameDuration.observe({ command }, seconds),
      },
    };
    const frameLimit = this.stompOptions.limits?.maxFrameSize ?? DEFAULT_DECODER_LIMITS.maxFrameSize;
    this.messageLimit = frameLimit + ENVELOPE_SLACK_BYTES;
    // After CONNECT a client batches the frames it queued while one xhr_send was in flight, and JSON
    // escaping can grow a frame up to 6× (\u0000); the decoder still enforces the frame limit.
    this.maxXhrSendBytes = options.maxXhrSendBytes ?? frameLimit * 6 + 1024;
    this.pending = new PendingConnections({ ...DEFAULT_PENDING_LIMITS, ...options.pending });
    this.trustProxy = options.trustProxy ?? compileTrustProxy(['loopback']);
    this.handler = withConnectedHook(options.handler, (conn) => this.onAuthenticated.get(conn)?.());

    this.wss = new WebSocketServer({
      noServer: true,
      // Slack over the frame limit so a slightly oversized frame gets a STOMP ERROR from the decoder.
      maxPayload: this.messageLimit,
      perMessageDeflate: false,
      clientTracking: false,
      // ws would pick the first protocol offered; prefer STOMP 1.2 whatever the client's order.
      handleProtocols: (offered) => STOMP_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
    });

    const server = sockjs.createServer({
      prefix: '/ws',
      websocket: true,
      heartbeat_delay: options.sockjsHeartbeatMs ?? 25_000,
      disconnect_delay: SOCKJS_DISCONNECT_DELAY_MS,
      // faye-websocket's default is 64 MiB per message, buffered before anyone sees it.
      faye_server_options: { maxLength: this.messageLimit },
      log: (severity: string, line: string) => {
        if (severity === 'error') options.logger.warn({ component: 'sockjs' }, line);
      },
    } as sockjs.ServerOptions);
    server.on('connection', (conn) => {
      if (conn) this.acceptSockJs(conn);
    });
    const listener = (server as unknown as { listener(o?: object): { getHandler(): RealtimeEndpoints['sockjsHandler'] } }).listener();
    this.sockjsHandler = listener.getHandler();
  }

  /** Takes HTTP requests under /ws (SockJS); returns false for anything else. */
  private closing = false;

  handleRequest(req: IncomingMessage, res: ServerResponse): boolean {
    const route = routeWs(req.method ?? '', req.url ?? '', false);
    if (route.kind === 'not-ours') return false;
    if (this.closing) return this.refuse(res, DRAINING_REFUSAL);
    if (route.kind === 'refused') return this.refuse(res, route);
    if (!this.originAllowed(req)) return this.refuse(res, ORIGIN_REFUSAL);
    if (route.kind === 'sockjs-info') return this.passToSockJs(req, res);
    if (route.kind !== 'sockjs-session') return this.refuse(res, { reason: 'upgrade_required', error: new ChatError('VALIDATION_FAILED', 'this endpoint takes a WebSocket upgrade') });
    // A CORS preflight carries no cookies, credentials or frames, and sockjs-node creates nothing for it.
    if (route.preflight) return this.passToSockJs(req, res);

    const client = this.clientOf(req);
    let entry = this.sessions.get(route.session);
    if (entry) {
      if (!entry.admits(client)) {
        if (entry.callerEmail) this.options.logger.info({ caller: entry.callerEmail, address: client.address }, 'request for an authenticated SockJS session from another client refused');
        return this.refuse(res, { reason: 'session_bound_elsewhere', error: new ChatError('ORIGIN_NOT_ALLOWED', 'this SockJS session belongs to another client') });
      }
      // The client may still fetch the frames that ended the session; after that, sockjs-node's own
      // disconnect timer may run out, which no request of ours restarts.
      if (entry.endedAt !== undefined && Date.now() - entry.endedAt > SOCKJS_DISCONNECT_DELAY_MS) {
        return this.refuse(res, { reason: 'session_ended', error: new ChatError('SESSION_NOT_FOUND', 'this SockJS session has ended') });
      }
    }
    if (route.transport === 'xhr_send') {
      if (!entry) return this.refuse(res, { reason: 'session_not_found', error: new ChatError('SESSION_NOT_FOUND', 'no such SockJS session') });
      void this.xhrSend(req, res, entry);
      return true;
    }
    if (!entry) {
      const slot = this.admit(client.address);
      if (!('release' in slot)) return this.refuse(res, slot);
      entry = this.sessions.open(route.session, client, slot);
      this.forgetIfNeverOpened(entry);
    }
    return this.passToSockJs(req, res);
  }

  /** Takes WebSocket upgrades; what is not ours or not allowed gets an HTTP refusal. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const route = routeWs(req.method ?? '', req.url ?? '', true);
    if (this.closing) return this.refuseUpgrade(socket, DRAINING_REFUSAL);
    if (route.kind === 'refused') return this.refuseUpgrade(socket, route);
    if (route.kind !== 'raw-websocket' && route.kind !== 'sockjs-session') {
      return this.refuseUpgrade(socket, { reason: 'route_not_found', error: new ChatError('ROUTE_NOT_FOUND', 'no WebSocket endpoint here') });
    }
    if (!this.originAllowed(req)) return this.refuseUpgrade(socket, ORIGIN_REFUSAL);
    // faye-websocket would also speak the pre-RFC drafts (hixie-75/76) and their parsers.
    if (req.headers['sec-websocket-version'] !== '13') {
      return this.refuseUpgrade(socket, { reason: 'websocket_version', error: new ChatError('VALIDATION_FAILED', 'only RFC 6455 WebSockets (version 13)') });
    }
    const slot = this.admit(this.clientOf(req).address);
    if (!('release' in slot)) return this.refuseUpgrade(socket, slot);
    socket.once('close', slot.release);
    if (route.kind === 'raw-websocket') {
      this.wss.handleUpgrade(req, socket, head, (ws) => this.acceptWebSocket(ws, slot));
      this.capPreConnectBytes(socket, head, slot);
      return;
    }
    // sockjs-node announces the connection later, knowing only the TCP peer: match it on that.
    const peer = peerKey(socket);
    this.upgrades.set(peer, { slot, socket });
    socket.once('close', () => {
      if (this.upgrades.get(peer)?.slot === slot) this.upgrades.delete(peer);
    });
    this.sockjsHandler(req, socket, head);
    this.capPreConnectBytes(socket, head, slot);
  }

  /**
   * Counts the bytes a WebSocket sends until it authenticates and cuts it past PRE_CONNECT_BYTES.
   * Counted on the TCP socket, after the WebSocket library's own listener (attached above, in the
   * same tick): a message still in progress is invisible higher up, and it is what would pile up.
   */
  private capPreConnectBytes(socket: Duplex, head: Buffer, slot: PendingSlot): void {
    let received = head.length;
    const count = (chunk: Buffer): void => {
      if (slot.released) {
        socket.off('data', count);
        return;
      }
      received += chunk.length;
      if (received > PRE_CONNECT_BYTES) {
        this.options.metrics.realtimeClosed.inc({ reason: 'pre_connect_bytes' });
        socket.off('data', count);
        socket.destroy();
      }
    };
    socket.on('data', count);
  }

  /** Ends every connection with an ERROR frame, so clients reconnect elsewhere. */
  /** Refuses new connections (503 SERVER_SHUTDOWN: the balancer or client tries another instance), then ends the open ones. */
  async close(): Promise<void> {
    this.closing = true;
    for (const conn of [...this.connections]) conn.fail(new ChatError('SERVER_SHUTDOWN', 'the server is shutting down; reconnect'));
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  private acceptWebSocket(ws: WebSocket, slot: PendingSlot): void {
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
        // Backpressure: while paused the kernel's receive buffer fills and TCP slows the client down.
        pause: () => ws.pause(),
        resume: () => ws.resume(),
      },
      this.handler,
      this.stompOptions,
      'websocket',
    );
    this.track(conn);
    this.holdUntilAuthenticated(conn, slot, () => ws.terminate());
    // Attached synchronously: a frame arriving before the listener would be lost.
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => conn.receive(toBuffer(data)));
    ws.on('close', () => conn.transportClosed());
    ws.on('error', () => conn.transportClosed());
  }

  private acceptSockJs(sock: sockjs.Connection): void {
    // Every connection sockjs-node announces was admitted by us: an HTTP session has its entry, a
    // WebSocket its slot. One that has neither got past us somehow and is not served.
    let entry: SockJsSessionEntry | undefined;
    let upgrade: { slot: PendingSlot; socket: Duplex } | undefined;
    if (sock.protocol === 'websocket') {
      const peer = `${sock.remoteAddress}|${sock.remotePort}`;
      upgrade = this.upgrades.get(peer);
      this.upgrades.delete(peer);
    } else {
      const id = SOCKJS_SESSION_PATH.exec(sock.pathname ?? '')?.[1];
      entry = id === undefined ? undefined : this.sessions.get(id);
      if (entry?.sock) entry = undefined;
    }
    if (!entry && !upgrade) {
      this.options.logger.error({ protocol: sock.protocol, path: sock.pathname }, 'SockJS connection that was not admitted; closing it');
      sock.close('1011', 'not admitted');
      return;
    }
    const conn = new StompConnection(
      {
        send: (data) => sock.write(data.toString('utf8')),
        bufferedBytes: () => sockJsBacklog(sock),
        close: () => sock.close('1000', 'closed'),
        // Over its WebSocket we can stop reading the socket; HTTP transports cannot pause (the backlog's hard limit applies).
        pause: upgrade ? () => upgrade.socket.pause() : undefined,
        resume: upgrade ? () => upgrade.socket.resume() : undefined,
      },
      this.handler,
      this.stompOptions,
      'sockjs',
    );
    this.track(conn);
    if (entry) {
      const session = entry;
      session.sock = sock;
      session.conn = conn;
      this.onAuthenticated.set(conn, () => session.authenticated(conn.caller?.email ?? ''));
      conn.onClosed(() => (session.endedAt = Date.now()));
    } else {
      const { slot, socket } = upgrade!;
      this.holdUntilAuthenticated(conn, slot, () => socket.destroy());
    }
    // sockjs-node hands on whatever JSON value a client put in its array, not only strings.
    sock.on('data', (data: unknown) => {
      if (typeof data === 'string') conn.receive(data);
      else conn.fail(new ChatError('MALFORMED_FRAME', 'SockJS messages must be strings'));
    });
    sock.on('close', () => {
      conn.transportClosed();
      if (entry) this.sessions.close(entry);
    });
  }

  private track(conn: StompConnection): void {
    this.connections.add(conn);
    conn.onClosed(() => this.connections.delete(conn));
  }

  /** The slot goes back on CONNECT; a connection that ends without one is cut after a short grace. */
  private holdUntilAuthenticated(conn: StompConnection, slot: PendingSlot, cut: () => void): void {
    let authenticated = false;
    this.onAuthenticated.set(conn, () => {
      authenticated = true;
      slot.release();
    });
    conn.onClosed(() => {
      if (!authenticated) setTimeout(cut, UNAUTHENTICATED_CLOSE_GRACE_MS).unref();
    });
  }

  private clientOf(req: IncomingMessage): SockJsClient {
    return { address: clientAddress(req, this.trustProxy), userAgent: req.headers['user-agent'] ?? '', origin: req.headers.origin };
  }

  private admit(address: string): PendingSlot | Refusal {
    const slot = this.pending.admit(address);
    if (slot === 'pending_limit') {
      return { reason: slot, error: new ChatError('TOO_MANY_PENDING_CONNECTIONS', `${this.pending.limits.max} connections are waiting to authenticate; retry shortly`) };
    }
    if (slot === 'pending_limit_per_address') {
      return { reason: slot, error: new ChatError('TOO_MANY_PENDING_FROM_ADDRESS', `${this.pending.limits.maxPerAddress} connections from this address are waiting to authenticate; retry shortly`) };
    }
    return slot;
  }

  /** sockjs-node announces a session on the next tick; an entry it never announced is dropped. */
  private forgetIfNeverOpened(entry: SockJsSessionEntry): void {
    setTimeout(() => {
      if (!entry.sock) this.sessions.close(entry);
    }, SOCKJS_DISCONNECT_DELAY_MS).unref();
  }

  /**
   * sockjs-node's xhr_send, minus its unbounded buffering: a single xhr_send per session at a time,
   * its body counted as it streams and refused past the cap (one frame's worth before CONNECT, a
   * batch of frames after), then each message handed to the session's connection.
   */
  private async xhrSend(req: IncomingMessage, res: ServerResponse, entry: SockJsSessionEntry): Promise<void> {
    if (entry.sending) {
      this.refuse(res, { reason: 'xhr_send_in_progress', error: new ChatError('RATE_LIMITED', 'one xhr_send at a time per SockJS session') });
      discardRestOfBody(req, REFUSED_BODY_LINGER_MS);
      return;
    }
    const preConnect = entry.callerEmail === undefined;
    const cap = preConnect ? Math.max(0, PRE_CONNECT_BYTES - entry.preConnectBytes) : this.maxXhrSendBytes;
    entry.sending = true;
    const read = await readCappedBody(req, cap).finally(() => (entry.sending = false));
    if (read.kind === 'aborted') return;
    if (read.kind === 'too-large') {
      const detail = preConnect ? `before CONNECT a SockJS session may send ${PRE_CONNECT_BYTES} bytes in all` : `xhr_send bodies are limited to ${cap} bytes`;
      this.refuse(res, { reason: 'xhr_send_too_large', error: new ChatError('BODY_TOO_LARGE', detail) });
      discardRestOfBody(req, REFUSED_BODY_LINGER_MS);
      return;
    }
    if (preConnect) entry.preConnectBytes += read.body.length;
    let messages: unknown;
    try {
      messages = JSON.parse(read.body.toString('utf8'));
    } catch {
      this.refuse(res, { reason: 'xhr_send_malformed', error: new ChatError('MALFORMED_JSON', 'an xhr_send body is a JSON array of strings') });
      return;
    }
    if (!Array.isArray(messages) || !messages.every((m) => typeof m === 'string')) {
      this.refuse(res, { reason: 'xhr_send_malformed', error: new ChatError('VALIDATION_FAILED', 'an xhr_send body is a JSON array of strings') });
      return;
    }
    const conn = entry.conn;
    if (!conn?.isOpen || entry.sock?.readyState !== SOCKJS_OPEN) {
      this.refuse(res, { reason: 'session_ended', error: new ChatError('SESSION_NOT_FOUND', 'this SockJS session has ended') });
      return;
    }
    for (const message of messages as string[]) conn.receive(message);
    const origin = req.headers.origin;
    res.writeHead(204, {
      'content-type': 'text/plain; charset=UTF-8',
      'cache-control': 'no-store, no-cache, no-transform, must-revalidate, max-age=0',
      // As sockjs-node answers: sockjs-client sends with credentials, which needs the Origin echoed.
      ...(origin ? { 'access-control-allow-origin': origin, 'access-control-allow-credentials': 'true' } : { 'access-control-allow-origin': '*' }),
      vary: 'Origin',
    });
    res.end();
  }

  private passToSockJs(req: IncomingMessage, res: ServerResponse): true {
    if (!this.sockjsHandler(req, res)) this.refuse(res, { reason: 'route_not_found', error: new ChatError('ROUTE_NOT_FOUND', 'no such SockJS route') });
    return true;
  }

  private refuse(res: ServerResponse, refusal: Refusal): true {
    this.options.metrics.realtimeClosed.inc({ reason: refusal.reason });
    if (!res.headersSent) {
      const problem = toProblem(refusal.error);
      res.writeHead(problem.status, { 'content-type': 'application/problem+json' });
      res.end(JSON.stringify(problem));
    }
    return true;
  }

  private refuseUpgrade(socket: Duplex, refusal: Refusal): void {
    this.options.metrics.realtimeClosed.inc({ reason: refusal.reason });
    const problem = toProblem(refusal.error);
    const body = JSON.stringify(problem);
    socket.end(
      `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? ''}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }

  private originAllowed(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    if (this.options.allowedOrigins.includes('*')) return true;
    return this.options.allowedOrigins.includes(origin);
  }
}

const ORIGIN_REFUSAL: Refusal = { reason: 'origin_not_allowed', error: new ChatError('ORIGIN_NOT_ALLOWED', 'this Origin may not use the chat endpoint') };

function peerKey(socket: Duplex): string {
  const tcp = socket as Duplex & { remoteAddress?: string; remotePort?: number };
  return `${tcp.remoteAddress}|${tcp.remotePort}`;
}

/**
 * The StompHandler the connections get: the application's, with `connected` also telling us, so a
 * pending slot is given back the moment CONNECT succeeds. A proxy rather than a delegating class
 * so the handler interface can grow without this wrapper silently dropping a method.
 */
function withConnectedHook(handler: StompHandler, connectedHook: (conn: StompConnection) => void): StompHandler {
  const connected: StompHandler['connected'] = async (conn) => {
    await handler.connected(conn);
    connectedHook(conn);
  };
  const bound = new Map<PropertyKey, unknown>();
  return new Proxy(handler, {
    get(target, property) {
      if (property === 'connected') return connected;
      const cached = bound.get(property);
      if (cached !== undefined) return cached;
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const method = (value as (...args: unknown[]) => unknown).bind(target);
      bound.set(property, method);
      return method;
    },
  });
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
