import pino, { type Logger } from 'pino';

/** The one root logger; components take `logger.child({ component })`. Tokens and content never go in. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'chat-service' },
    redact: { paths: ['req.headers.authorization', 'headers.authorization', 'token', 'passcode', 'content'], censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
