/**
 * The outbox relay against real databases (PGlite in memory, and PostgreSQL where it answers) and a
 * real MemoryEventBus. The only stand-in is ScriptedBus, a wrapper that delegates to the memory bus
 * and can fail, hold or take the bus "down" for chosen envelopes. Nothing sleeps to assert: tests
 * poll for outcomes, and prove that something did not happen by waiting for a later cycle.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import pino, { type Logger } from 'pino';
import { createTestDatabase, infra, type TestDatabase } from '../../test/support/infra.js';
import { sessionTopic } from '../chat/chat-events.js';
import type { BusEnvelope, BusHandler, EventBus, Participant } from '../chat/ports.js';
import { MemoryEventBus } from '../bus/memory-event-bus.js';
import { Metrics } from '../observability/metrics.js';
import { migrate } from '../store/postgres/migrator.js';
import { PgDatabase } from '../store/postgres/pg-database.js';
import { PgliteDatabase } from '../store/postgres/pglite-database.js';
import { OUTBOX_CHANNEL, PostgresMessageStore } from '../store/postgres/postgres-message-store.js';
import { PostgresOutboxStore } from '../store/postgres/postgres-outbox-store.js';
import type { SqlDatabase } from '../store/postgres/sql-database.js';
import { OutboxRelay, type OutboxRelayOptions } from './outbox-relay.js';
import { defaultBackoff } from './retry-policy.js';

const silent = pino({ level: 'silent' });

// --- test bus -------------------------------------------------------------------------------------

/** The tag of a test envelope (its sessionId), or the messageId of a message event. */
const keyOf = (e: BusEnvelope): string => (e.event?.type === 'message' ? e.event.message.messageId : String(e.event?.sessionId));

interface Attempt {
  key: string;
  bus: string;
  at: number;
}

/** Shared by several ScriptedBuses (several relays): every attempt and every confirmed publish. */
class PublishLog {
  readonly attempts: Attempt[] = [];
  readonly published: Attempt[] = [];
  private readonly inFlight = new Map<string, number>();
  maxInFlightPerKey = 0;

  attemptsOf(key: string): Attempt[] {
    return this.attempts.filter((a) => a.key === key);
  }
  publishCount(key: string): number {
    return this.published.filter((a) => a.key === key).length;
  }
  begin(key: string): void {
    const n = (this.inFlight.get(key) ?? 0) + 1;
    this.inFlight.set(key, n);
    this.maxInFlightPerKey = Math.max(this.maxInFlightPerKey, n);
  }
  end(key: string): void {
    this.inFlight.set(key, (this.inFlight.get(key) ?? 1) - 1);
  }
}

/** Delegates to a real MemoryEventBus; fails, holds or goes down on command. */
class ScriptedBus implements EventBus {
  /** Return an error to fail this attempt (attempt counts from 1 per key on this log). */
  failWith: (key: string, attempt: number) => Error | undefined = () => undefined;
  /** While true, publishes wait until release(). */
  hold = false;
  /** Reported by isHealthy(), on top of the inner bus's own health. */
  up = true;
  private readonly held: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];

  constructor(
    readonly inner: MemoryEventBus,
    readonly log: PublishLog = new PublishLog(),
    readonly name = 'bus',
  ) {}

  get heldCount(): number {
    return this.held.length;
  }
  release(err?: Error): void {
    for (const h of this.held.splice(0)) {
      if (err) h.reject(err);
      else h.resolve();
    }
  }

  async publish(envelope: BusEnvelope): Promise<void> {
    const key = keyOf(envelope);
    this.log.attempts.push({ key, bus: this.name, at: Date.now() });
    const err = this.failWith(key, this.log.attemptsOf(key).length);
    if (err) throw err;
    this.log.begin(key);
    try {
      if (this.hold) await new Promise<void>((resolve, reject) => this.held.push({ resolve, reject }));
      await new Promise((r) => setImmediate(r)); // a network hop, so publishes overlap
      await this.inner.publish(envelope);
      this.log.published.push({ key, bus: this.name, at: Date.now() });
    } finally {
      this.log.end(key);
    }
  }
  async publishBatch(envelopes: readonly BusEnvelope[]): Promise<void> {
    // As one broker message: all or nothing, from the relay's side. Local delivery is not what
    // these tests look at, so every instance gets its own events through the bus as well.
    await Promise.all(envelopes.map((envelope) => this.publish(envelope)));
  }
  deliverLocally(envelope: BusEnvelope): void {
    this.inner.deliverLocally(envelope);
  }
  start(): Promise<void> {
    return this.inner.start();
  }
  stop(): Promise<void> {
    this.release(new Error('bus stopped'));
    return this.inner.stop();
  }
  onEvent(handler: BusHandler): void {
    this.inner.onEvent(handler);
  }
  addInterest(user: string): Promise<void> {
    return this.inner.addInterest(user);
  }
  removeInterest(user: string): void {
    this.inner.removeInterest(user);
  }
  isHealthy(): boolean {
    return this.up && this.inner.isHealthy();
  }
}

