/**
 * What a request under `/ws` is, decided on the one spelling of its URL that sockjs-node routes on.
 *
 * sockjs-node matches its routes against `url.parse(req.url).pathname`, which is not the raw URL:
 * backslashes become slashes, `#…` is dropped, and other legacy-parser quirks apply. A policy
 * decided on the raw URL (session binding, body caps, disabled transports) could therefore be
 * dodged by a spelling that sockjs-node routes somewhere else. Rather than re-implement that parser
 * and hope to agree with it, a URL under `/ws` is refused unless the legacy parser leaves it exactly
 * as it came, and then only an allow-list of route shapes passes, with ids limited to characters
 * no parser rewrites. What reaches sockjs-node is then the route we decided on, by construction.
 */
import { parse as parseLegacyUrl } from 'node:url';
import { ChatError } from '../chat/chat-errors.js';

/** The transports we let through; JSONP and htmlfile are off (script injection surface). */
export type SockJsTransport = 'xhr' | 'xhr_streaming' | 'xhr_send' | 'eventsource' | 'websocket';

export type WsRoute =
  /** Not under /ws: someone else's request. */
  | { kind: 'not-ours' }
  /** `/ws` or `/ws/websocket` upgrade: raw WebSocket STOMP, served by `ws`. */
  | { kind: 'raw-websocket' }
  /** `/ws/info` (GET, or the OPTIONS preflight): served by sockjs-node, creates nothing. */
  | { kind: 'sockjs-info' }
  /** `/ws/<server>/<session>/<transport>` with a method that transport takes. */
  | { kind: 'sockjs-session'; session: string; transport: SockJsTransport; preflight: boolean }
  /** Answered with the error's problem; `reason` labels the refusal in metrics. */
  | { kind: 'refused'; reason: string; error: ChatError };

/** Anything that parses or normalises to something under /ws, in any case: we answer it. */
const UNDER_WS = /^[/\\]ws(?=$|[/\\?#])/i;
/** sockjs-client sends a 3-digit server id and an 8-character session id; custom ids stay in this set. */
const SESSION_ROUTE = /^\/ws\/[A-Za-z0-9_-]{1,32}\/([A-Za-z0-9_-]{1,64})\/([a-z_]+)$/;
const IFRAME_PAGE = /^\/ws\/iframe[0-9a-z._-]*\.html$/i;
const DISABLED_TRANSPORTS = new Set(['jsonp', 'jsonp_send', 'htmlfile']);
const TRANSPORT_METHODS: Readonly<Record<SockJsTransport, readonly string[]>> = {
  xhr: ['POST', 'OPTIONS'],
  xhr_streaming: ['POST', 'OPTIONS'],
  xhr_send: ['POST', 'OPTIONS'],
  eventsource: ['GET'],
  websocket: [],
};

const notFound = (reason: string, detail: string): WsRoute => ({ kind: 'refused', reason, error: new ChatError('ROUTE_NOT_FOUND', detail) });

/** Routes an HTTP request (`upgrade` false) or a WebSocket upgrade (`upgrade` true). */
export function routeWs(method: string, rawUrl: string, upgrade: boolean): WsRoute {
  if (!UNDER_WS.test(rawUrl)) return { kind: 'not-ours' };
  const normalised = parseLegacyUrl(rawUrl);
  if (normalised.path !== rawUrl || normalised.hash !== null) {
    return notFound('path_not_normalised', 'the URL must be sent as sockjs-client writes it (no backslash, fragment or other spelling that normalises differently)');
  }
  const path = normalised.pathname ?? '';

  if (upgrade) {
    if (method !== 'GET') return { kind: 'refused', reason: 'method_not_allowed', error: new ChatError('METHOD_NOT_ALLOWED', 'a WebSocket upgrade is a GET') };
    if (path === '/ws' || path === '/ws/websocket') return { kind: 'raw-websocket' };
    const match = SESSION_ROUTE.exec(path);
    if (match?.[2] === 'websocket') return { kind: 'sockjs-session', session: match[1]!, transport: 'websocket', preflight: false };
    return notFound('route_not_found', `no WebSocket endpoint at ${path}`);
  }

  if (path === '/ws' || path === '/ws/websocket') {
    return { kind: 'refused', reason: 'upgrade_required', error: new ChatError('VALIDATION_FAILED', 'this endpoint takes a WebSocket upgrade') };
  }
  if (path === '/ws/info') {
    return method === 'GET' || method === 'OPTIONS' ? { kind: 'sockjs-info' } : methodNotAllowed(path, ['GET', 'OPTIONS']);
  }
  if (IFRAME_PAGE.test(path)) return notFound('iframe_disabled', 'iframe transports are disabled');
  const match = SESSION_ROUTE.exec(path);
  if (!match) return notFound('route_not_found', `no SockJS route ${path}`);
  const [, session, transport] = match as unknown as [string, string, string];
  if (DISABLED_TRANSPORTS.has(transport)) return notFound('transport_disabled', `the ${transport} transport is disabled`);
  if (!Object.hasOwn(TRANSPORT_METHODS, transport)) return notFound('route_not_found', `no SockJS transport ${transport}`);
  const known = transport as SockJsTransport;
  if (known === 'websocket') {
    return { kind: 'refused', reason: 'upgrade_required', error: new ChatError('VALIDATION_FAILED', 'the websocket transport takes a WebSocket upgrade') };
  }
  const methods = TRANSPORT_METHODS[known];
  if (!methods.includes(method)) return methodNotAllowed(path, methods);
  return { kind: 'sockjs-session', session, transport: known, preflight: method === 'OPTIONS' };
}

function methodNotAllowed(path: string, methods: readonly string[]): WsRoute {
  return { kind: 'refused', reason: 'method_not_allowed', error: new ChatError('METHOD_NOT_ALLOWED', `${path} takes ${methods.join(' or ')}`) };
}
