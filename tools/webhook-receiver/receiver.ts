/**
 * The reference webhook receiver: what a push gateway or any other consumer of our webhooks does
 * with a request, in one small HTTP server.
 *
 * 1. Read the raw body (at most 1 MiB): the signature covers these exact bytes, never a re-serialised
 *    JSON.
 * 2. Verify `X-Chat-Signature` against `"<X-Chat-Timestamp>.<body>"` with the shared secret, compared
 *    in constant time, and refuse a timestamp more than 5 minutes from the local clock (a replayed
 *    old request): 401, and the sender retries (a wrong secret never gets through).
 * 3. De-duplicate by the event id (`X-Chat-Event-Id`, also the body's `id`): deliveries are at least
 *    once, so the same event can arrive again after a timeout or a crash of the sender. A repeat is
 *    answered 200 (so the sender stops) and not processed again. The ids remembered are bounded (the
 *    oldest forgotten first); a production receiver keeps them in its database instead.
 * 4. Answer 2xx quickly and do slow work afterwards: an answer slower than the sender's timeout
 *    counts as a failure and the event comes again.
 *
 * For tests it can also misbehave on purpose: answer 503 to its first N requests or to every N-th,
 * delay its answers, or hang (never answer).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { verifyChatSignature } from '../../src/webhooks/webhook-signature.js';

export interface ReceivedEvent {
  readonly id: string;
  readonly type: string;
  readonly createdAt: string;
  readonly data: Record<string, unknown>;
  /** Arrival time here, epoch ms. */
  readonly receivedAt: number;
}

export interface WebhookReceiverOptions {
  secret: string;
  port?: number;
  host?: string;
  toleranceSeconds?: number;
  /** Answer 503 to this many requests first (any request, before verifying), then behave. */
  failFirst?: number;
  /** Answer 503 to every N-th request (a flaky receiver). */
  failEvery?: number;
  /** Wait this long before answering each request. */
  delayMs?: number;
  /** Never answer (a dead receiver that holds connections open). */
  hang?: boolean;
  /** Event ids remembered for de-duplication. */
  maxRemembered?: number;
  /** Called with each new (not duplicate) verified event. */
  onEvent?: (event: ReceivedEvent) => void;
  /** Where lines go (one JSON object each); default stdout. */
  print?: (line: string) => void;
}

export interface WebhookReceiver {
  readonly url: string;
  /** New verified events, in arrival order. */
  readonly events: ReceivedEvent[];
  readonly stats: { requests: number; failedOnPurpose: number; rejected: number; duplicates: number };
  /** Changes the behaviour from now on (tests: recover after a failure, stop hanging). */
  behave(options: Partial<Pick<WebhookReceiverOptions, 'failFirst' | 'failEvery' | 'delayMs' | 'hang'>>): void;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024 * 1024;

export async function startWebhookReceiver(options: WebhookReceiverOptions): Promise<WebhookReceiver> {
  const behaviour = { failFirst: options.failFirst ?? 0, failEvery: options.failEvery ?? 0, delayMs: options.delayMs ?? 0, hang: options.hang ?? false };
  const remembered = new Set<string>();
  const maxRemembered = options.maxRemembered ?? 100_000;
  const events: ReceivedEvent[] = [];
  const stats = { requests: 0, failedOnPurpose: 0, rejected: 0, duplicates: 0 };
  const print = options.print ?? ((line: string) => process.stdout.write(line + '\n'));

  const answer = (res: ServerResponse, status: number, body: object): void => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    stats.requests++;
    if (behaviour.hang) return; // Held open until the sender gives up or we close.
    if (behaviour.delayMs > 0) await new Promise((r) => setTimeout(r, behaviour.delayMs));
    if (req.method !== 'POST') return answer(res, 405, { error: 'POST only' });
    const raw = await readBody(req);
    if (raw === undefined) return answer(res, 413, { error: 'body over 1 MiB' });
    const failEvery = behaviour.failEvery > 0 && stats.requests % behaviour.failEvery === 0;
    if (behaviour.failFirst > 0 || failEvery) {
      if (behaviour.failFirst > 0) behaviour.failFirst--;
      stats.failedOnPurpose++;
      return answer(res, 503, { error: 'failing on purpose' });
    }
    const header = (name: string): string | undefined => {
      const value = req.headers[name];
      return Array.isArray(value) ? value[0] : value;
    };
    const check = verifyChatSignature(
      options.secret,
      { timestamp: header('x-chat-timestamp'), signature: header('x-chat-signature') },
      raw,
      Math.floor(Date.now() / 1000),
      options.toleranceSeconds,
    );
    if (!check.ok) {
      stats.rejected++;
      print(JSON.stringify({ rejected: check.reason, eventId: header('x-chat-event-id') ?? null }));
      return answer(res, 401, { error: check.reason });
    }
    let event: ReceivedEvent;
    try {
      const body = JSON.parse(raw) as { id: string; type: string; createdAt: string; data: Record<string, unknown> };
      if (typeof body.id !== 'string' || body.id !== header('x-chat-event-id')) throw new Error('id differs from X-Chat-Event-Id');
      event = { id: body.id, type: body.type, createdAt: body.createdAt, data: body.data, receivedAt: Date.now() };
    } catch (err) {
      stats.rejected++;
      return answer(res, 400, { error: `not an event: ${(err as Error).message}` });
    }
    if (remembered.has(event.id)) {
      stats.duplicates++;
      print(JSON.stringify({ duplicate: event.id, type: event.type }));
      return answer(res, 200, { duplicate: true });
    }
    remembered.add(event.id);
    if (remembered.size > maxRemembered) remembered.delete(remembered.values().next().value!);
    events.push(event);
    print(JSON.stringify({ received: event.id, type: event.type, createdAt: event.createdAt, data: event.data }));
    options.onEvent?.(event);
    answer(res, 200, { ok: true });
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      if (!res.headersSent) answer(res, 500, { error: err.message });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}/webhooks`,
    events,
    stats,
    behave: (next) => Object.assign(behaviour, next),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The raw body as text, or undefined when over the limit. */
async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