// --- helpers --------------------------------------------------------------------------------------

const ANN = 'ann@example.com';
const BEN = 'ben@example.com';

function envelope(key: string): BusEnvelope {
  return {
    recipients: [ANN, BEN],
    event: { type: 'typing', sessionId: key, destinations: [{ topic: sessionTopic(key) }], typing: { sessionId: key, email: ANN, typing: true } },
  };
}

const newKeys = (n: number, prefix = 'k'): string[] => Array.from({ length: n }, () => `${prefix}-${randomUUID()}`);

/** Inserts rows directly, without NOTIFY: only wake() or the poll can find them. */
async function insertRows(db: SqlDatabase, keys: readonly string[], payloads: readonly unknown[] = keys.map(envelope)): Promise<string[]> {
  const rows = await db.query<{ id: string | number }>(
    `INSERT INTO chat_message_outbox (destination, payload) SELECT '/topic/test', p FROM unnest($1::jsonb[]) WITH ORDINALITY AS t(p, i) ORDER BY i RETURNING id`,
    [payloads.map((p) => JSON.stringify(p))],
  );
  return rows.map((r) => String(r.id));
}

interface OutboxRow {
  id: string;
  key: string;
  processed: boolean;
  dead: boolean;
  retry_count: number;
  last_error: string | null;
  sent_at: Date | null;
  next_retry_at: Date;
  leased_for_ms: number;
}

async function readRows(db: SqlDatabase): Promise<OutboxRow[]> {
  const rows = await db.query<OutboxRow>(
    `SELECT id::text AS id, payload->'event'->>'sessionId' AS key, processed, dead, retry_count, last_error, sent_at, next_retry_at,
            (extract(epoch FROM next_retry_at - now()) * 1000)::float8 AS leased_for_ms
       FROM chat_message_outbox ORDER BY id`,
  );
  return rows.map((r) => ({ ...r, retry_count: Number(r.retry_count), leased_for_ms: Number(r.leased_for_ms) }));
}

const rowOf = async (db: SqlDatabase, key: string): Promise<OutboxRow | undefined> => (await readRows(db)).find((r) => r.key === key);
const countWhere = async (db: SqlDatabase, where: string): Promise<number> =>
  Number((await db.query<{ n: string | number }>(`SELECT count(*) AS n FROM chat_message_outbox WHERE ${where}`))[0]?.n);
const dbNow = async (db: SqlDatabase): Promise<number> => (await db.query<{ t: Date }>('SELECT now() AS t'))[0]!.t.getTime();
const counter = async (c: { get(): Promise<{ values: Array<{ value: number }> }> }): Promise<number> => (await c.get()).values[0]?.value ?? 0;

type LogLine = Record<string, unknown> & { msg: string; level: number };
function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { logger, lines };
}

const outboxCounts = (db: SqlDatabase): Promise<{ pending: number; dead: number }> => new PostgresOutboxStore(db).counts();

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;

// --- the suite, run on each database ----------------------------------------------------------------

interface DbFixture {
  db: SqlDatabase;
  /** Another connection (pool) to the same database, as another instance would have. */
  other: SqlDatabase;
  close(): Promise<void>;
}

