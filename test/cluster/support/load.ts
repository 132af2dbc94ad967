/**
 * Load with a ledger: senders send over real STOMP connections (@stomp/stompjs over `ws`), as the
 * SDK would: a window of sends in flight, each resent with the same clientMessageId until its ack
 * arrives, failing over to the next instance when the connection drops. Recipients record every
 * delivery on /user/queue/messages and, as the SDK does after a reconnect or a seq gap, recover
 * what they missed with `GET /api/chat/{id}/history?after=`.
 *
 * The ledger then says, per message: sent, accepted (a RECEIPT with no error: the send is durably
 * queued), acknowledged (its ack arrived), stored (read from PostgreSQL), delivered live, recovered
 * from history, delivered more than once. Every loop here is bounded by the deadline.
 */
import { randomUUID } from 'node:crypto';
import { Client, type IMessage } from '@stomp/stompjs';
import WebSocket from 'ws';
import { api, pendingOutboxRows, storedMessages, type User } from './cluster.js';

export interface Pair {
  sessionId: string;
  sender: User;
  recipient: User;
  /** Instances the sender connects to, in failover order (the first one first). */
  senderUrls: string[];
  recipientUrls: string[];
}

export interface LoadOptions {
  messagesPerSender: number;
  /** Sends in flight (unacknowledged) per sender. */
  window: number;
  /** New messages per second per sender; resends do not count. */
  ratePerSender: number;
  /** Resend (same clientMessageId) when no ack came within this. */
  ackTimeoutMs: number;
  /** Stop trying after this; what is unacknowledged by then is reported. */
  deadlineMs: number;
}

interface Entry {
  clientMessageId: string;
  content: string;
  attempts: number;
  sentAt: number;
  retryAt: number | undefined;
  pendingReceipt: string | undefined;
  errorSinceSend: string | undefined;
  accepted: boolean;
  acked: boolean;
  failed: string | undefined;
}

export interface LedgerFigures {
  sent: number;
  attempts: number;
  accepted: number;
  acked: number;
  stored: number;
  deliveredLive: number;
  recoveredFromHistory: number;
  duplicatesDelivered: number;
  lost: number;
  unacked: number;
  storedMoreThanOnce: number;
  seqGaps: number;
  /** Messages stored (seq order) before one their sender sent earlier: per-sender order not kept. */
  reordered: number;
  transientErrors: Record<string, number>;
  permanentErrors: number;
  reconnects: number;
}

const TRANSIENT = new Set(['STORE_UNAVAILABLE', 'BUS_UNAVAILABLE', 'PROFILE_SERVICE_UNAVAILABLE']);

/** A STOMP client that reconnects, rotating through `urls`, and re-runs `onConnect` each time. */
class FailoverStomp {
  readonly client: Client;
  connects = 0;
  private attempt = 0;
  private current: string;

  constructor(
    readonly urls: string[],
    token: string,
    onConnect: (first: boolean) => void,
    onMessage: (destination: string, msg: IMessage) => void,
  ) {
    this.current = urls[0]!;
    this.client = new Client({
      connectHeaders: { Authorization: `Bearer ${token}` },
      reconnectDelay: 200,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      connectionTimeout: 3_000,
      debug: () => undefined,
      beforeConnect: () => {
        const url = this.urls[this.attempt++ % this.urls.length]!;
        this.current = url;
        this.client.webSocketFactory = () => new WebSocket(`${url.replace(/^http/, 'ws')}/ws`, ['v12.stomp']);
      },
      onConnect: () => {
        this.connects += 1;
        for (const destination of this.destinations) this.client.subscribe(destination, (msg) => onMessage(destination, msg));
        onConnect(this.connects === 1);
      },
    });
  }

  private destinations: string[] = [];

