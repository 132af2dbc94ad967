/**
 * Who is signed in, kept in sessionStorage so a reload stays signed in (and a closed tab does not).
 * A dev sign-in keeps only the email and name: each connection asks /dev/token for a fresh token.
 */
import type { ChatTransport } from '../../client/index.js';
import { CHAT_TRANSPORTS } from '../../client/index.js';

export type SignIn = { kind: 'dev'; email: string; displayName: string } | { kind: 'token'; token: string };

const SIGN_IN_KEY = 'chat.signIn';
const TRANSPORT_KEY = 'chat.transport';
const OPEN_SESSION_KEY = 'chat.openSession';

export function loadSignIn(): SignIn | undefined {
  try {
    const value = JSON.parse(sessionStorage.getItem(SIGN_IN_KEY) ?? 'null') as SignIn | null;
    if (value?.kind === 'dev' && typeof value.email === 'string') return value;
    if (value?.kind === 'token' && typeof value.token === 'string') return value;
  } catch {
    // unreadable: sign in again
  }
  return undefined;
}

export function saveSignIn(signIn: SignIn | undefined): void {
  if (signIn) sessionStorage.setItem(SIGN_IN_KEY, JSON.stringify(signIn));
  else {
    sessionStorage.removeItem(SIGN_IN_KEY);
    sessionStorage.removeItem(OPEN_SESSION_KEY);
  }
}

/** `?transport=` wins (handy for links and tests), then the last choice, then WebSocket. */
export function loadTransport(): ChatTransport {
  const fromUrl = new URLSearchParams(location.search).get('transport');
  const stored = sessionStorage.getItem(TRANSPORT_KEY);
  for (const candidate of [fromUrl, stored]) if (CHAT_TRANSPORTS.includes(candidate as ChatTransport)) return candidate as ChatTransport;
  return 'websocket';
}

export function saveTransport(transport: ChatTransport): void {
  sessionStorage.setItem(TRANSPORT_KEY, transport);
}

export function loadOpenSession(): string | undefined {
  return sessionStorage.getItem(OPEN_SESSION_KEY) ?? undefined;
}

export function saveOpenSession(sessionId: string | undefined): void {
  if (sessionId) sessionStorage.setItem(OPEN_SESSION_KEY, sessionId);
  else sessionStorage.removeItem(OPEN_SESSION_KEY);
}
