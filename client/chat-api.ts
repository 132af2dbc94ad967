/**
 * REST helpers for the chat service (README "HTTP API"). Each call carries `Authorization: Bearer`
 * with the last token the provider gave; a 401 asks the provider once for a fresh token and repeats
 * the call, so an expired token is replaced without the caller noticing.
 */
import { ChatClientError } from './chat-client-error.js';
import type { ChatMessage, DevToken, HistoryPage, PeerPresence, Problem, SessionInfo, SessionSummary, SyncPage, UnreadMessages, UnreadTotals } from './chat-types.js';

export interface ChatApiOptions {
  baseUrl: string;
  tokenProvider: () => Promise<string>;
  /** Defaults to the global fetch (browsers, Node 18+). */
  fetch?: typeof fetch;
  /** Per request; default 15 s. */
  timeoutMs?: number;
}

export interface HistoryQuery {
  limit?: number;
  before?: number;
  after?: number;
}

export class ChatApi {
  private token: string | undefined;
  private readonly baseUrl: string;
  private readonly fetchFn: typeof fetch;
  private readonly timeoutMs: number;

  constructor(private readonly options: ChatApiOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.fetchFn = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.timeoutMs = options.timeoutMs ?? 15_000;
  }

  /** Shares a token just obtained elsewhere (the STOMP connection), saving a provider call. */
  useToken(token: string): void {
    this.token = token;
  }

  initSession(toEmail: string, intent: string): Promise<SessionInfo> {
    return this.request('POST', '/api/chat/init', { toEmail, intent });
  }

  async listSessions(): Promise<SessionSummary[]> {
    return (await this.request<{ sessions: SessionSummary[] }>('GET', '/api/chat/sessions')).sessions;
  }

  /** Newest first. `before` pages back; `after` catches up (the lowest seqs above it come first). */
  history(sessionId: string, query: HistoryQuery = {}): Promise<HistoryPage> {
    const params = new URLSearchParams();
    for (const key of ['limit', 'before', 'after'] as const) if (query[key] !== undefined) params.set(key, String(query[key]));
    const qs = params.toString() ? `?${params.toString()}` : '';
    return this.request('GET', `/api/chat/${encodeURIComponent(sessionId)}/history${qs}`);
  }

  unread(sessionId: string): Promise<UnreadMessages> {
    return this.request('GET', `/api/chat/${encodeURIComponent(sessionId)}/unread`);
  }

  /** The other participant's presence. */
  async presence(sessionId: string): Promise<PeerPresence> {
    return (await this.request<{ peer: PeerPresence }>('GET', `/api/chat/${encodeURIComponent(sessionId)}/presence`)).peer;
  }

  markSeen(sessionId: string, upToSeq: number): Promise<{ sessionId: string; upToSeq: number; updated: number }> {
    return this.request('POST', `/api/chat/${encodeURIComponent(sessionId)}/seen`, { upToSeq });
  }

  /** Messages from others I have not seen, over all my sessions, and in how many sessions. */
  unreadCount(): Promise<UnreadTotals> {
    return this.request('GET', '/api/chat/unread-count');
  }

  /** Blocks the session: neither side can send into it, and the peer's typing stops reaching me. Idempotent. */
  block(sessionId: string): Promise<{ blocked: boolean }> {
    return this.request('POST', `/api/chat/${encodeURIComponent(sessionId)}/block`);
  }

  unblock(sessionId: string): Promise<{ blocked: boolean }> {
    return this.request('DELETE', `/api/chat/${encodeURIComponent(sessionId)}/block`);
  }

  /** Reports the session, or one of its messages (its content is kept as it is now), to moderation. */
  report(sessionId: string, reason: string, messageId?: string): Promise<{ reportId: string }> {
    return this.request('POST', `/api/chat/${encodeURIComponent(sessionId)}/report`, { reason, ...(messageId ? { messageId } : {}) });
  }

  /** The REST send (the STOMP send of ChatClient is the usual path); idempotent on clientMessageId. */
  sendMessage(sessionId: string, content: string, clientMessageId: string): Promise<ChatMessage> {
    return this.request('POST', '/api/chat/message', { sessionId, content, clientMessageId });
  }

  /** Edits my own message; resolves to it as it is now. */
  editMessage(sessionId: string, messageId: string, content: string): Promise<ChatMessage> {
    return this.request('PATCH', `/api/chat/${encodeURIComponent(sessionId)}/messages/${encodeURIComponent(messageId)}`, { content });
  }

  /** Deletes my own message; resolves to its tombstone (also when it was deleted already). */
  deleteMessage(sessionId: string, messageId: string): Promise<ChatMessage> {
    return this.request('DELETE', `/api/chat/${encodeURIComponent(sessionId)}/messages/${encodeURIComponent(messageId)}`);
  }

  /** One page of changes after `since`; without it, no events and a token for "from now on". */
  sync(since?: string, limit?: number): Promise<SyncPage> {
    const params = new URLSearchParams();
    if (since !== undefined) params.set('since', since);
    if (limit !== undefined) params.set('limit', String(limit));
    const qs = params.toString() ? `?${params.toString()}` : '';
    return this.request('GET', `/api/chat/sync${qs}`);
  }

  private async request<T>(method: string, path: string, body?: unknown, retried = false): Promise<T> {
    const token = this.token ?? (this.token = await this.options.tokenProvider());
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetchJson(this.fetchFn, `${this.baseUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }, this.timeoutMs);
    if (res.status === 401 && !retried) {
      this.token = undefined;
      return this.request(method, path, body, true);
    }
    if (!res.ok) throw ChatClientError.fromProblem(res.body as Problem, res.status);
    return res.body as T;
  }
}

/** `POST /dev/token`: only the embedded default (dev issuer) has it; elsewhere it is a 404. */
export async function fetchDevToken(baseUrl: string, email: string, displayName?: string, fetchFn: typeof fetch = (i, o) => globalThis.fetch(i, o)): Promise<DevToken> {
  const res = await fetchJson(
    fetchFn,
    `${baseUrl.replace(/\/+$/, '')}/dev/token`,
    { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, ...(displayName ? { displayName } : {}) }) },
    15_000,
  );
  if (!res.ok) throw ChatClientError.fromProblem(res.body as Problem, res.status);
  return res.body as DevToken;
}

async function fetchJson(fetchFn: typeof fetch, url: string, init: RequestInit, timeoutMs: number): Promise<{ ok: boolean; status: number; body: unknown }> {
  let res: Response;
  try {
    res = await fetchFn(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
    throw new ChatClientError(timedOut ? 'TIMEOUT' : 'NETWORK', timedOut ? `no answer from ${url} within ${timeoutMs} ms` : `could not reach ${url}`);
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = { detail: text.slice(0, 200) };
  }
  if (!res.ok && (typeof body !== 'object' || body === null)) body = {};
  return { ok: res.ok, status: res.status, body };
}