  /** Connects, subscribes to `destinations` (again after every reconnect) and waits for the first session. */
  async start(destinations: string[]): Promise<void> {
    this.destinations = destinations;
    this.client.activate();
    const started = Date.now();
    while (this.connects === 0) {
      if (Date.now() - started > 15_000) throw new Error(`no STOMP connection to ${this.urls.join(', ')}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // A RECEIPT for a frame sent after the SUBSCRIBEs proves they are registered.
    await this.barrier();
  }

  /** Resolves once every frame sent so far has been processed by the server (or after 5 s). */
  barrier(): Promise<void> {
    return new Promise<void>((resolve) => {
      const receipt = `barrier-${Math.random().toString(36).slice(2)}`;
      const timer = setTimeout(resolve, 5_000);
      this.client.watchForReceipt(receipt, () => {
        clearTimeout(timer);
        resolve();
      });
      // Unsubscribing from nothing is a no-op that still gets its RECEIPT.
      this.client.unsubscribe('barrier', { receipt });
    });
  }

  /** The instance this client is connected (or connecting) to. */
  get currentUrl(): string {
    return this.current;
  }

  async stop(): Promise<void> {
    await this.client.deactivate({ force: true });
  }
}

class Sender {
  readonly entries: Entry[] = [];
  readonly byId = new Map<string, Entry>();
  readonly stomp: FailoverStomp;
  transientErrors: Record<string, number> = {};
  permanentErrors = 0;
  private next = 0;
  private credit = 0;
  private lastTick = Date.now();

  constructor(
    readonly pair: Pair,
    private readonly options: LoadOptions,
  ) {
    for (let i = 0; i < options.messagesPerSender; i++) {
      const clientMessageId = randomUUID();
      const entry: Entry = {
        clientMessageId,
        content: `${pair.sender.displayName} #${i}`,
        attempts: 0,
        sentAt: 0,
        retryAt: undefined,
        pendingReceipt: undefined,
        errorSinceSend: undefined,
        accepted: false,
        acked: false,
        failed: undefined,
      };
      this.entries.push(entry);
      this.byId.set(clientMessageId, entry);
    }
    this.stomp = new FailoverStomp(
      pair.senderUrls,
      pair.sender.token,
      (first) => {
        // Reconnected: whatever was in flight may never be answered on the old connection.
        if (!first) for (const e of this.outstanding()) e.retryAt = Date.now() + 100;
      },
      (destination, msg) => this.onMessage(destination, msg),
    );
  }

  get acked(): number {
    return this.entries.filter((e) => e.acked).length;
  }

  get finished(): boolean {
    return this.entries.every((e) => e.acked || e.failed);
  }

  private outstanding(): Entry[] {
    return this.entries.slice(0, this.next).filter((e) => !e.acked && !e.failed);
  }

  tick(now: number): void {
    if (!this.stomp.client.connected) return;
    this.credit = Math.min(this.options.window, this.credit + ((now - this.lastTick) / 1000) * this.options.ratePerSender);
    this.lastTick = now;
    const outstanding = this.outstanding();
    for (const e of outstanding) {
      if ((e.retryAt !== undefined && now >= e.retryAt) || now - e.sentAt >= this.options.ackTimeoutMs) this.send(e, now);
    }
    let inFlight = outstanding.length;
    while (inFlight < this.options.window && this.next < this.entries.length && this.credit >= 1) {
      this.credit -= 1;
      inFlight += 1;
      this.send(this.entries[this.next++]!, now);
    }
  }

  private send(e: Entry, now: number): void {
    e.attempts += 1;
    e.sentAt = now;
    e.retryAt = undefined;
    e.errorSinceSend = undefined;
    const receipt = `${e.clientMessageId}/${e.attempts}`;
    e.pendingReceipt = receipt;
    this.stomp.client.watchForReceipt(receipt, () => {
      if (e.pendingReceipt !== receipt) return;
      e.pendingReceipt = undefined;
      // Frames are handled in order, so an error for this attempt came before its RECEIPT.
      if (!e.errorSinceSend) e.accepted = true;
    });
    this.stomp.client.publish({
      destination: '/app/chat.send',
      body: JSON.stringify({ sessionId: this.pair.sessionId, content: e.content, clientMessageId: e.clientMessageId }),
      headers: { receipt },
    });
  }

  private onMessage(destination: string, msg: IMessage): void {
    const e = this.byId.get(msg.headers['client-message-id'] ?? '');
    if (!e) return;
    if (destination === '/user/queue/ack') {
      e.acked = true;
      return;
    }
    const code = (JSON.parse(msg.body) as { code: string }).code;
    e.errorSinceSend = code;
    if (TRANSIENT.has(code)) {
      this.transientErrors[code] = (this.transientErrors[code] ?? 0) + 1;
      e.retryAt = Date.now() + 200;
    } else if (!e.acked) {
      this.permanentErrors += 1;
      e.failed = code;
    }
  }
}

class Recipient {
  /** Live deliveries per messageId. */
  readonly live = new Map<string, number>();
  readonly recovered = new Set<string>();
  readonly seqs = new Set<number>();
  readonly stomp: FailoverStomp;
  private contiguous = 0;
  private catchingUp: Promise<void> | undefined;
  private gapTimer: NodeJS.Timeout | undefined;

