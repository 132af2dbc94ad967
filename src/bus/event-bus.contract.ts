/**
 * The EventBus contract (TSDoc of `EventBus` in chat/ports.ts), run against every implementation.
 * Tests go only through the port. They never sleep: they poll for what must arrive, and prove that
 * something did NOT arrive by publishing a later sentinel from the same bus to a user the receiver
 * is interested in and waiting for it (one publisher to one queue keeps its order in RabbitMQ, and
 * the memory broker routes synchronously).
 */
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { BusEnvelope, EventBus } from '../chat/ports.js';
import { sessionTopic, type ChatEvent } from '../chat/chat-events.js';

export interface BusFixture {
  /** Three started buses on one broker, standing for three instances of the cluster. */
  readonly buses: readonly [EventBus, EventBus, EventBus];
  /** A bus on the same broker, not started; `close()` stops it too. */
  createUnstarted(): EventBus;
  /** The linger the fixture's buses use; keep it short. */
  readonly lingerMs: number;
  close(): Promise<void>;
}

/** Emails unique to this run, with dots and mixed case like real ones. */
const newUser = (): string => `User.${randomUUID().slice(0, 8)}.${Date.now().toString(36)}@Example.test`.toLowerCase();

function messageEvent(from: string, to: string): ChatEvent {
  const sessionId = randomUUID();
  return {
    type: 'message',
    sessionId,
    destinations: [{ topic: sessionTopic(sessionId) }, { user: to, queue: 'messages' }, { user: from, queue: 'ack' }],
    message: {
      messageId: randomUUID(),
      sessionId,
      seq: 1,
      senderId: randomUUID(),
      senderEmail: from,
      senderDisplayName: 'Zoë ✓ "quoted"',
      content: 'hello 👋 <b>not html</b>\nsecond line',
      clientMessageId: randomUUID(),
      sentAt: new Date().toISOString(),
      delivered: false,
      seen: false,
      editedAt: null,
      deleted: false,
    },
  };
}

const envelopeFor = (...recipients: string[]): BusEnvelope => ({
  recipients,
  event: messageEvent(recipients[0] ?? 'nobody@example.test', recipients[1] ?? 'nobody@example.test'),
});

const idOf = (envelope: BusEnvelope): string =>
  envelope.event.type === 'message' ? envelope.event.message.messageId : `${envelope.event.type}:${envelope.event.sessionId}`;

/** Everything a bus received, in arrival order. */
class Inbox {
  readonly received: BusEnvelope[] = [];
  constructor(bus: EventBus) {
    bus.onEvent((envelope) => this.received.push(envelope));
  }
  count(envelope: BusEnvelope): number {
    const id = idOf(envelope);
    return this.received.filter((e) => idOf(e) === id).length;
  }
  async toReceive(envelope: BusEnvelope): Promise<void> {
    await expect.poll(() => this.count(envelope), { timeout: 10_000, interval: 5 }).toBeGreaterThan(0);
  }
}

