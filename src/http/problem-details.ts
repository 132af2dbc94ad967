/**
 * RFC 9457 problem details: every error leaves the HTTP API as application/problem+json, built by
 * the one mapping every wire uses (chat/problem.ts), with the request's path as `instance`.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ChatError } from '../chat/chat-errors.js';
import { type Problem, toProblem } from '../chat/problem.js';

/** The problem for anything a route or Fastify threw. */
export function httpProblem(err: unknown): Problem {
  return toProblem(fromFastify(err));
}

/**
 * Fastify's own refusals (body parsing, size, media type) as catalogue errors. Schema validation
 * errors and everything else pass through: toProblem knows the first and hides the rest.
 */
function fromFastify(err: unknown): unknown {
  if (err instanceof ChatError || !(err instanceof Error)) return err;
  const fe = err as FastifyError & { validation?: unknown };
  if (fe.validation) return err;
  switch (fe.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ChatError('MALFORMED_JSON', 'request body must be valid JSON');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ChatError('BODY_TOO_LARGE', 'request body must be at most 64 KiB');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ChatError('UNSUPPORTED_MEDIA_TYPE', 'send application/json');
    default:
      break;
  }
  if (err instanceof SyntaxError && fe.statusCode === 400) return new ChatError('MALFORMED_JSON', 'request body must be valid JSON');
  if (fe.statusCode === 413) return new ChatError('BODY_TOO_LARGE', 'request body is too large');
  if (fe.statusCode === 415) return new ChatError('UNSUPPORTED_MEDIA_TYPE', 'send application/json');
  if (fe.statusCode === 400) return new ChatError('VALIDATION_FAILED', fe.message);
  return err;
}

export function sendProblem(reply: FastifyReply, request: FastifyRequest, problem: Problem): FastifyReply {
  if (problem.code === 'UNAUTHENTICATED') reply.header('www-authenticate', 'Bearer');
  if (problem.status === 503) reply.header('retry-after', '1');
  if (problem.code === 'RATE_LIMITED' && typeof problem.retryAfterSeconds === 'number') reply.header('retry-after', String(problem.retryAfterSeconds));
  return reply.code(problem.status).type('application/problem+json').send({ ...problem, instance: request.url.split('?')[0] });
}