  constructor(readonly pair: Pair) {
    this.stomp = new FailoverStomp(
      pair.recipientUrls,
      pair.recipient.token,
      (first) => {
        if (!first) void this.catchUp();
      },
      (_destination, msg) => this.onMessage(msg),
    );
  }

  private onMessage(msg: IMessage): void {
    const body = JSON.parse(msg.body) as { messageId: string; sessionId: string; seq: number };
    if (body.sessionId !== this.pair.sessionId) return;
    this.live.set(body.messageId, (this.live.get(body.messageId) ?? 0) + 1);
    this.see(body.seq);
    // A hole below this seq that does not fill soon: fetch it, as the SDK does.
    if (body.seq > this.contiguous + 1 && !this.gapTimer) {
      this.gapTimer = setTimeout(() => {
        this.gapTimer = undefined;
        if (this.seqs.size > 0 && Math.max(...this.seqs) > this.contiguous) void this.catchUp();
      }, 500);
    }
  }

  private see(seq: number): void {
    this.seqs.add(seq);
    while (this.seqs.has(this.contiguous + 1)) this.contiguous += 1;
  }

  /** Pages through history after the last contiguous seq; records what live delivery missed. */
  catchUp(): Promise<void> {
    this.catchingUp ??= (async () => {
      try {
        let after = this.contiguous;
        for (let page = 0; page < 100; page++) {
          const res = await api(this.stomp.currentUrl, 'GET', `/api/chat/${this.pair.sessionId}/history?after=${after}&limit=200`, this.pair.recipient.token);
          if (res.status !== 200) return;
          for (const m of res.body.messages as Array<{ messageId: string; seq: number }>) {
            if (!this.live.has(m.messageId)) this.recovered.add(m.messageId);
            this.see(m.seq);
          }
          if (res.body.nextCursor === null) return;
          after = res.body.nextCursor as number;
        }
      } catch {
        // the instance went away mid-fetch: the next reconnect or the final catch-up retries
      } finally {
        this.catchingUp = undefined;
      }
    })();
    return this.catchingUp;
  }
}

export class LedgerLoad {
  private readonly senders: Sender[];
  private readonly recipients: Recipient[];
  private timer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  /** Resolves when every message is acknowledged (or failed), or at the deadline. */
  done: Promise<void> = Promise.resolve();

  constructor(
    readonly pairs: Pair[],
    private readonly options: LoadOptions,
  ) {
    this.senders = pairs.map((pair) => new Sender(pair, options));
    this.recipients = pairs.map((pair) => new Recipient(pair));
  }

  get total(): number {
    return this.senders.length * this.options.messagesPerSender;
  }

  get acked(): number {
    return this.senders.reduce((n, s) => n + s.acked, 0);
  }

  /** Live deliveries of one message to its recipient (before de-duplication). */
  liveDeliveries(messageId: string): number {
    return this.recipients.reduce((n, r) => n + (r.live.get(messageId) ?? 0), 0);
  }

  isAcked(clientMessageId: string): boolean {
    return this.senders.some((s) => s.byId.get(clientMessageId)?.acked === true);
  }

  /** Sends the service has durably accepted (RECEIPT without an error) so far. */
  get accepted(): number {
    return this.acceptedIds().length;
  }

  acceptedIds(): string[] {
    return this.senders.flatMap((s) => s.entries.filter((e) => e.accepted).map((e) => e.clientMessageId));
  }

  /** Connects everybody (recipients first, so nothing is sent before they listen), then sends. */
  async start(): Promise<void> {
    await Promise.all(this.recipients.map((r) => r.stomp.start(['/user/queue/messages'])));
    await Promise.all(this.senders.map((s) => s.stomp.start(['/user/queue/ack', '/user/queue/error'])));
    this.startedAt = Date.now();
    this.done = new Promise<void>((resolve) => {
      this.timer = setInterval(() => {
        const now = Date.now();
        for (const s of this.senders) s.tick(now);
        if (this.senders.every((s) => s.finished) || now - this.startedAt > this.options.deadlineMs) {
          clearInterval(this.timer);
          resolve();
        }
      }, 10);
    });
  }

