import pino, { type Logger } from 'pino';
import { activeTraceIds } from './tracing.js';

/** The one root logger; components take `logger.child({ component })`. Tokens and content never go in. */
export function createLogger(level: string): Logger {
  // Buffered writes: a line per stored message must not cost a write system call each (at a low
  // rate, nothing else would gather them). Lines wait until 4 KiB are buffered or 250 ms have
  // passed; `flushLogs` before exiting, or the last lines are lost.
  return pino({
    level,
    base: { service: 'chat-service' },
    redact: { paths: ['req.headers.authorization', 'headers.authorization', 'token', 'passcode', 'content'], censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    // trace_id/span_id of the span a line is written in, so logs and traces meet (absent untraced).
    mixin: activeTraceIds,
  }, pino.destination({ dest: 1, sync: false, minLength: 4096, periodicFlush: 250 }));
}

/** Writes out what the logger still buffers, then calls `done` (also after a failed flush). */
export function flushLogs(logger: Logger, done: () => void): void {
  try {
    logger.flush(() => done());
  } catch {
    done();
  }
}
