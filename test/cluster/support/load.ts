/**
 * Load with a ledger, driven through the SDK. Each sender is a `ChatClient` sending a window of
 * messages at a set rate; its pending sends re-SEND each one with the same clientMessageId until it
 * is acknowledged, on the same connection or the next. Each recipient is a `ChatClient` tracking
 * the session; its session recovery hands messages out in seq order, once, and fetches from history
 * what live delivery missed (after a reconnect or a gap, and once more at the end). Clients fail
 * over between instances as behind a load balancer: each connection attempt goes to the next
 * instance of the pair's list, and REST to the instance of the last attempt.
 *
 * Two things the SDK does not tell, a tap on each socket reads from the frames: that a SEND was
 * accepted (its RECEIPT came with no error before it: durably stored or queued; the tap asks for
 * that RECEIPT, which the SDK does not) and how often a message came over the wire (the SDK
 * de-duplicates). The ledger then says, per message: sent, accepted, acknowledged, stored (read
 * from PostgreSQL), delivered live, recovered from history, handed to the application by the SDK,
 * delivered more than once. Every loop here is bounded by the deadline.
 */
import { ChatClient } from '../../../client/chat-client.js';
import type { ChatClientError } from '../../../client/chat-client-error.js';
import type { ChatMessage } from '../../../client/chat-types.js';
import { SocketPlant } from '../../../client/testing/socket-plant.js';
import { expect } from 'vitest';
import { pendingOutboxRows, storedMessages, type User } from './cluster.js';

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
  /** The SDK's `resendAfterMs`: re-SEND (same clientMessageId) when no ack came within this. */
  ackTimeoutMs: number;
  /** Stop trying after this; what is unacknowledged by then is reported. */
  deadlineMs: number;
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
  /** Stored messages the recipients' SDK handed to the application. */
  handedOut: number;
  /** Messages the SDK handed out more than once (it must de-duplicate). */
  duplicatesHandedOut: number;
  /** Messages the SDK handed out other than as seq 1, 2, 3, … of their session. */
  handedOutOfOrder: number;
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

/** Where ChatClient thinks the service is; the balancer below sends each request to a real instance. */
const BALANCED_ORIGIN = 'http://load-balancer.test';
const RECEIPT_PREFIX = 'ledger/';
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface Frame {
  command: string;
  headers: Record<string, string>;
  body: string;
}

/** The frames in one WebSocket message (heart-beats skipped). */
function framesOf(text: string): Frame[] {
  const frames: Frame[] = [];
  for (const raw of text.split('\0')) {
    const frame = raw.replace(/^[\r\n]+/, '');
    if (!frame) continue;
    const split = frame.indexOf('\n\n');
    const [command = '', ...lines] = (split < 0 ? frame : frame.slice(0, split)).split('\n');
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon > 0 && !(line.slice(0, colon) in headers)) headers[line.slice(0, colon)] = line.slice(colon + 1);
    }
    frames.push({ command, headers, body: split < 0 ? '' : frame.slice(split + 2) });
  }
  return frames;
}

const parse = <T>(body: string): T | undefined => {
  try {
    return JSON.parse(body) as T;
  } catch {
    return undefined;
  }
};

/** One SDK client behind a stand-in load balancer, on sockets a test can tap. */
class LoadClient {
  readonly client: ChatClient;
  readonly plant = new SocketPlant();
  connects = 0;
  private attempts = 0;
  private current: string;

  constructor(
    readonly urls: string[],
    user: User,
    resendAfterMs: number,
  ) {
    this.current = urls[0]!;
    this.client = new ChatClient({
      baseUrl: BALANCED_ORIGIN,
      tokenProvider: async () => user.token,
      webSocketFactory: (_url, protocols) => {
        this.current = this.urls[this.attempts++ % this.urls.length]!;
        return this.plant.factory(`${this.current.replace(/^http/, 'ws')}/ws`, protocols);
      },
      fetch: (input, init) => fetch(String(input).replace(BALANCED_ORIGIN, this.current), init),
      reconnect: { initialMs: 100, maxMs: 1_000 },
      connectTimeoutMs: 3_000,
      resendAfterMs,
    });
    this.client.on('state', (state) => {
      if (state === 'connected') this.connects += 1;
    });
  }