  /** Waits for the load to end, lets recipients catch up, reads the database, closes the clients. */
  async finish(databaseUrl: string, label: string): Promise<LedgerFigures> {
    await this.done;
    // Events still in the outbox (say, leased by a relay that died) are on their way: wait (bounded)
    // until every event has been published, so "delivered live" means what it says.
    const drainUntil = Date.now() + 15_000;
    while ((await pendingOutboxRows(databaseUrl)) > 0 && Date.now() < drainUntil) await new Promise((resolve) => setTimeout(resolve, 100));
    // Acked messages may still be on their way to recipients: wait (bounded) for them live.
    const ackedIds = new Set(this.senders.flatMap((s) => s.entries.filter((e) => e.acked).map((e) => e.clientMessageId)));
    const stored = await storedMessages(databaseUrl, this.pairs.map((p) => p.sessionId));
    const expectedMessageIds = new Set(stored.filter((m) => ackedIds.has(m.clientMessageId)).map((m) => m.messageId));
    const deliveredSomehow = (): number => [...expectedMessageIds].filter((id) => this.recipients.some((r) => r.live.has(id) || r.recovered.has(id))).length;
    const waitUntil = Date.now() + 3_000;
    while (deliveredSomehow() < expectedMessageIds.size && Date.now() < waitUntil) await new Promise((resolve) => setTimeout(resolve, 50));
    // Then what the SDK does after any gap: catch up from history.
    await Promise.all(this.recipients.map((r) => r.catchUp()));
    await Promise.all([...this.senders, ...this.recipients].map((p) => p.stomp.stop()));

    const entries = this.senders.flatMap((s) => s.entries);
    const sentEntries = entries.filter((e) => e.attempts > 0);
    const storedCount = new Map<string, number>();
    for (const m of stored) storedCount.set(m.clientMessageId, (storedCount.get(m.clientMessageId) ?? 0) + 1);
    const mustBeStored = entries.filter((e) => e.acked || e.accepted);
    const live = new Map<string, number>();
    const recovered = new Set<string>();
    for (const r of this.recipients) {
      for (const [id, n] of r.live) live.set(id, (live.get(id) ?? 0) + n);
      for (const id of r.recovered) recovered.add(id);
    }
    const storedIds = stored.map((m) => m.messageId);
    let seqGaps = 0;
    let reordered = 0;
    const sendIndex = new Map(this.senders.flatMap((s) => s.entries.map((e, i) => [e.clientMessageId, i] as const)));
    for (const pair of this.pairs) {
      const inSession = stored.filter((m) => m.sessionId === pair.sessionId);
      inSession.forEach((m, i) => {
        if (m.seq !== i + 1) seqGaps += 1;
      });
      let highest = -1;
      for (const m of inSession) {
        const index = sendIndex.get(m.clientMessageId) ?? -1;
        if (index < highest) reordered += 1;
        highest = Math.max(highest, index);
      }
    }
    const transientErrors: Record<string, number> = {};
    for (const s of this.senders) for (const [code, n] of Object.entries(s.transientErrors)) transientErrors[code] = (transientErrors[code] ?? 0) + n;
    const figures: LedgerFigures = {
      sent: sentEntries.length,
      attempts: sentEntries.reduce((n, e) => n + e.attempts, 0),
      accepted: entries.filter((e) => e.accepted).length,
      acked: entries.filter((e) => e.acked).length,
      stored: stored.length,
      deliveredLive: storedIds.filter((id) => live.has(id)).length,
      recoveredFromHistory: storedIds.filter((id) => !live.has(id) && recovered.has(id)).length,
      duplicatesDelivered: [...live.values()].reduce((n, count) => n + (count - 1), 0),
      lost: mustBeStored.filter((e) => !storedCount.has(e.clientMessageId)).length,
      unacked: sentEntries.filter((e) => !e.acked).length,
      storedMoreThanOnce: [...storedCount.values()].filter((n) => n > 1).length,
      seqGaps,
      reordered,
      transientErrors,
      permanentErrors: this.senders.reduce((n, s) => n + s.permanentErrors, 0),
      reconnects: [...this.senders, ...this.recipients].reduce((n, p) => n + p.stomp.connects - 1, 0),
    };
    const undelivered = storedIds.filter((id) => !live.has(id) && !recovered.has(id)).length;
    console.log(
      `ledger [${label}]: sent ${figures.sent} (${figures.attempts} SENDs), accepted ${figures.accepted}, acked ${figures.acked}, stored ${figures.stored}, ` +
        `delivered live ${figures.deliveredLive}, recovered from history ${figures.recoveredFromHistory}, undelivered ${undelivered}, ` +
        `duplicates delivered ${figures.duplicatesDelivered}, lost ${figures.lost}, unacked ${figures.unacked}, stored twice ${figures.storedMoreThanOnce}, ` +
        `seq gaps ${figures.seqGaps}, reordered ${figures.reordered}, transient errors ${JSON.stringify(figures.transientErrors)}, reconnects ${figures.reconnects}`,
    );
    return figures;
  }
}
