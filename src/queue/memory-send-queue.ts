/**
 * SendQueue in process, for one instance without a broker (the embedded default), and the
 * reference the RabbitMQ driver is held to by the shared contract suite.
 *
 * It is as durable as the process: a send it holds survives an outage of the store, not a crash of
 * the process. That is what one process on an embedded database can offer; a deployment that needs
 * more configures RabbitMQ.
 *
 * Lifecycle: construct → `consume(handlers)` → `start()` → `enqueue`… → `stop()` (stops handing
 * sends over; a send in hand finishes; idempotent).
 * Invariants: a session's sends are handed over one at a time in enqueue order; an outage keeps the
 * send at the head of its session and retries it after a capped backoff; after `maxAttempts` other
 * failures it is dead (kept in `deadLetters`, logged, reported to `handlers.dead`) and its session
 * moves on. Must never happen: a send dropped without being stored, refused or made dead.
 */
import type { DeadSendView, QueuedSend, SendQueue, SendQueueHandlers } from '../chat/ports.js';
import { silentLogger, type AdapterLogger } from '../common/adapter-logger.js';
import { backoffMs, type Backoff } from '../common/backoff.js';
import { isOutage, RetryPauses, type SendQueueRetryOptions } from './send-queue-retry.js';

export interface MemorySendQueueOptions extends Partial<SendQueueRetryOptions> {
  logger?: AdapterLogger;
  /** Sends held at most; enqueue refuses beyond it (the caller reports the outage). Default 100,000. */
  maxLength?: number;
}

export interface DeadSend {
  id: string;
  send: QueuedSend;
  error: string;
  attempts: number;
  at: Date;
}

export class MemorySendQueue implements SendQueue {
  /** Waiting sends per session key, in enqueue order; a session is in `sessions` while it has work. */
  private readonly sessions = new Map<string, QueuedSend[]>();
  private readonly running = new Set<Promise<void>>();
  private readonly pauses = new RetryPauses();
  private readonly maxAttempts: number;
  private readonly retryBackoff: Backoff;
  private readonly log: AdapterLogger;
  private readonly maxLength: number;
  private handlers: SendQueueHandlers | undefined;
  private held = 0;
  private state: 'new' | 'started' | 'stopped' = 'new';
  readonly deadLetters: DeadSend[] = [];
  private deadCount = 0;

  constructor(options: MemorySendQueueOptions = {}) {
    this.maxAttempts = options.maxAttempts ?? 3;
    this.retryBackoff = { initialMs: options.retryMinMs ?? 100, maxMs: options.retryMaxMs ?? 5_000 };
    this.log = options.logger ?? silentLogger;
    this.maxLength = options.maxLength ?? 100_000;
  }

  consume(handlers: SendQueueHandlers): void {
    this.handlers = handlers;
  }

  start(): Promise<void> {
    if (this.state === 'stopped') return Promise.reject(new Error('MemorySendQueue: start after stop'));
    if (!this.handlers) return Promise.reject(new Error('MemorySendQueue: consume() before start()'));
    this.state = 'started';
    for (const key of this.sessions.keys()) this.drain(key);
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
    this.pauses.wakeAll();
    await Promise.allSettled([...this.running]);
  }

  isHealthy(): boolean {
    return this.state === 'started' && this.held < this.maxLength;
  }

  depth(): Promise<number | undefined> {
    return Promise.resolve(this.held);
  }

  listDead(limit: number): Promise<DeadSendView[]> {
    return Promise.resolve(this.deadLetters.slice(0, limit).map(deadSendView));
  }

  async replayDead(limit: number): Promise<number> {
    let moved = 0;
    while (moved < limit && this.deadLetters.length > 0) {
      const dead = this.deadLetters.shift()!;
      try {
        await this.enqueue(dead.send);
      } catch (err) {
        // Refused (stopped, full): it stays a dead letter, where it was.
        this.deadLetters.unshift(dead);
        throw err;
      }
      moved += 1;
    }
    return moved;
  }

  enqueue(send: QueuedSend): Promise<void> {
    if (this.state === 'stopped') return Promise.reject(new Error('MemorySendQueue: stopped'));
    if (this.held >= this.maxLength) return Promise.reject(new Error(`MemorySendQueue: full (${this.maxLength} sends held)`));
    // A copy, as a broker would keep: the caller's objects may change after this returns.
    const copy = JSON.parse(JSON.stringify(send)) as QueuedSend;
    const key = sessionKey(copy);
    const waiting = this.sessions.get(key);
    this.held += 1;
    if (waiting) {
      waiting.push(copy);
      return Promise.resolve();
    }
    this.sessions.set(key, [copy]);
    if (this.state === 'started') this.drain(key);
    return Promise.resolve();
  }

  /** Works through one session's sends, one at a time, until none is left or the queue stops. */
  private drain(key: string): void {
    const run = (async () => {
      const waiting = this.sessions.get(key)!;
      while (waiting.length > 0 && this.state === 'started') {
        await this.handleHead(waiting[0]!);
        if (this.state !== 'started') return;
        waiting.shift();
        this.held -= 1;
      }
      if (waiting.length === 0) this.sessions.delete(key);
    })();
    this.running.add(run);
    void run.finally(() => this.running.delete(run));
  }

  /** Resolves once the send is done with (stored, refused or dead), or the queue stops. */
  private async handleHead(send: QueuedSend): Promise<void> {
    const handlers = this.handlers!;
    let outages = 0;
    let failures = 0;
    for (;;) {
      try {
        await handlers.store(send);
        return;
      } catch (err) {
        if (isOutage(err)) {
          outages += 1;
          if (outages === 1) this.log.warn({ err }, 'queued send not stored: outage; holding it and the sends of its session');
          await this.pauses.sleep(backoffMs(outages, this.retryBackoff));
        } else {
          failures += 1;
          if (failures >= this.maxAttempts) {
            const error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
            this.log.error({ err, attempts: failures }, 'queued send dead: it cannot be stored');
            this.deadLetters.push({ id: String(++this.deadCount), send, error, attempts: failures, at: new Date() });
            await Promise.resolve(handlers.dead(send, error)).catch((deadErr: unknown) => this.log.warn({ err: deadErr }, 'could not report a dead send'));
            return;
          }
          this.log.warn({ err, attempt: failures }, 'storing a queued send failed unexpectedly, retrying');
          await this.pauses.sleep(backoffMs(failures, this.retryBackoff));
        }
        if (this.state !== 'started') return;
      }
    }
  }

}

/** Sends are ordered within a session; one whose session id is not even a string still gets handled. */
const sessionKey = (send: QueuedSend): string => (typeof send.request.sessionId === 'string' ? send.request.sessionId : '');

function deadSendView(dead: DeadSend): DeadSendView {
  const { caller, request } = dead.send;
  return {
    id: dead.id,
    senderEmail: caller.email,
    sessionId: typeof request.sessionId === 'string' ? request.sessionId : null,
    clientMessageId: typeof request.clientMessageId === 'string' ? request.clientMessageId : null,
    error: dead.error,
    attempts: dead.attempts,
    deadAt: dead.at,
  };
}