  /** Connects; resolves once the SDK says connected (its subscriptions confirmed by a RECEIPT). */
  async start(): Promise<void> {
    this.client.connect();
    await this.connected(15_000);
  }

  async connected(timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (this.client.state !== 'connected') {
      if (this.client.state === 'disconnected') throw new Error(`the SDK gave up connecting to ${this.urls.join(', ')}`);
      if (Date.now() > until) return false;
      await sleep(20);
    }
    return true;
  }
}

interface Entry {
  clientMessageId: string;
  acked: boolean;
  failed: string | undefined;
}

/** What the wire says about one clientMessageId's SENDs. */
interface WireSends {
  attempts: number;
  pendingReceipt: string | undefined;
  errorSinceSend: string | undefined;
  accepted: boolean;
}

class Sender {
  readonly entries: Entry[] = [];
  readonly byId = new Map<string, Entry>();
  readonly wire = new Map<string, WireSends>();
  readonly link: LoadClient;
  transientErrors: Record<string, number> = {};
  permanentErrors = 0;
  private next = 0;
  private credit = 0;
  private lastTick = Date.now();

  constructor(
    readonly pair: Pair,
    private readonly options: LoadOptions,
  ) {
    this.link = new LoadClient(pair.senderUrls, pair.sender, options.ackTimeoutMs);
    this.link.plant.outgoing = (frame) => this.askForReceipt(frame);
    this.link.plant.filter = (text) => {
      for (const frame of framesOf(text)) this.observe(frame);
      return 'pass';
    };
    this.link.client.on('error', (error) => this.onError(error));
  }

  get acked(): number {
    return this.entries.filter((e) => e.acked).length;
  }

  get finished(): boolean {
    return this.next === this.options.messagesPerSender && this.entries.every((e) => e.acked || e.failed);
  }

  tick(now: number): void {
    this.credit = Math.min(this.options.window, this.credit + ((now - this.lastTick) / 1000) * this.options.ratePerSender);
    this.lastTick = now;
    while (this.link.client.pendingSends < this.options.window && this.next < this.options.messagesPerSender && this.credit >= 1) {
      this.credit -= 1;
      const out = this.link.client.send(this.pair.sessionId, `${this.pair.sender.displayName} #${this.next++}`);
      const entry: Entry = { clientMessageId: out.clientMessageId, acked: false, failed: undefined };
      this.entries.push(entry);
      this.byId.set(entry.clientMessageId, entry);
      out.acked.then(
        () => (entry.acked = true),
        (err: ChatClientError) => {
          entry.failed = err.code;
          if (err.code !== 'CLIENT_CLOSED') this.permanentErrors += 1;
        },
      );
    }
  }

  private wireOf(clientMessageId: string): WireSends {
    let sends = this.wire.get(clientMessageId);
    if (!sends) this.wire.set(clientMessageId, (sends = { attempts: 0, pendingReceipt: undefined, errorSinceSend: undefined, accepted: false }));
    return sends;
  }

  /** Each SEND of a message asks for a RECEIPT, so the ledger can tell it was accepted. */
  private askForReceipt(frame: string): string {
    if (!frame.startsWith('SEND\n') || !frame.includes('\ndestination:/app/chat.send\n')) return frame;
    const [parsed] = framesOf(frame);
    const clientMessageId = parse<{ clientMessageId?: string }>(parsed?.body ?? '')?.clientMessageId;
    if (!clientMessageId) return frame;
    const sends = this.wireOf(clientMessageId);
    sends.attempts += 1;
    sends.errorSinceSend = undefined;
    sends.pendingReceipt = `${RECEIPT_PREFIX}${clientMessageId}/${sends.attempts}`;
    return frame.replace('SEND\n', `SEND\nreceipt:${sends.pendingReceipt}\n`);
  }

