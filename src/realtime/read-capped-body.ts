/**
 * Reads a request body of at most `maxBytes`, counting bytes as they stream, keeping the chunks
 * and joining them once: linear in the body, and never more than the cap held, whether the body
 * came with a Content-Length or chunked.
 */
import type { IncomingMessage } from 'node:http';

export type CappedBody = { kind: 'body'; body: Buffer } | { kind: 'too-large' } | { kind: 'aborted' };

export function readCappedBody(req: IncomingMessage, maxBytes: number): Promise<CappedBody> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) return Promise.resolve({ kind: 'too-large' });
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const finish = (result: CappedBody): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      received += chunk.length;
      if (received > maxBytes) {
        chunks.length = 0;
        finish({ kind: 'too-large' });
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => finish({ kind: 'body', body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received) });
    const onClose = (): void => finish({ kind: 'aborted' });
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('close', onClose);
  });
}

/**
 * After refusing a body we did not read: let the rest arrive and drop it, so the client (still
 * sending) reads our answer instead of a connection reset, but for a bounded time only.
 */
export function discardRestOfBody(req: IncomingMessage, lingerMs: number): void {
  if (req.complete) return;
  const timer = setTimeout(() => req.socket.destroy(), lingerMs);
  timer.unref();
  req.once('end', () => clearTimeout(timer));
  req.once('close', () => clearTimeout(timer));
  req.resume();
}
