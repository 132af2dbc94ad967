/** The chat service's TypeScript client SDK: real time over STOMP (WebSocket or SockJS) plus REST. */
export { ChatClient, newClientMessageId, type ChatClientEvents, type ChatClientOptions, type ConnectionState, type ConnectionStateDetail, type OutgoingMessage } from './chat-client.js';
export { ChatApi, fetchDevToken, type ChatApiOptions, type HistoryQuery } from './chat-api.js';
export { ChatClientError } from './chat-client-error.js';
export { CONNECTION_CODES, isTerminal, type ConnectionCode } from './connection-codes.js';
export { SessionSequencer } from './session-sequencer.js';
export { CHAT_TRANSPORTS, STOMP_SUBPROTOCOLS, type ChatTransport, type WebSocketFactory } from './stomp-transport.js';
export type * from './chat-types.js';