  private observe(frame: Frame): void {
    if (frame.command === 'RECEIPT' && frame.headers['receipt-id']?.startsWith(RECEIPT_PREFIX)) {
      const receipt = frame.headers['receipt-id'];
      const sends = this.wire.get(receipt.slice(RECEIPT_PREFIX.length, receipt.lastIndexOf('/')));
      if (!sends || sends.pendingReceipt !== receipt) return;
      sends.pendingReceipt = undefined;
      // Frames are handled in order, so an error for this attempt came before its RECEIPT.
      if (!sends.errorSinceSend) sends.accepted = true;
    } else if (frame.command === 'MESSAGE' && frame.headers.destination === '/user/queue/error') {
      const sends = this.wire.get(frame.headers['client-message-id'] ?? '');
      if (sends) sends.errorSinceSend = parse<{ code?: string }>(frame.body)?.code ?? 'UNKNOWN';
    }
  }

  private onError(error: ChatClientError): void {
    if (!error.details.clientMessageId || !this.wire.has(error.details.clientMessageId) || !error.retryable) return;
    this.transientErrors[error.code] = (this.transientErrors[error.code] ?? 0) + 1;
  }
}

class Recipient {
  /** Deliveries per messageId as they came over the wire, before the SDK de-duplicates. */
  readonly live = new Map<string, number>();
  /** What the SDK handed to the application, in order. */
  readonly handedOut: ChatMessage[] = [];
  readonly link: LoadClient;

  constructor(readonly pair: Pair) {
    this.link = new LoadClient(pair.recipientUrls, pair.recipient, 10_000);
    this.link.plant.filter = (text) => {
      for (const frame of framesOf(text)) {
        if (frame.command !== 'MESSAGE' || frame.headers.destination !== '/user/queue/messages') continue;
        const message = parse<{ messageId: string; sessionId: string }>(frame.body);
        if (message?.sessionId === pair.sessionId) this.live.set(message.messageId, (this.live.get(message.messageId) ?? 0) + 1);
      }
      return 'pass';
    };
    this.link.client.trackSession(pair.sessionId, 0);
    this.link.client.on('message', (m) => {
      if (m.sessionId === pair.sessionId) this.handedOut.push(m);
    });
  }

