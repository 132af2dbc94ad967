/** Bounding the wait for a promise. */

/**
 * Settles like `promise`, or rejects with `timeoutError()` once `ms` have passed first. The timer
 * is cleared when `promise` settles, and a rejection of `promise` after the timeout is handled
 * here, never reported as unhandled. `promise` itself is not cancelled: what it stands for may
 * still happen later.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, timeoutError: () => Error): Promise<T> {
  promise.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timeoutError()), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
