import type { Problem } from './chat-types.js';

/**
 * Every failure the SDK reports: a refused REST call or send (the service's problem `code`), a lost
 * connection, or a client-side condition (`CLIENT_CLOSED`, `NETWORK`, `TIMEOUT`).
 */
export class ChatClientError extends Error {
  override name = 'ChatClientError';

  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
    readonly details: { clientMessageId?: string; sessionId?: string; problem?: Problem } = {},
  ) {
    super(message);
  }

  static fromProblem(problem: Problem, fallbackStatus?: number, sessionId?: string): ChatClientError {
    const status = typeof problem.status === 'number' ? problem.status : fallbackStatus;
    const message = problem.detail || problem.title || `request failed${status ? ` (${status})` : ''}`;
    const clientMessageId = typeof problem.clientMessageId === 'string' ? problem.clientMessageId : undefined;
    return new ChatClientError(problem.code ?? 'UNKNOWN', message, status, { problem, clientMessageId, sessionId });
  }

  /** Worth repeating later with the same clientMessageId: the service or the way to it failed. */
  get retryable(): boolean {
    if (this.code === 'NETWORK' || this.code === 'TIMEOUT' || this.code === 'RATE_LIMITED') return true;
    return this.status !== undefined && this.status >= 500;
  }
}
