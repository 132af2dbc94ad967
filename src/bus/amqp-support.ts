/** Small helpers shared by the RabbitMQ adapters. */

/**
 * The JSON value of a message body as rabbitmq-client hands it over: already parsed for
 * `application/json`, a Buffer or string otherwise. `undefined` when it is not JSON.
 */
export function decodeJsonBody(body: unknown): unknown {
  if (!Buffer.isBuffer(body) && typeof body !== 'string') return body;
  try {
    return JSON.parse(body.toString()) as unknown;
  } catch {
    return undefined;
  }
}

/** Settles like `promise`, or rejects with `timeoutError()` after `ms`; never leaves a rejection unhandled. */
export function withTimeout<T>(promise: Promise<T>, ms: number, timeoutError: () => Error): Promise<T> {
  promise.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timeoutError()), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
