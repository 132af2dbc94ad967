import pino, { type Logger } from 'pino';
import { activeTraceIds } from './tracing.js';

/** The one root logger; components take `logger.child({ component })`. Tokens and content never go in. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'chat-service' },
    redact: { paths: ['req.headers.authorization', 'headers.authorization', 'token', 'passcode', 'content'], censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    // trace_id/span_id of the span a line is written in, so logs and traces meet (absent untraced).
    mixin: activeTraceIds,
  });
}