  /** What the SDK does for a conversation being opened: fetch from history whatever it lacks. */
  async catchUp(): Promise<void> {
    if (await this.link.connected(10_000)) await this.link.client.openSession(this.pair.sessionId);
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

  private ackedIds(): string[] {
    return this.senders.flatMap((s) => s.entries.filter((e) => e.acked).map((e) => e.clientMessageId));
  }

  /** Sends the service has durably accepted (RECEIPT without an error) so far. */
  get accepted(): number {
    return this.acceptedIds().length;
  }

  acceptedIds(): string[] {
    return this.senders.flatMap((s) => [...s.wire].filter(([, w]) => w.accepted).map(([id]) => id));
  }

  /** Connects everybody (recipients first, so nothing is sent before they listen), then sends. */
  async start(): Promise<void> {
    await Promise.all(this.recipients.map((r) => r.link.start()));
    await Promise.all(this.senders.map((s) => s.link.start()));
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
    while ((await pendingOutboxRows(databaseUrl)) > 0 && Date.now() < drainUntil) await sleep(100);
    // Acked messages may still be on their way to recipients: wait (bounded) for the SDK to hand them out.
    const ackedSoFar = new Set(this.ackedIds());
    const storedSoFar = await storedMessages(databaseUrl, this.pairs.map((p) => p.sessionId));
    const expectedMessageIds = new Set(storedSoFar.filter((m) => ackedSoFar.has(m.clientMessageId)).map((m) => m.messageId));
    const handedOutIds = (): Set<string> => new Set(this.recipients.flatMap((r) => r.handedOut.map((m) => m.messageId)));
    const waitUntil = Date.now() + 3_000;
    while ([...expectedMessageIds].some((id) => !handedOutIds().has(id)) && Date.now() < waitUntil) await sleep(50);
    // A message lost live with nothing after it leaves no gap to notice: catch up as opening the conversation would.
    await Promise.all(this.recipients.map((r) => r.catchUp()));
    await Promise.all([...this.senders, ...this.recipients].map((p) => p.link.client.close()));

    // From here on nothing moves: the figures are of the final state.
    const ackedIds = new Set(this.ackedIds());
    const stored = await storedMessages(databaseUrl, this.pairs.map((p) => p.sessionId));

    const sentIds = this.senders.flatMap((s) => [...s.wire].filter(([, w]) => w.attempts > 0).map(([id]) => id));
    const storedCount = new Map<string, number>();
    for (const m of stored) storedCount.set(m.clientMessageId, (storedCount.get(m.clientMessageId) ?? 0) + 1);
    const mustBeStored = [...new Set([...ackedIds, ...this.acceptedIds()])];
    const live = new Map<string, number>();
    const handed = new Map<string, number>();
    let handedOutOfOrder = 0;
    for (const r of this.recipients) {
      for (const [id, n] of r.live) live.set(id, (live.get(id) ?? 0) + n);
      for (const m of r.handedOut) handed.set(m.messageId, (handed.get(m.messageId) ?? 0) + 1);
      r.handedOut.forEach((m, i) => {
        if (m.seq !== i + 1) handedOutOfOrder += 1;
      });
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
      sent: sentIds.length,
      attempts: this.senders.reduce((n, s) => n + [...s.wire.values()].reduce((a, w) => a + w.attempts, 0), 0),
      accepted: this.accepted,
      acked: ackedIds.size,
      stored: stored.length,
      deliveredLive: storedIds.filter((id) => live.has(id)).length,
      recoveredFromHistory: storedIds.filter((id) => !live.has(id) && handed.has(id)).length,
      duplicatesDelivered: [...live.values()].reduce((n, count) => n + (count - 1), 0),
      handedOut: storedIds.filter((id) => handed.has(id)).length,
      duplicatesHandedOut: [...handed.values()].reduce((n, count) => n + (count - 1), 0),
      handedOutOfOrder,
      lost: mustBeStored.filter((id) => !storedCount.has(id)).length,
      unacked: sentIds.filter((id) => !ackedIds.has(id)).length,
      storedMoreThanOnce: [...storedCount.values()].filter((n) => n > 1).length,
      seqGaps,
      reordered,
      transientErrors,
      permanentErrors: this.senders.reduce((n, s) => n + s.permanentErrors, 0),
      reconnects: [...this.senders, ...this.recipients].reduce((n, p) => n + Math.max(0, p.link.connects - 1), 0),
    };
    const undelivered = storedIds.filter((id) => !handed.has(id)).length;
    console.log(
      `ledger [${label}]: sent ${figures.sent} (${figures.attempts} SENDs), accepted ${figures.accepted}, acked ${figures.acked}, stored ${figures.stored}, ` +
        `delivered live ${figures.deliveredLive}, recovered from history ${figures.recoveredFromHistory}, undelivered ${undelivered}, ` +
        `duplicates delivered ${figures.duplicatesDelivered}, handed out by the SDK ${figures.handedOut} (twice ${figures.duplicatesHandedOut}, out of order ${figures.handedOutOfOrder}), ` +
        `lost ${figures.lost}, unacked ${figures.unacked}, stored twice ${figures.storedMoreThanOnce}, ` +
        `seq gaps ${figures.seqGaps}, reordered ${figures.reordered}, transient errors ${JSON.stringify(figures.transientErrors)}, reconnects ${figures.reconnects}`,
    );
    return figures;
  }
}

/** What the SDK promises the application: every stored message, once, in seq order. */
export function expectHandedOutOnceInOrder(f: LedgerFigures): void {
  expect(f.handedOut, 'every stored message handed to the application by the SDK').toBe(f.stored);
  expect(f.duplicatesHandedOut, 'handed out twice by the SDK').toBe(0);
  expect(f.handedOutOfOrder, 'handed out by the SDK out of seq order').toBe(0);
}