export function describeEventBusContract(name: string, open: () => Promise<BusFixture>): void {
  describe(`EventBus contract: ${name}`, () => {
    let fixture: BusFixture;
    let buses: readonly [EventBus, EventBus, EventBus];
    let inboxes: [Inbox, Inbox, Inbox];

    beforeEach(async () => {
      fixture = await open();
      buses = fixture.buses;
      inboxes = [new Inbox(buses[0]), new Inbox(buses[1]), new Inbox(buses[2])];
    });

    afterEach(async () => {
      await fixture.close();
    });

    /** Publishes a sentinel from `publisher` to `user` (interested on `receiver`) and waits for it. */
    async function flush(publisher: EventBus, receiver: Inbox, user: string): Promise<void> {
      const sentinel = envelopeFor(user);
      await publisher.publish(sentinel);
      await receiver.toReceive(sentinel);
    }

    it('delivers an event exactly to the instances interested in one of its recipients', async () => {
      const [alice, bob, carol] = [newUser(), newUser(), newUser()];
      await buses[0].addInterest(alice);
      await buses[1].addInterest(bob);
      await buses[2].addInterest(carol);

      const envelope = envelopeFor(alice, bob);
      await buses[2].publish(envelope);

      await inboxes[0].toReceive(envelope);
      await inboxes[1].toReceive(envelope);
      await flush(buses[2], inboxes[2], carol);
      await flush(buses[2], inboxes[0], alice);
      await flush(buses[2], inboxes[1], bob);
      expect(inboxes[2].count(envelope)).toBe(0);
      expect(inboxes[0].count(envelope)).toBe(1);
      expect(inboxes[1].count(envelope)).toBe(1);
    });

    it('accepts an event with no recipients (a report, for moderation only) and delivers it nowhere, alone or in a batch', async () => {
      const [alice, bob] = [newUser(), newUser()];
      await buses[0].addInterest(alice);
      await buses[1].addInterest(bob);
      const nobody = envelopeFor();
      await buses[2].publish(nobody);
      await buses[2].publishBatch([envelopeFor()]);
      const batch = [envelopeFor(alice), nobody, envelopeFor(bob)];
      await buses[2].publishBatch(batch);
      await inboxes[0].toReceive(batch[0]!);
      await inboxes[1].toReceive(batch[2]!);
      await flush(buses[2], inboxes[0], alice);
      await flush(buses[2], inboxes[1], bob);
      for (const inbox of inboxes) expect(inbox.received.filter((e) => e.recipients.length === 0)).toEqual([]);
    });

    it('publishBatch hands each instance exactly the events of its interested users, each once and in order', async () => {
      const [alice, bob, carol, dave] = [newUser(), newUser(), newUser(), newUser()];
      await buses[0].addInterest(alice);
      await buses[0].addInterest(bob);
      await buses[1].addInterest(carol);

      const batch = [envelopeFor(alice, carol), envelopeFor(bob, dave), envelopeFor(dave), envelopeFor(carol), envelopeFor(bob, alice)];
      await buses[2].publishBatch(batch);
      await flush(buses[2], inboxes[0], alice);
      await flush(buses[2], inboxes[1], carol);

      const ids = (inbox: Inbox): string[] => inbox.received.map(idOf).filter((id) => batch.some((e) => idOf(e) === id));
      expect(ids(inboxes[0])).toEqual([batch[0]!, batch[1]!, batch[4]!].map(idOf));
      expect(ids(inboxes[1])).toEqual([batch[0]!, batch[3]!].map(idOf));
      expect(ids(inboxes[2])).toEqual([]);
      expect(inboxes[0].received.find((e) => idOf(e) === idOf(batch[1]!))).toEqual(batch[1]);
    });

    it('publishBatch deliveredHere skips the publishing instance only', async () => {
      const [alice, bob] = [newUser(), newUser()];
      await buses[0].addInterest(alice);
      await buses[1].addInterest(bob);
      const batch = [envelopeFor(alice, bob), envelopeFor(alice)];
      await buses[0].publishBatch(batch, { deliveredHere: true });
      await inboxes[1].toReceive(batch[0]!);
      await flush(buses[1], inboxes[0], alice);
      expect(inboxes[0].count(batch[0]!)).toBe(0);
      expect(inboxes[0].count(batch[1]!)).toBe(0);
      expect(inboxes[1].count(batch[0]!)).toBe(1);
    });

    it('publishBatch of many events to many users, more than one bus message holds, delivers every one', async () => {
      const bob = newUser();
      await buses[1].addInterest(bob);
      // 1,200 other recipients: more routing keys than one message's headers may carry.
      const batch = Array.from({ length: 1_200 }, () => envelopeFor(newUser(), bob));
      await buses[0].publishBatch(batch);
      await expect.poll(() => batch.every((e) => inboxes[1].count(e) === 1), { timeout: 10_000, interval: 10 }).toBe(true);
      await buses[0].publishBatch([]);
    });

    it('delivers once per publish when several recipients are interested on the same instance', async () => {
      const [alice, bob] = [newUser(), newUser()];
      await buses[0].addInterest(alice);
      await buses[0].addInterest(bob);

      const both = envelopeFor(alice, bob);
      const repeated = envelopeFor(bob, alice, bob);
      await buses[1].publish(both);
      await buses[1].publish(repeated);
      await flush(buses[1], inboxes[0], alice);

      expect(inboxes[0].count(both)).toBe(1);
      expect(inboxes[0].count(repeated)).toBe(1);
    });

    it('deliverLocally hands envelopes to this instance only, after the call returns, in call order', async () => {
      const [alice, bob] = [newUser(), newUser()];
      await buses[0].addInterest(alice);
      await buses[1].addInterest(alice);
      const envelopes = [envelopeFor(alice, bob), envelopeFor(bob), envelopeFor(alice)];
      const before = inboxes[0].received.length;
      for (const envelope of envelopes) buses[0].deliverLocally(envelope);
      expect(inboxes[0].received.length).toBe(before);
      await expect.poll(() => inboxes[0].received.length, { timeout: 5_000, interval: 5 }).toBe(before + envelopes.length);
      expect(inboxes[0].received.slice(before).map(idOf)).toEqual(envelopes.map(idOf));
      // Nothing crosses to other instances, whoever is interested there.
      await flush(buses[0], inboxes[1], alice);
      for (const envelope of envelopes) expect(inboxes[1].count(envelope)).toBe(0);
    });

    it('hands every handler an envelope deep-equal to the published one', async () => {
      const [alice, bob] = [newUser(), newUser()];
      const second: BusEnvelope[] = [];
      buses[1].onEvent((envelope) => second.push(envelope));
      await buses[1].addInterest(bob);

      const envelope = envelopeFor(alice, bob);
      await buses[0].publish(envelope);

      await inboxes[1].toReceive(envelope);
      expect(inboxes[1].received).toStrictEqual([envelope]);
      await expect.poll(() => second.length).toBe(1);
      expect(second).toStrictEqual([envelope]);
    });

    it('routes to an instance whose addInterest resolved before the publish', async () => {
      // No wait between the two calls: addInterest resolving is the promise that routing is in place.
      const alice = newUser();
      for (const bus of [buses[1], buses[2]]) await bus.addInterest(alice);
      const envelope = envelopeFor(alice);
      await buses[0].publish(envelope);

      await inboxes[1].toReceive(envelope);
      await inboxes[2].toReceive(envelope);
    });

    it('treats interest emails case-insensitively', async () => {
      const alice = newUser();
      await buses[1].addInterest(alice.toUpperCase());
      const envelope = envelopeFor(alice);
      await buses[0].publish(envelope);
      await inboxes[1].toReceive(envelope);
    });

    it('resolves publish for a user nobody is interested in and delivers it nowhere', async () => {
      const [nobody, alice] = [newUser(), newUser()];
      await buses[1].addInterest(alice);
      const envelope = envelopeFor(nobody);
      await expect(buses[0].publish(envelope)).resolves.toBeUndefined();
      await flush(buses[0], inboxes[1], alice);
      expect(inboxes.map((inbox) => inbox.count(envelope))).toEqual([0, 0, 0]);
    });

    it('stops delivering once the interest is removed and the linger has passed', async () => {
      const [alice, carol] = [newUser(), newUser()];
      await buses[1].addInterest(alice);
      await buses[1].addInterest(carol);
      const before = envelopeFor(alice);
      await buses[0].publish(before);
      await inboxes[1].toReceive(before);

      buses[1].removeInterest(alice);
      await vi.waitFor(
        async () => {
          const probe = envelopeFor(alice);
          await buses[0].publish(probe);
          await flush(buses[0], inboxes[1], carol);
          expect(inboxes[1].count(probe)).toBe(0);
        },
        { timeout: fixture.lingerMs + 10_000, interval: 10 },
      );
    });

    it('keeps delivering while any addInterest is not yet matched by a removeInterest', async () => {
      const [alice, carol] = [newUser(), newUser()];
      await buses[1].addInterest(alice);
      await buses[1].addInterest(alice);
      await buses[1].addInterest(carol);
      buses[1].removeInterest(alice);
      buses[1].removeInterest(carol);
      // carol's interest was dropped after alice's: once carol is unrouted, any linger alice's
      // removal could have started is over too.
      await waitUntilUnrouted(buses[0], inboxes[1], carol, alice);

      const envelope = envelopeFor(alice);
      await buses[0].publish(envelope);
      await inboxes[1].toReceive(envelope);
    });

    it('keeps delivering when interest returns before the linger is over', async () => {
      const [alice, carol, dave] = [newUser(), newUser(), newUser()];
      await buses[1].addInterest(alice);
      await buses[1].addInterest(carol);
      await buses[1].addInterest(dave);
      buses[1].removeInterest(alice);
      await buses[1].addInterest(alice);
      buses[1].removeInterest(carol);
      await waitUntilUnrouted(buses[0], inboxes[1], carol, dave);

      const envelope = envelopeFor(alice);
      await buses[0].publish(envelope);
      await inboxes[1].toReceive(envelope);
    });

    it('ignores a removeInterest without a matching addInterest', async () => {
      const alice = newUser();
      buses[1].removeInterest(alice);
      await buses[1].addInterest(alice);
      const envelope = envelopeFor(alice);
      await buses[0].publish(envelope);
      await inboxes[1].toReceive(envelope);
    });

    it('delivers every one of many concurrent publishes', async () => {
      const [alice, bob] = [newUser(), newUser()];
      await buses[0].addInterest(alice);
      await buses[1].addInterest(bob);
      const envelopes = Array.from({ length: 500 }, () => envelopeFor(alice, bob));
      await Promise.all(envelopes.map((envelope) => buses[2].publish(envelope)));

      const expected = new Set(envelopes.map(idOf));
      for (const inbox of [inboxes[0], inboxes[1]]) {
        await expect.poll(() => new Set(inbox.received.map(idOf)).size, { timeout: 20_000 }).toBe(500);
        expect(new Set(inbox.received.map(idOf))).toEqual(expected);
      }
      expect(inboxes[2].received).toHaveLength(0);
    });

    it('rejects publish before start', async () => {
      const bus = fixture.createUnstarted();
      expect(bus.isHealthy()).toBe(false);
      await expect(bus.publish(envelopeFor(newUser()))).rejects.toThrow();
    });

    it('is healthy between start and stop, stops idempotently and then rejects publish', async () => {
      const bus = fixture.createUnstarted();
      await bus.start();
      expect(bus.isHealthy()).toBe(true);
      await Promise.all([bus.stop(), bus.stop()]);
      await bus.stop();
      expect(bus.isHealthy()).toBe(false);
      await expect(bus.publish(envelopeFor(newUser()))).rejects.toThrow();
    });

    it('receives nothing after stop', async () => {
      const alice = newUser();
      const bus = fixture.createUnstarted();
      const inbox = new Inbox(bus);
      await bus.start();
      await bus.addInterest(alice);
      await buses[1].addInterest(alice);
      await bus.stop();

      const envelope = envelopeFor(alice);
      await buses[0].publish(envelope);
      await inboxes[1].toReceive(envelope);
      await flush(buses[0], inboxes[1], alice);
      expect(inbox.received).toHaveLength(0);
    });

    it('binds the interest registered before start', async () => {
      const alice = newUser();
      const bus = fixture.createUnstarted();
      const inbox = new Inbox(bus);
      await bus.addInterest(alice);
      await bus.start();

      const envelope = envelopeFor(alice);
      await buses[0].publish(envelope);
      await inbox.toReceive(envelope);
    });

    /**
     * Waits until events for `gone` no longer reach `receiver`, proving each probe's absence with a
     * sentinel to `stillThere`, which `receiver` is interested in.
     */
    async function waitUntilUnrouted(publisher: EventBus, receiver: Inbox, gone: string, stillThere: string): Promise<void> {
      await vi.waitFor(
        async () => {
          const probe = envelopeFor(gone);
          await publisher.publish(probe);
          await flush(publisher, receiver, stillThere);
          expect(receiver.count(probe)).toBe(0);
        },
        { timeout: fixture.lingerMs + 10_000, interval: 10 },
      );
    }
  });
}
