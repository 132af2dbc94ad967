/**
 * Opens the socket under the STOMP client for each transport. SockJS (what browsers behind proxies
 * fall back to) and raw WebSocket (mobile, servers) both end at the service's `/ws` (README, "Real time").
 */
import type { IStompSocket } from '@stomp/stompjs';
import SockJS from 'sockjs-client';

export type ChatTransport = 'websocket' | 'sockjs' | 'sockjs-xhr-streaming';

export const CHAT_TRANSPORTS: readonly ChatTransport[] = ['websocket', 'sockjs', 'sockjs-xhr-streaming'];

/** STOMP 1.2 first: the service negotiates the subprotocol on the raw WebSocket. */
export const STOMP_SUBPROTOCOLS = ['v12.stomp', 'v11.stomp'];

/** Builds a WebSocket; in Node pass `(url, protocols) => new WebSocket(url, protocols)` from `ws`. */
export type WebSocketFactory = (url: string, protocols: string[]) => IStompSocket;

export function openStompSocket(baseUrl: string, transport: ChatTransport, webSocketFactory?: WebSocketFactory): IStompSocket {
  const base = baseUrl.replace(/\/+$/, '');
  switch (transport) {
    case 'websocket': {
      const url = `${base.replace(/^http/i, 'ws')}/ws`;
      if (webSocketFactory) return webSocketFactory(url, STOMP_SUBPROTOCOLS);
      const NativeWebSocket = (globalThis as { WebSocket?: new (url: string, protocols: string[]) => IStompSocket }).WebSocket;
      if (!NativeWebSocket) throw new Error('no global WebSocket here: pass webSocketFactory (e.g. from the ws package)');
      return new NativeWebSocket(url, STOMP_SUBPROTOCOLS);
    }
    case 'sockjs':
      return new SockJS(`${base}/ws`) as unknown as IStompSocket;
    case 'sockjs-xhr-streaming':
      return new SockJS(`${base}/ws`, null, { transports: ['xhr-streaming'] }) as unknown as IStompSocket;
    default: {
      const never: never = transport;
      throw new Error(`unknown transport ${String(never)}`);
    }
  }
}
