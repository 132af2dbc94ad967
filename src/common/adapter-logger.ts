/**
 * The slice of a pino logger the bus and send-queue adapters use, so they take
 * `log.child({ component: … })` from app.ts without importing pino themselves. Messages are
 * constant; data goes in the object.
 */
export interface AdapterLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const ignore = (): void => undefined;

export const silentLogger: AdapterLogger = { debug: ignore, info: ignore, warn: ignore, error: ignore };
