/**
 * RFC 9457 problem details: every error leaves the HTTP API as application/problem+json with a
 * stable `code` from the ChatError catalogue.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { CHAT_ERROR_CATALOGUE, ChatError, type ChatErrorCode } from '../chat/chat-errors.js';

export interface ProblemDetails {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  code: ChatErrorCode;
  [extension: string]: unknown;
}

export const problemType = (code: ChatErrorCode): string => `urn:chat-service:problem:${code.toLowerCase().replaceAll('_', '-')}`;

export function problemOf(err: ChatError, instance?: string): ProblemDetails {
  return {
    type: problemType(err.code),
    title: CHAT_ERROR_CATALOGUE[err.code].title,
    status: err.status,
    detail: err.message,
    ...(instance ? { instance } : {}),
    code: err.code,
    ...(err.extra ?? {}),
  };
}

/** Translates framework errors (validation, body parsing, limits) into catalogue errors. */
export function toChatError(err: FastifyError | Error): ChatError {
  if (err instanceof ChatError) return err;
  const fe = err as FastifyError & { validation?: Array<{ instancePath?: string; message?: string; params?: Record<string, unknown> }> };
  if (fe.validation) {
    const errors = fe.validation.map((v) => ({
      field: (v.instancePath || '').replace(/^\//, '').replaceAll('/', '.') || (v.params?.missingProperty as string | undefined) || (v.params?.additionalProperty as string | undefined) || fe.validationContext,
      message: v.message,
    }));
    const first = errors[0];
    const where = fe.validationContext ?? 'request';
    return new ChatError('VALIDATION_FAILED', first ? `${where}${first.field ? ` ${first.field}` : ''}: ${first.message}` : `${where} is not valid`, { errors });
  }
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
  return new ChatError('INTERNAL', 'internal error', undefined, { cause: err });
}

export function sendProblem(reply: FastifyReply, request: FastifyRequest, err: ChatError): FastifyReply {
  if (err.code === 'UNAUTHENTICATED') reply.header('www-authenticate', 'Bearer');
  if (err.status === 503) reply.header('retry-after', '1');
  if (err.code === 'RATE_LIMITED' && typeof err.extra?.retryAfterSeconds === 'number') reply.header('retry-after', String(err.extra.retryAfterSeconds));
  return reply.code(err.status).type('application/problem+json').send(problemOf(err, request.url.split('?')[0]));
}