function describeOutboxRelay(name: string, open: () => Promise<DbFixture>): void {
  describe(`OutboxRelay on ${name}`, () => {
    let fx: DbFixture;
    let db: SqlDatabase;
    const relays: OutboxRelay[] = [];
    const buses: ScriptedBus[] = [];

    beforeAll(async () => {
      fx = await open();
      db = fx.db;
    });
    afterAll(async () => {
      await fx?.close();
    });
    beforeEach(async () => {
      await db.query('TRUNCATE chat_message_outbox');
    });
    afterEach(async () => {
      for (const bus of buses) {
        bus.hold = false;
        bus.release(new Error('test over'));
      }
      await Promise.all(relays.splice(0).map((r) => r.stop()));
      await Promise.all(buses.splice(0).map((b) => b.stop()));
    });

    async function newBus(log?: PublishLog, busName?: string): Promise<ScriptedBus> {
      const bus = new ScriptedBus(new MemoryEventBus(), log, busName);
      await bus.start();
      buses.push(bus);
      return bus;
    }

    function newRelay(bus: EventBus, options: Partial<OutboxRelayOptions> = {}, extra: { db?: SqlDatabase; logger?: Logger; metrics?: Metrics } = {}): OutboxRelay {
      const relay = new OutboxRelay({
        store: new PostgresOutboxStore(extra.db ?? db),
        bus,
        metrics: extra.metrics ?? new Metrics({ defaultMetrics: false }),
        logger: extra.logger ?? silent,
        options: { pollIntervalMs: 60_000, ...options },
      });
      relays.push(relay);
      return relay;
    }

    /** Resolves once the relay has finished a cycle that started after this call. */
    async function settled(relay: OutboxRelay, bus: ScriptedBus): Promise<void> {
      // A sentinel row published proves every cycle before it has finished publishing.
      const [sentinel] = newKeys(1, 'sentinel');
      await insertRows(db, [sentinel!]);
      relay.wake();
      await expect.poll(() => bus.log.publishCount(sentinel!), { timeout: 5_000, interval: 2 }).toBe(1);
    }

    it('publishes every written row once and marks it processed', async () => {
      const bus = await newBus();
      const metrics = new Metrics({ defaultMetrics: false });
      const keys = newKeys(120);
      await insertRows(db, keys);
      const relay = newRelay(bus, { batchSize: 50 }, { metrics });
      await relay.start();

      await expect.poll(() => countWhere(db, 'processed'), { timeout: 10_000 }).toBe(120);
      for (const key of keys) expect(bus.log.publishCount(key)).toBe(1);
      const rows = await readRows(db);
      expect(rows.every((r) => r.sent_at !== null && r.retry_count === 0 && !r.dead)).toBe(true);
      expect(await counter(metrics.outboxPublished)).toBe(120);
      expect((await metrics.outboxLag.get()).values.find((v) => v.metricName?.endsWith('_count'))?.value).toBe(120);
      expect(await outboxCounts(db)).toEqual({ pending: 0, dead: 0 });
    });

    it('publishes right after wake() without waiting for the poll', async () => {
      const bus = await newBus();
      const relay = newRelay(bus, { pollIntervalMs: 60_000 });
      await relay.start();
      await settled(relay, bus);

      const [key] = newKeys(1);
      await insertRows(db, [key!]);
      const t0 = performance.now();
      relay.wake();
      await expect.poll(() => bus.log.publishCount(key!), { timeout: 5_000, interval: 2 }).toBe(1);
      expect(performance.now() - t0).toBeLessThan(5_000); // the poll is 60 s away
      await expect.poll(() => rowOf(db, key!).then((r) => r?.processed)).toBe(true);
    });

    it('is woken by a NOTIFY committed through another connection', async () => {
      const bus = await newBus();
      const relay = newRelay(bus, { pollIntervalMs: 60_000 });
      await relay.start();
      await settled(relay, bus);

      const [key] = newKeys(1);
      await fx.other.transaction(async (tx) => {
        await tx.query(`INSERT INTO chat_message_outbox (destination, payload) VALUES ('/topic/test', $1::jsonb)`, [JSON.stringify(envelope(key!))]);
        await tx.query(`SELECT pg_notify('${OUTBOX_CHANNEL}', '')`);
      });
      await expect.poll(() => bus.log.publishCount(key!), { timeout: 5_000, interval: 2 }).toBe(1);
    });

    it('leaves its own instance\u2019s NOTIFY to wake(), and looks after another instance\u2019s only after a pause', async () => {
      const bus = await newBus();
      const relay = new OutboxRelay({
        store: new PostgresOutboxStore(db, { origin: 'me' }),
        bus,
        metrics: new Metrics({ defaultMetrics: false }),
        logger: silent,
        options: { pollIntervalMs: 60_000, remoteWakeDelayMs: 300 },
      });
      relays.push(relay);
      await relay.start();
      await settled(relay, bus);
      const notifyFrom = (origin: string, key: string) =>
        fx.other.transaction(async (tx) => {
          await tx.query(`INSERT INTO chat_message_outbox (destination, payload) VALUES ('/topic/test', $1::jsonb)`, [JSON.stringify(envelope(key))]);
          await tx.query(`SELECT pg_notify('${OUTBOX_CHANNEL}', $1)`, [origin]);
        });

      const [own, remote] = newKeys(2);
      await notifyFrom('me', own!);
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect(bus.log.publishCount(own!)).toBe(0); // its own commits come through wake(), not NOTIFY
      const notifiedAt = Date.now();
      await notifyFrom('another-instance', remote!);
      await expect.poll(() => bus.log.publishCount(remote!), { timeout: 5_000, interval: 5 }).toBe(1);
      expect(Date.now() - notifiedAt).toBeGreaterThanOrEqual(250);
      expect(bus.log.publishCount(own!)).toBe(1); // claimed with it, in id order
    });

    it('turns wakes during a cycle into exactly one more cycle', async () => {
      const bus = await newBus();
      const relay = newRelay(bus, { pollIntervalMs: 60_000 });
      await relay.start();
      await settled(relay, bus);

      bus.hold = true;
      const [first, second, third, fourth] = newKeys(4);
      await insertRows(db, [first!]);
      relay.wake();
      await expect.poll(() => bus.heldCount).toBe(1);
      const cyclesDuringHold = relay.cycles;
      await insertRows(db, [second!, third!]);
      for (let i = 0; i < 5; i++) relay.wake();
      bus.hold = false;
      bus.release();

      await expect.poll(() => bus.log.publishCount(second!) + bus.log.publishCount(third!)).toBe(2);
      // The loop is sequential: once a later wake's row is out, any extra cycle would have run.
      await insertRows(db, [fourth!]);
      relay.wake();
      await expect.poll(() => rowOf(db, fourth!).then((r) => r?.processed)).toBe(true);
      expect(relay.cycles).toBe(cyclesDuringHold + 2);
    });

    it('marks the rows of several cycles with one statement, within markDelayMs', async () => {
      const bus = await newBus();
      const store = new PostgresOutboxStore(db);
      const marks: string[][] = [];
      const markPublished = store.markPublished.bind(store);
      store.markPublished = (ids) => (marks.push([...ids]), markPublished(ids));
      const relay = new OutboxRelay({ store, bus, metrics: new Metrics({ defaultMetrics: false }), logger: silent, options: { pollIntervalMs: 60_000, markDelayMs: 300 } });
      relays.push(relay);
      await relay.start();
      await settled(relay, bus);
      marks.length = 0;

      const keys = newKeys(4);
      const startedAt = Date.now();
      for (const key of keys) {
        await insertRows(db, [key]);
        relay.wake();
        await expect.poll(() => bus.log.publishCount(key), { interval: 5 }).toBe(1);
      }
      // Published one cycle each, recorded together once the first has waited markDelayMs.
      await expect.poll(() => Promise.all(keys.map((k) => rowOf(db, k).then((r) => r?.processed))), { timeout: 5_000, interval: 20 }).toEqual(keys.map(() => true));
      expect(Date.now() - startedAt).toBeGreaterThanOrEqual(250);
      const ids = await Promise.all(keys.map((k) => rowOf(db, k).then((r) => String(r!.id))));
      expect(marks.flat()).toEqual(expect.arrayContaining(ids));
      // settled()'s own row may still have been waiting for its mark: at most one statement more.
      expect(marks.length).toBeLessThanOrEqual(2);
    });

    it('computes the retry backoff: min(60 s, 2^n s)', () => {
      expect([1, 2, 3, 4, 5, 6, 7, 10].map(defaultBackoff)).toEqual([2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    });

    it('records a failed publish with retry_count + 1, last_error and next_retry_at = now + backoff', async () => {
      const bus = await newBus();
      const [key] = newKeys(1);
      bus.failWith = (k) => (k === key ? new Error('broker said no') : undefined);
      await insertRows(db, [key!]);
      const relay = newRelay(bus); // default backoff: 2 s, then 4 s

      const before1 = await dbNow(db);
      await relay.start();
      await expect.poll(() => rowOf(db, key!).then((r) => r?.retry_count)).toBe(1);
      const after1 = await dbNow(db);
      let row = (await rowOf(db, key!))!;
      expect(row.processed).toBe(false);
      expect(row.last_error).toMatch(/broker said no/);
      expect(row.next_retry_at.getTime()).toBeGreaterThanOrEqual(before1 + 2_000);
      expect(row.next_retry_at.getTime()).toBeLessThanOrEqual(after1 + 2_000);

      // Let time pass for the row, not for the test.
      await db.query('UPDATE chat_message_outbox SET next_retry_at = now() WHERE NOT processed');
      const before2 = await dbNow(db);
      relay.wake();
      await expect.poll(() => rowOf(db, key!).then((r) => r?.retry_count)).toBe(2);
      const after2 = await dbNow(db);
      row = (await rowOf(db, key!))!;
      expect(row.next_retry_at.getTime()).toBeGreaterThanOrEqual(before2 + 4_000);
      expect(row.next_retry_at.getTime()).toBeLessThanOrEqual(after2 + 4_000);
      expect(bus.log.attemptsOf(key!)).toHaveLength(2);
    });

    it('retries on the backoff schedule without waiting for the poll, then publishes once', async () => {
      const bus = await newBus();
      const [key] = newKeys(1);
      bus.failWith = (k, attempt) => (k === key && attempt <= 3 ? new Error(`attempt ${attempt} failed`) : undefined);
      await insertRows(db, [key!]);
      const backoff = (n: number): number => 40 * 2 ** n; // 80, 160, 320 ms
      const relay = newRelay(bus, { backoff, pollIntervalMs: 60_000 });
      await relay.start();

      await expect.poll(() => rowOf(db, key!).then((r) => r?.processed), { timeout: 10_000 }).toBe(true);
      const times = bus.log.attemptsOf(key!).map((a) => a.at);
      expect(times).toHaveLength(4);
      for (let n = 1; n <= 3; n++) expect(times[n]! - times[n - 1]!).toBeGreaterThanOrEqual(backoff(n) - 15);
      expect(bus.log.publishCount(key!)).toBe(1);
      const row = (await rowOf(db, key!))!;
      expect(row.retry_count).toBe(3);
      expect(row.dead).toBe(false);
    });

    it('goes back to waiting for the poll once the retries it scheduled are done', async () => {
      const bus = await newBus();
      const [key] = newKeys(1);
      bus.failWith = (k, attempt) => (k === key && attempt === 1 ? new Error('once') : undefined);
      await insertRows(db, [key!]);
      const relay = newRelay(bus, { backoff: () => 20, pollIntervalMs: 60_000 });
      await relay.start();
      await expect.poll(() => rowOf(db, key!).then((r) => r?.processed), { timeout: 10_000 }).toBe(true);
      const cycles = relay.cycles;
      // No retry waits and the poll is a minute away: nothing should run (it once ran every ~2 ms).
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(relay.cycles - cycles).toBeLessThanOrEqual(1);
    });

    it('marks a poison row dead after 10 failed tries while the other rows flow', async () => {
      const bus = await newBus();
      const { logger, lines } = capturingLogger();
      const metrics = new Metrics({ defaultMetrics: false });
      const good = newKeys(30);
      const poisonKey = `poison-${randomUUID()}`;
      // A row no current bus can take: no recipients (say, written by an older version).
      const poison = { event: envelope(poisonKey).event };
      const [poisonId] = await insertRows(db, [poisonKey], [poison]);
      await insertRows(db, good);
      const relay = newRelay(bus, { backoff: () => 5, pollIntervalMs: 60_000 }, { logger, metrics });
      await relay.start();

      await expect.poll(() => countWhere(db, `processed AND payload->'event'->>'sessionId' LIKE 'k-%'`), { timeout: 10_000 }).toBe(30);
      await expect.poll(() => rowOf(db, poisonKey).then((r) => r?.dead), { timeout: 10_000 }).toBe(true);
      const dead = (await rowOf(db, poisonKey))!;
      expect(dead.retry_count).toBe(10);
      expect(dead.processed).toBe(false);
      expect(dead.last_error).toMatch(/TypeError/);
      // Refused before the bus on each of the 10 tries, so it never fails the batch it would travel in.
      expect(bus.log.attemptsOf(poisonKey)).toHaveLength(0);
      for (const key of good) expect(bus.log.publishCount(key)).toBe(1);
      expect(await counter(metrics.outboxDeadTotal)).toBe(1);
      expect(await counter(metrics.outboxFailed)).toBe(10);
      expect(lines.find((l) => l.level === 50 && l.outboxId === poisonId)).toMatchObject({ err: expect.stringMatching(/TypeError/) });

      // Dead stays dead, and rows behind it still flow.
      const later = newKeys(5);
      await insertRows(db, later);
      relay.wake();
      await expect.poll(() => later.every((k) => bus.log.publishCount(k) === 1)).toBe(true);
      await expect.poll(() => outboxCounts(db)).toEqual({ pending: 0, dead: 1 });
      expect(bus.log.attemptsOf(poisonKey)).toHaveLength(0);
    });

    it('leaves the rows of a relay that died mid-batch to another relay after the lease', async () => {
      const log = new PublishLog();
      const stuckBus = await newBus(log, 'stuck');
      stuckBus.hold = true; // publishes never confirm: the relay is as good as dead
      const keys = newKeys(20);
      await insertRows(db, keys);
      const stuck = newRelay(stuckBus, { leaseMs: 400, publishTimeoutMs: 0 });
      await stuck.start();
      await expect.poll(() => stuckBus.heldCount).toBe(20);
      const leased = await readRows(db);
      expect(leased.every((r) => !r.processed && r.leased_for_ms > 0)).toBe(true);
      const leaseEnd = Math.min(...leased.map((r) => r.next_retry_at.getTime()));

      const healthyBus = await newBus(log, 'healthy');
      const rescuer = newRelay(healthyBus, { leaseMs: 400, pollIntervalMs: 50 }, { db: fx.other });
      await rescuer.start();
      await expect.poll(() => countWhere(db, 'processed'), { timeout: 10_000 }).toBe(20);
      for (const key of keys) expect(log.publishCount(key)).toBe(1);
      const rescued = log.published.filter((p) => p.bus === 'healthy');
      expect(rescued).toHaveLength(20);
      expect(Math.min(...rescued.map((p) => p.at))).toBeGreaterThanOrEqual(leaseEnd - 20);

      // The stuck relay finally hears back (failure): its lease is gone, so it records nothing.
      stuckBus.hold = false;
      stuckBus.release(new Error('connection lost'));
      await stuck.stop();
      const rows = await readRows(db);
      expect(rows.every((r) => r.processed && r.retry_count === 0 && r.last_error === null)).toBe(true);
    });

    it('prunes processed rows older than pruneAfterMs in small batches, and nothing else', async () => {
      const bus = await newBus();
      await db.query(
        `INSERT INTO chat_message_outbox (destination, payload, processed, sent_at)
         SELECT '/topic/test', $1::jsonb, true, now() - interval '2 minutes' FROM generate_series(1, 30)`,
        [JSON.stringify(envelope('old'))],
      );
      await db.query(`INSERT INTO chat_message_outbox (destination, payload, processed, sent_at) VALUES ('/topic/test', $1::jsonb, true, now() - interval '1 second')`, [
        JSON.stringify(envelope('recent')),
      ]);
      await db.query(`INSERT INTO chat_message_outbox (destination, payload, dead, retry_count) VALUES ('/topic/test', $1::jsonb, true, 10)`, [
        JSON.stringify(envelope('dead')),
      ]);
      await db.query(`INSERT INTO chat_message_outbox (destination, payload, next_retry_at) VALUES ('/topic/test', $1::jsonb, now() + interval '1 hour')`, [
        JSON.stringify(envelope('later')),
      ]);
      const relay = newRelay(bus, { pruneAfterMs: 60_000, pruneIntervalMs: 10, pruneBatchSize: 7 });
      await relay.start();

      await expect.poll(() => countWhere(db, `payload->'event'->>'sessionId' = 'old'`), { timeout: 10_000 }).toBe(0);
      const left = (await readRows(db)).map((r) => r.key).sort();
      expect(left).toEqual(['dead', 'later', 'recent']);
    });

    it('logs a database failure, keeps running and recovers', async () => {
      const bus = await newBus();
      const { logger, lines } = capturingLogger();
      const relay = newRelay(bus, { pollIntervalMs: 20, errorBackoffMaxMs: 50 }, { logger });
      await relay.start();
      await settled(relay, bus);

      await fx.other.query('ALTER TABLE chat_message_outbox RENAME TO chat_message_outbox_away');
      try {
        await expect.poll(() => lines.filter((l) => l.msg === 'outbox cycle failed, will retry').length, { timeout: 5_000 }).toBeGreaterThanOrEqual(2);
      } finally {
        await fx.other.query('ALTER TABLE chat_message_outbox_away RENAME TO chat_message_outbox');
      }
      const keys = newKeys(10);
      await insertRows(db, keys);
      relay.wake();
      await expect.poll(() => countWhere(db, 'processed AND payload->\'event\'->>\'sessionId\' LIKE \'k-%\''), { timeout: 5_000 }).toBe(10);
      expect(lines.some((l) => l.msg === 'outbox relay recovered')).toBe(true);
      expect(lines.find((l) => l.msg === 'outbox cycle failed, will retry')).toMatchObject({ level: 40, err: expect.any(Object) });
    });

    it('keeps the outcome of a batch whose marking failed and records it once the database is back', async () => {
      const bus = await newBus();
      const { logger, lines } = capturingLogger();
      const relay = newRelay(bus, { pollIntervalMs: 20, errorBackoffMaxMs: 50 }, { logger });
      await relay.start();
      await settled(relay, bus);

      bus.hold = true;
      const keys = newKeys(5);
      await insertRows(db, keys);
      relay.wake();
      await expect.poll(() => bus.heldCount).toBe(5);
      await fx.other.query('ALTER TABLE chat_message_outbox RENAME TO chat_message_outbox_away');
      try {
        bus.hold = false;
        bus.release();
        await expect.poll(() => lines.some((l) => l.msg === 'outbox cycle failed, will retry'), { timeout: 5_000 }).toBe(true);
      } finally {
        await fx.other.query('ALTER TABLE chat_message_outbox_away RENAME TO chat_message_outbox');
      }
      await expect.poll(() => countWhere(db, `processed AND payload->'event'->>'sessionId' LIKE 'k-%'`), { timeout: 5_000 }).toBe(5);
      // Recorded from memory, within the lease: nothing published twice.
      for (const key of keys) expect(bus.log.publishCount(key)).toBe(1);
    });

    it('claims nothing while the bus is down, and does not count a failure caused by the bus going down', async () => {
      const bus = await newBus();
      bus.up = false;
      const [early, late] = newKeys(2);
      await insertRows(db, [early!]);
      const relay = newRelay(bus, { pollIntervalMs: 10 });
      await relay.start();
      await expect.poll(() => relay.cycles).toBeGreaterThanOrEqual(3);
      let row = (await rowOf(db, early!))!;
      expect(bus.log.attempts).toHaveLength(0);
      expect(row.leased_for_ms).toBeLessThanOrEqual(0); // never claimed

      bus.up = true;
      await expect.poll(() => rowOf(db, early!).then((r) => r?.processed)).toBe(true);

      // The bus drops during a publish: the row is released, not counted against.
      bus.failWith = (k) => {
        if (k !== late) return undefined;
        bus.up = false;
        return new Error('connection closed');
      };
      await insertRows(db, [late!]);
      relay.wake();
      await expect.poll(() => rowOf(db, late!).then((r) => r?.last_error)).toMatch(/connection closed/);
      row = (await rowOf(db, late!))!;
      expect(row.retry_count).toBe(0);
      expect(row.dead).toBe(false);
      bus.failWith = () => undefined;
      bus.up = true;
      await expect.poll(() => rowOf(db, late!).then((r) => r?.processed)).toBe(true);
    });

    it('stop() waits for the in-flight batch, is idempotent, and ends wakes', async () => {
      const bus = await newBus();
      const keys = newKeys(5);
      await insertRows(db, keys);
      bus.hold = true;
      const relay = newRelay(bus);
      await relay.start();
      await expect.poll(() => bus.heldCount).toBe(5);

      let stopped = false;
      const first = relay.stop().then(() => {
        stopped = true;
      });
      const second = relay.stop();
      await new Promise((r) => setImmediate(r));
      expect(stopped).toBe(false);
      bus.hold = false;
      bus.release();
      await Promise.all([first, second]);
      expect(await countWhere(db, 'processed')).toBe(5);
      relay.wake(); // no-op, no throw
      await expect(relay.start()).rejects.toThrow(/start after stop/);
    });

    const a: Participant = { profileId: '00000000-0000-4000-8000-000000000001', email: ANN, displayName: 'Ann' };
    const b: Participant = { profileId: '00000000-0000-4000-8000-000000000002', email: BEN, displayName: 'Ben' };

    /** One send through the real store, with the event the service writes for it. */
    function appendHi(store: PostgresMessageStore, session: { id: string }) {
      return store.appendMessage({
        sessionId: session.id,
        senderProfileId: a.profileId,
        content: 'hi',
        clientMessageId: randomUUID(),
        sentAt: new Date(),
        toEvent: (m) => ({
          recipients: [ANN, BEN],
          event: {
            type: 'message',
            sessionId: session.id,
            destinations: [{ topic: sessionTopic(session.id) }],
            message: {
              messageId: m.id,
              sessionId: session.id,
              seq: m.seq,
              senderId: a.profileId,
              senderEmail: ANN,
              senderDisplayName: 'Ann',
              content: m.content,
              clientMessageId: m.clientMessageId,
              sentAt: m.sentAt.toISOString(),
              delivered: false,
              seen: false,
              editedAt: null,
              deleted: false,
            },
          },
        }),
      });
    }

    it('publishes what a local commit hands over without claiming it; on stop, hands back what it could not publish', async () => {
      const busA = await newBus(undefined, 'a');
      const busB = await newBus(busA.log, 'b');
      const store = new PostgresMessageStore(db, 'me', { leaseOutboxMs: 30_000 });
      const relayA = newRelay(busA, { pollIntervalMs: 60_000 });
      const relayB = newRelay(busB, { pollIntervalMs: 50 }, { db: fx.other });
      store.onOutboxWritten((written) => relayA.adopt(written));
      await relayA.start();
      await relayB.start();
      const session = await store.upsertSession({ a, b, intent: `adopt-${randomUUID()}` });

      const first = await appendHi(store, session);
      await expect.poll(() => busA.log.published.filter((p) => p.key === first.message.id).length).toBe(1);
      // Leased to A at insert: B, polling every 50 ms, never claimed it.
      expect(busA.log.published.filter((p) => p.key === first.message.id).map((p) => p.bus)).toEqual(['a']);

      busA.up = false; // A holds what it is handed while its bus is away...
      const held = [await appendHi(store, session), await appendHi(store, session)];
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(held.map((r) => busA.log.publishCount(r.message.id))).toEqual([0, 0]); // ...and B leaves them alone
      const stoppedAt = Date.now();
      await relayA.stop();
      // ...until A stops: then they are due at once, and B publishes them long before the lease ends.
      await expect.poll(() => held.map((r) => busA.log.publishCount(r.message.id)), { timeout: 5_000 }).toEqual([1, 1]);
      expect(Date.now() - stoppedAt).toBeLessThan(5_000);
    });

    it('still looks in the table once per poll interval while handed-over rows keep it busy', async () => {
      const bus = await newBus();
      const store = new PostgresMessageStore(db, 'me', { leaseOutboxMs: 30_000 });
      const relay = newRelay(bus, { pollIntervalMs: 200 });
      store.onOutboxWritten((written) => relay.adopt(written));
      await relay.start();
      const session = await store.upsertSession({ a, b, intent: `busy-${randomUUID()}` });
      let sending = true;
      const sends = (async () => {
        while (sending) {
          await appendHi(store, session);
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      })();
      try {
        // Due in the table and announced to nobody, as a dead instance's row is after its lease.
        const [orphan] = newKeys(1, 'orphan');
        await insertRows(db, [orphan!]);
        await expect.poll(() => bus.log.publishCount(orphan!), { timeout: 3_000, interval: 10 }).toBe(1);
      } finally {
        sending = false;
        await sends;
      }
    });

    it('reports commit→publish latency for sends handed over by the store (figure, not an assertion)', async () => {
      const bus = await newBus();
      await bus.addInterest(BEN);
      const store = new PostgresMessageStore(db, 'me', { leaseOutboxMs: 30_000 });
      const relay = newRelay(bus, { pollIntervalMs: 60_000 });
      const commits: number[] = [];
      store.onOutboxWritten((written) => {
        commits.push(performance.now());
        relay.adopt(written);
      });
      const delivered = new Map<number, number>();
      bus.onEvent((e) => {
        if (e.event.type === 'message') delivered.set(e.event.message.seq, performance.now());
      });
      await relay.start();
      const session = await store.upsertSession({ a, b, intent: `latency-${randomUUID()}` });

      const n = 300;
      for (let i = 0; i < n; i++) {
        // Sends arrive from the network, one macrotask each. In-memory PGlite settles a whole append
        // in microtasks, so a tight loop would starve the setImmediate hops of the bus and measure
        // the loop, not the relay.
        await new Promise((r) => setImmediate(r));
        await appendHi(store, session);
      }
      await expect.poll(() => delivered.size, { timeout: 20_000 }).toBe(n);
      expect(commits).toHaveLength(n);
      const lat = Array.from({ length: n }, (_, i) => delivered.get(i + 1)! - commits[i]!).sort((x, y) => x - y);
      console.log(
        `[outbox-relay ${name}] commit→delivery over ${n} sequential sends: p50 ${quantile(lat, 0.5).toFixed(2)} ms, p99 ${quantile(lat, 0.99).toFixed(2)} ms, max ${lat.at(-1)!.toFixed(2)} ms`,
      );
    });
  });
}

describeOutboxRelay('PGlite', async () => {
  const db = await PgliteDatabase.open(undefined);
  await migrate({ kind: 'pglite', db }, silent);
  return { db, other: db, close: () => db.close() };
});

describe.skipIf(!infra.postgresUrl)('on PostgreSQL', () => {
  let database: TestDatabase;
  const open = async (): Promise<DbFixture> => {
    database = await createTestDatabase(infra.postgresUrl!);
    await migrate({ kind: 'postgres', url: database.url }, silent);
    const db = new PgDatabase({ url: database.url, poolSize: 10, logger: silent });
    const other = new PgDatabase({ url: database.url, poolSize: 10, logger: silent });
    return {
      db,
      other,
      close: async () => {
        await Promise.all([db.close(), other.close()]);
        await database.drop();
      },
    };
  };

  describeOutboxRelay('PostgreSQL', open);

  describe('two relays on one database', () => {
    let fx: DbFixture;
    beforeAll(async () => {
      fx = await open();
    });
    afterAll(async () => {
      await fx?.close();
    });

    it('publishes every row exactly once between them while their leases hold', async () => {
      const log = new PublishLog();
      const busA = new ScriptedBus(new MemoryEventBus(), log, 'A');
      const busB = new ScriptedBus(new MemoryEventBus(), log, 'B');
      await Promise.all([busA.start(), busB.start()]);
      const options = { batchSize: 50, leaseMs: 120_000, publishBatchSize: 8, pollIntervalMs: 60_000, publishTimeoutMs: 60_000 };
      const relayA = new OutboxRelay({ store: new PostgresOutboxStore(fx.db), bus: busA, metrics: new Metrics({ defaultMetrics: false }), logger: silent, options });
      const relayB = new OutboxRelay({ store: new PostgresOutboxStore(fx.other), bus: busB, metrics: new Metrics({ defaultMetrics: false }), logger: silent, options });
      try {
        await Promise.all([relayA.start(), relayB.start()]);
        // Written in 20 commits through another connection; each NOTIFY wakes both relays.
        const keys = newKeys(2000);
        const writer = fx.other;
        for (let i = 0; i < keys.length; i += 100) {
          const chunk = keys.slice(i, i + 100);
          await writer.transaction(async (tx) => {
            await tx.query(`INSERT INTO chat_message_outbox (destination, payload) SELECT '/topic/test', p FROM unnest($1::jsonb[]) p`, [
              chunk.map((k) => JSON.stringify(envelope(k))),
            ]);
            await tx.query(`SELECT pg_notify('${OUTBOX_CHANNEL}', '')`);
          });
        }
        await expect.poll(() => countWhere(fx.db, 'processed'), { timeout: 30_000, interval: 20 }).toBe(2000);

        const perKey = new Map<string, number>();
        for (const p of log.published) perKey.set(p.key, (perKey.get(p.key) ?? 0) + 1);
        expect(perKey.size).toBe(2000);
        expect([...perKey.values()].every((n) => n === 1)).toBe(true);
        expect(log.attempts).toHaveLength(2000);
        expect(log.maxInFlightPerKey).toBe(1);
        const byA = log.published.filter((p) => p.bus === 'A').length;
        console.log(`[outbox-relay PostgreSQL] two relays: A published ${byA}, B published ${2000 - byA}`);
        expect(byA).toBeGreaterThan(0);
        expect(byA).toBeLessThan(2000);
      } finally {
        await Promise.all([relayA.stop(), relayB.stop()]);
        await Promise.all([busA.stop(), busB.stop()]);
      }
    });
  });
});
