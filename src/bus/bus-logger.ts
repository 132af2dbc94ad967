/**
 * The slice of a pino logger the bus adapters use, so they take `log.child({ component: 'bus' })`
 * from main.ts without importing pino themselves. Messages are constant; data goes in the object.
 */
export interface BusLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const ignore = (): void => undefined;

export const silentBusLogger: BusLogger = { debug: ignore, info: ignore, warn: ignore, error: ignore };
