/**
 * What a client is told about an error, on every wire: HTTP problem+json (RFC 9457), messages on
 * /user/queue/error, STOMP ERROR frames, refusals of queued sends, SockJS refusals. One mapping, so
 * a code means the same wherever it arrives:
 * - a ChatError says its own code, detail and extensions;
 * - a schema validation error (Ajv's shape, as Fastify reports it) is VALIDATION_FAILED naming the field;
 * - anything else is our bug: INTERNAL, and nothing of it reaches the client (log it where it is caught).
 */
import { CHAT_ERROR_CATALOGUE, ChatError, type ChatErrorCode } from './chat-errors.js';

export interface Problem {
  /** `urn:chat-service:problem:<code in kebab case>`. */
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ChatErrorCode;
  [extension: string]: unknown;
}

export function toProblem(err: unknown): Problem {
  const known = asChatError(err);
  const problem: Problem = {
    type: `urn:chat-service:problem:${known.code.toLowerCase().replaceAll('_', '-')}`,
    title: CHAT_ERROR_CATALOGUE[known.code].title,
    status: known.status,
    detail: known.message,
    code: known.code,
  };
  // Extensions never replace a standard member: `code` and `status` are what clients branch on.
  for (const [name, value] of Object.entries(known.extra ?? {})) if (!(name in problem)) problem[name] = value;
  return problem;
}

/** The error as the catalogue knows it; an unexpected one keeps itself as `cause`, for the log. */
export function asChatError(err: unknown): ChatError {
  if (err instanceof ChatError) return err;
  return validationError(err) ?? new ChatError('INTERNAL', 'internal error', undefined, { cause: err });
}

interface SchemaViolation {
  instancePath?: string;
  message?: string;
  params?: Record<string, unknown>;
}

function validationError(err: unknown): ChatError | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { validation, validationContext } = err as { validation?: unknown; validationContext?: unknown };
  if (!Array.isArray(validation)) return undefined;
  const where = typeof validationContext === 'string' ? validationContext : undefined;
  const errors = (validation as SchemaViolation[]).map((v) => ({
    field: fieldOf(v) || where,
    message: v.message,
  }));
  const first = errors[0];
  const detail = first ? `${where ?? 'request'}${first.field ? ` ${first.field}` : ''}: ${first.message}` : `${where ?? 'request'} is not valid`;
  return new ChatError('VALIDATION_FAILED', detail, { errors });
}

/** `/a/b` → `a.b`; a missing or extra property names itself. */
function fieldOf(v: SchemaViolation): string | undefined {
  const path = (v.instancePath ?? '').replace(/^\//, '').replaceAll('/', '.');
  if (path) return path;
  const named = v.params?.missingProperty ?? v.params?.additionalProperty;
  return typeof named === 'string' ? named : undefined;
}
