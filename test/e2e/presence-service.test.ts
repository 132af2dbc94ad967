/**
 * PresenceService with its real parts on the embedded database: PGlite, the in-process bus, the
 * chat service. Two services on one database and one broker stand for two instances; the gateway's
 * part (telling it of connections) is played by calling `userConnected`/`userDisconnected`.
 */
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemoryBroker, MemoryEventBus } from '../../src/bus/memory-event-bus.js';
import { migrate } from '../../src/store/postgres/migrator.js';
import { PgliteDatabase } from '../../src/store/postgres/pglite-database.js';
import { PostgresMessageStore } from '../../src/store/postgres/postgres-message-store.js';
import { PostgresPresenceStore } from '../../src/store/postgres/postgres-presence-store.js';
import { PostgresProfileDirectory } from '../../src/store/postgres/postgres-profile-directory.js';
import { ChatService } from '../../src/chat/chat-service.js';
import { systemClock, type BusEnvelope } from '../../src/chat/ports.js';
import { PresenceService } from '../../src/chat/presence.js';

const DEBOUNCE_MS = 150;

describe('PresenceService', () => {
  let db: PgliteDatabase;
  const started: Array<{ stop(): Promise<void> }> = [];
  const errors: unknown[] = [];
  let broker: MemoryBroker;
  let chat: ChatService;

  beforeEach(async () => {
    db = await PgliteDatabase.open(undefined);
    await migrate({ kind: 'pglite', db }, pino({ level: 'silent' }));
    broker = new MemoryBroker();
    const bus = new MemoryEventBus({ broker });
    await bus.start();
    started.push(bus);
    chat = new ChatService({ store: new PostgresMessageStore(db), profiles: new PostgresProfileDirectory(db), bus, clock: systemClock, maxContentChars: 4000 });
  });
  afterEach(async () => {
    for (const s of started.splice(0).reverse()) await s.stop();
    await db.close();
    expect(errors.splice(0)).toEqual([]);
  });

  async function instance(instanceId: string): Promise<{ presence: PresenceService; bus: MemoryEventBus; heard: BusEnvelope[] }> {
    const bus = new MemoryEventBus({ broker });
    await bus.start();
    const heard: BusEnvelope[] = [];
    bus.onEvent((envelope) => heard.push(envelope));
    const presence = new PresenceService({
      store: new PostgresPresenceStore(db),
      bus,
      chat,
      options: { instanceId, debounceMs: DEBOUNCE_MS, heartbeatMs: 1_000, deadAfterMs: 5_000 },
      onError: (err) => errors.push(err),
    });
    await presence.start();
    started.push(bus, presence);
    return { presence, bus, heard };
  }

  const presenceEvents = (heard: BusEnvelope[]) => heard.flatMap((e) => (e.event.type === 'presence' ? [e.event.presence] : []));

  it('is online from the first connection anywhere until the last one has been closed for the debounce', async () => {
    const one = await instance('one');
    const two = await instance('two');
    const session = await chat.initSession({ email: 'alice@example.com' }, { toEmail: 'bob@example.com', intent: 'dating' });
    await one.bus.addInterest('alice@example.com');

    expect(await one.presence.isOnline('bob@example.com')).toBe(false);
    one.presence.userConnected('bob@example.com');
    await expect.poll(() => one.presence.isOnline('bob@example.com')).toBe(true);
    await expect.poll(() => presenceEvents(one.heard)).toEqual([{ email: 'bob@example.com', online: true, lastSeenAt: null }]);
    expect(one.heard[0]!.event).toMatchObject({ sessionId: session.sessionId, destinations: [{ user: 'alice@example.com', queue: 'presence' }] });
    expect(one.heard[0]!.recipients).toEqual(['alice@example.com']);
    expect(one.presence.counts()).toEqual({ connections: 1, users: 1 });

    // A second connection on the other instance, then the first one goes: still online, no news.
    two.presence.userConnected('bob@example.com');
    one.presence.userDisconnected('bob@example.com');
    await new Promise((resolve) => setTimeout(resolve, DEBOUNCE_MS * 3));
    expect(await two.presence.isOnline('bob@example.com')).toBe(true);
    expect(presenceEvents(one.heard)).toHaveLength(1);

    // The last one goes, and comes back within the debounce: nothing.
    two.presence.userDisconnected('bob@example.com');
    two.presence.userConnected('bob@example.com');
    await new Promise((resolve) => setTimeout(resolve, DEBOUNCE_MS * 3));
    expect(presenceEvents(one.heard)).toHaveLength(1);

    // The last one goes for good: offline, with the time it closed.
    const closedAt = Date.now();
    two.presence.userDisconnected('bob@example.com');
    expect(await two.presence.isOnline('bob@example.com')).toBe(true);
    await expect.poll(() => presenceEvents(one.heard).length).toBe(2);
    const offline = presenceEvents(one.heard)[1]!;
    expect(offline).toMatchObject({ email: 'bob@example.com', online: false });
    expect(Math.abs(Date.parse(offline.lastSeenAt!) - closedAt)).toBeLessThan(DEBOUNCE_MS);
    expect(await one.presence.isOnline('bob@example.com')).toBe(false);
    expect(await one.presence.peerPresence({ email: 'alice@example.com' }, session.sessionId)).toEqual({ peer: { online: false, lastSeenAt: offline.lastSeenAt } });
  });

  it('records its users offline at stop and tells their peers, once', async () => {
    const one = await instance('one');
    const two = await instance('two');
    await chat.initSession({ email: 'alice@example.com' }, { toEmail: 'bob@example.com', intent: 'dating' });
    await one.bus.addInterest('alice@example.com');
    two.presence.userConnected('bob@example.com');
    two.presence.userConnected('bob@example.com');
    await expect.poll(() => presenceEvents(one.heard).length).toBe(1);
    expect(two.presence.counts()).toEqual({ connections: 2, users: 1 });

    await two.presence.stop();
    await expect.poll(() => presenceEvents(one.heard).map((p) => p.online)).toEqual([true, false]);
    expect(await one.presence.isOnline('bob@example.com')).toBe(false);
    expect((await one.presence.clusterConnections()).instances.map((i) => i.instanceId)).toEqual(['one']);
  });

  it('refuses a caller who is not in the session', async () => {
    const { presence } = await instance('one');
    const session = await chat.initSession({ email: 'alice@example.com' }, { toEmail: 'bob@example.com', intent: 'dating' });
    await expect(presence.peerPresence({ email: 'carol@example.com' }, session.sessionId)).rejects.toMatchObject({ code: 'NOT_A_PARTICIPANT' });
    await expect(presence.peerPresence({ email: 'alice@example.com' }, 'not-a-uuid')).rejects.toMatchObject({ code: 'VALIDATION_FAILED' });
  });
});
