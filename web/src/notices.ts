/**
 * What the page tells the user about itself: the connection state (header), a banner while the
 * connection is down, and error messages that say what went wrong and what to do.
 */
import type { ChatClientError, ChatTransport, ConnectionState, ConnectionStateDetail } from '../../client/index.js';
import { byId, h } from './dom.js';

const TRANSPORT_NAMES: Record<ChatTransport, string> = {
  websocket: 'WebSocket',
  sockjs: 'SockJS',
  'sockjs-xhr-streaming': 'SockJS xhr-streaming',
};

const FRIENDLY: Record<string, string> = {
  UNAUTHENTICATED: 'The service refused your sign-in. Sign in again (or paste a fresh token).',
  TOKEN_EXPIRED: 'Your sign-in expired; reconnecting with a fresh one.',
  TOKEN_UNAVAILABLE: 'Could not get a sign-in token from the service.',
  NETWORK: 'Cannot reach the chat service. Check your connection; the page keeps trying.',
  TIMEOUT: 'The chat service did not answer in time.',
  RECOVERY_FAILED: 'Could not load the messages missed while offline; retrying.',
  SELF_CHAT: 'You cannot start a chat with yourself.',
  NOT_A_PARTICIPANT: 'You are not part of that conversation.',
  SESSION_NOT_FOUND: 'That conversation does not exist.',
  CONTENT_TOO_LONG: 'That message is too long.',
  CONTENT_EMPTY: 'A message cannot be empty.',
  RATE_LIMITED: 'Too many requests; slow down for a moment.',
  PROFILE_NOT_FOUND: 'No one with that email is known for this intent.',
  PROFILE_SERVICE_UNAVAILABLE: 'The profile service is unavailable; try again shortly.',
  STORE_UNAVAILABLE: 'The chat service cannot reach its database; try again shortly.',
  PEER_BLOCKED: 'This conversation is blocked',
  MESSAGE_NOT_FOUND: 'That message is not in this conversation.',
};

/** Failures of the way to the service: the same advice whatever the detail, and they pass. */
const CONNECTIVITY = new Set(['NETWORK', 'TIMEOUT', 'TOKEN_UNAVAILABLE', 'RECOVERY_FAILED', 'CONNECTION_LOST']);

export const errorCode = (error: unknown): string | undefined =>
  error && typeof error === 'object' && 'code' in error && typeof error.code === 'string' ? error.code : undefined;

export const isConnectivityError = (error: unknown): boolean => CONNECTIVITY.has(errorCode(error) ?? '');

/** One sentence for a person, with the service's own detail when it adds something. */
export function describeError(error: ChatClientError | Error): string {
  const code = errorCode(error);
  const friendly = code ? FRIENDLY[code] : undefined;
  if (friendly && (isConnectivityError(error) || !error.message || friendly.includes(error.message))) return friendly;
  if (friendly) return `${friendly} (${error.message})`;
  return code && code !== 'UNKNOWN' ? `${error.message} [${code}]` : error.message || 'Something went wrong.';
}

export class Notices {
  private readonly connection = byId('connection');
  private readonly banner = byId('banner');
  private readonly errors = byId('errors');
  private countdown: ReturnType<typeof setInterval> | undefined;

  showConnection(state: ConnectionState | 'signed-out', transport: ChatTransport, detail?: ConnectionStateDetail): void {
    clearInterval(this.countdown);
    const labels: Record<ConnectionState | 'signed-out', string> = {
      'signed-out': 'Signed out',
      idle: 'Starting…',
      connecting: 'Connecting…',
      connected: `Connected · ${TRANSPORT_NAMES[transport]}`,
      reconnecting: 'Reconnecting…',
      disconnected: 'Disconnected',
    };
    this.connection.textContent = labels[state];
    this.connection.dataset.state = state;
    if (state === 'reconnecting' || (state === 'connecting' && (detail?.attempt ?? 0) > 0)) {
      const until = Date.now() + (detail?.delayMs ?? 0);
      const render = () => {
        const seconds = Math.ceil((until - Date.now()) / 1000);
        this.banner.textContent = `Connection lost — reconnecting${seconds > 0 ? ` in ${seconds} s` : ' now'}… Messages you send now are delivered when it is back.`;
      };
      render();
      if (detail?.delayMs) this.countdown = setInterval(render, 500);
      this.banner.hidden = false;
      this.banner.dataset.kind = 'warning';
    } else if (state === 'disconnected' && detail?.error) {
      this.banner.textContent = 'Disconnected. Sign in again to continue.';
      this.banner.hidden = false;
      this.banner.dataset.kind = 'error';
    } else {
      this.banner.hidden = true;
      this.banner.textContent = '';
    }
  }

  /**
   * Shows an error until dismissed or replaced by the same one; keeps the last three. A transient
   * one (about the connection) goes away by itself once connected again.
   */
  error(message: string, options: { transient?: boolean } = {}): void {
    for (const existing of this.errors.querySelectorAll<HTMLElement>('.error')) {
      if (existing.dataset.message === message) existing.remove();
    }
    const dismiss = h('button', { type: 'button', class: 'error__dismiss', 'aria-label': 'Dismiss this message' }, '×');
    const item = h('p', { class: 'error', 'data-message': message, 'data-transient': options.transient ? 'true' : undefined }, h('span', {}, message), dismiss);
    dismiss.addEventListener('click', () => item.remove());
    this.errors.append(item);
    while (this.errors.children.length > 3) this.errors.firstElementChild?.remove();
  }

  clearTransientErrors(): void {
    for (const item of this.errors.querySelectorAll('.error[data-transient]')) item.remove();
  }

  clearErrors(): void {
    this.errors.replaceChildren();
  }
}
