/**
 * The SendQueue contract (see the port's TSDoc), run against every driver. Tests go through the port
 * only: they enqueue sends and watch what the handlers are given.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ChatError } from '../chat/chat-errors.js';
import type { QueuedSend, SendQueue, SendQueueHandlers } from '../chat/ports.js';

export interface SendQueueFixture {
  /** A queue (not started), with short retry pauses and `maxAttempts` 3; every call on one fixture opens the same queue. */
  open(): SendQueue;
  /** Releases what the fixture made (queues on the broker and the like). */
  close(): Promise<void>;
}

const sendOf = (sessionId: string, content: string): QueuedSend => ({
  caller: { email: 'alice@example.com' },
  request: { sessionId, content, clientMessageId: randomUUID() },
});

/** `sharedBetweenProcesses`: another process's queue on the same broker takes over what one held. */
export function describeSendQueueContract(name: string, makeFixture: () => Promise<SendQueueFixture>, capabilities: { sharedBetweenProcesses: boolean }): void {
  describe(`SendQueue contract: ${name}`, () => {
    const started: SendQueue[] = [];
    let fixture: SendQueueFixture | undefined;
    afterEach(async () => {
      await Promise.allSettled(started.splice(0).map((q) => q.stop()));
      await fixture?.close();
      fixture = undefined;
    });

    async function start(handlers: SendQueueHandlers): Promise<SendQueue> {
      fixture ??= await makeFixture();
      const queue = fixture.open();
      queue.consume(handlers);
      await queue.start();
      started.push(queue);
      return queue;
    }

    it('hands every enqueued send to the handler once, a session\u2019s sends in the order they were enqueued', async () => {
      const seen: string[] = [];
      const queue = await start({ store: async (send) => void seen.push(String(send.request.content)), dead: () => undefined });
      expect(queue.isHealthy()).toBe(true);
      const [s1, s2] = [randomUUID(), randomUUID()];
      for (let i = 0; i < 20; i++) await queue.enqueue(sendOf(i % 2 ? s1 : s2, `${i % 2 ? 'a' : 'b'}${i}`));
      await expect.poll(() => seen.length).toBe(20);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(seen).toHaveLength(20);
      expect(seen.filter((c) => c.startsWith('a'))).toEqual(Array.from({ length: 10 }, (_, i) => `a${2 * i + 1}`));
      expect(seen.filter((c) => c.startsWith('b'))).toEqual(Array.from({ length: 10 }, (_, i) => `b${2 * i}`));
    });

    it('hands a session\u2019s sends over one at a time, while other sessions go on', async () => {
      let inSession = 0;
      let maxInSession = 0;
      const releaseSlow: Array<() => void> = [];
      const done: string[] = [];
      const [slow, fast] = [randomUUID(), randomUUID()];
      const queue = await start({
        store: async (send) => {
          if (send.request.sessionId === slow) {
            inSession += 1;
            maxInSession = Math.max(maxInSession, inSession);
            await new Promise<void>((resolve) => releaseSlow.push(resolve));
            inSession -= 1;
          }
          done.push(String(send.request.content));
        },
        dead: () => undefined,
      });
      for (let i = 0; i < 3; i++) await queue.enqueue(sendOf(slow, `slow${i}`));
      await queue.enqueue(sendOf(fast, 'fast'));
      await expect.poll(() => done).toEqual(['fast']);
      while (done.length < 4) {
        await expect.poll(() => releaseSlow.length).toBeGreaterThan(0);
        releaseSlow.shift()!();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(done).toEqual(['fast', 'slow0', 'slow1', 'slow2']);
      expect(maxInSession).toBe(1);
    });

    it('keeps a send through an outage, and the sends of its session behind it, then stores them in order', async () => {
      let outage = true;
      const stored: string[] = [];
      let attemptsDuringOutage = 0;
      const session = randomUUID();
      const queue = await start({
        store: async (send) => {
          if (outage) {
            attemptsDuringOutage += 1;
            throw new ChatError('STORE_UNAVAILABLE', 'the store is away');
          }
          stored.push(String(send.request.content));
        },
        dead: () => undefined,
      });
      for (let i = 0; i < 5; i++) await queue.enqueue(sendOf(session, `m${i}`));
      await expect.poll(() => attemptsDuringOutage).toBeGreaterThanOrEqual(4);
      expect(stored).toEqual([]);
      // Waiting sends are counted (a broker does not count those a consumer already holds).
      const waiting = await queue.depth();
      expect(waiting).toBeGreaterThanOrEqual(0);
      expect(waiting).toBeLessThanOrEqual(5);
      outage = false;
      await expect.poll(() => stored, { timeout: 10_000 }).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
      await expect.poll(() => queue.depth(), { timeout: 10_000 }).toBe(0);
    });

    it('sets a send that keeps failing aside as dead after 3 attempts, tells the dead handler, and moves on', async () => {
      const attempts = new Map<string, number>();
      const stored: string[] = [];
      const dead: Array<{ content: unknown; error: string }> = [];
      const session = randomUUID();
      const queue = await start({
        store: async (send) => {
          const content = String(send.request.content);
          attempts.set(content, (attempts.get(content) ?? 0) + 1);
          if (content === 'poison') throw new TypeError('cannot be stored');
          stored.push(content);
        },
        dead: (send, error) => void dead.push({ content: send.request.content, error }),
      });
      await queue.enqueue(sendOf(session, 'before'));
      await queue.enqueue(sendOf(session, 'poison'));
      await queue.enqueue(sendOf(session, 'after'));
      await expect.poll(() => stored, { timeout: 10_000 }).toEqual(['before', 'after']);
      expect(attempts.get('poison')).toBe(3);
      expect(dead).toEqual([{ content: 'poison', error: expect.stringMatching(/TypeError: cannot be stored/) }]);
    });

    it('lists dead sends without taking them out, and replays them to be stored', async () => {
      let cured = false;
      const stored: string[] = [];
      const dead: string[] = [];
      const session = randomUUID();
      const queue = await start({
        store: async (send) => {
          if (send.request.content === 'poison' && !cured) throw new TypeError('cannot be stored yet');
          stored.push(String(send.request.content));
        },
        dead: (send) => void dead.push(String(send.request.content)),
      });
      expect(await queue.listDead(10)).toEqual([]);
      expect(await queue.replayDead(10)).toBe(0);
      const poison = sendOf(session, 'poison');
      await queue.enqueue(poison);
      await queue.enqueue(sendOf(session, 'after'));
      await expect.poll(() => ({ stored, dead }), { timeout: 10_000 }).toEqual({ stored: ['after'], dead: ['poison'] });
      await expect.poll(() => queue.listDead(10).then((l) => l.length), { timeout: 10_000 }).toBe(1);

      const [listed] = await queue.listDead(10);
      expect(listed).toMatchObject({ senderEmail: 'alice@example.com', sessionId: session, clientMessageId: poison.request.clientMessageId, attempts: 3 });
      expect(listed!.error).toMatch(/TypeError: cannot be stored yet/);
      expect(listed!.deadAt).toBeInstanceOf(Date);
      expect(typeof listed!.id).toBe('string');
      // Looking took nothing out.
      expect((await queue.listDead(10)).map((d) => d.id)).toEqual([listed!.id]);
      expect(stored).toEqual(['after']);

      cured = true;
      expect(await queue.replayDead(10)).toBe(1);
      await expect.poll(() => stored, { timeout: 10_000 }).toEqual(['after', 'poison']);
      expect(await queue.listDead(10)).toEqual([]);
      expect(dead).toEqual(['poison']);
    });

    // Not a skip: a queue in one process has nobody to hand its sends to.
    if (capabilities.sharedBetweenProcesses) {
      it('hands a send it held when its consumer stopped to the next consumer', async () => {
        let release: (() => void) | undefined;
        const firstSeen: string[] = [];
        const first = await start({
          store: async (send) => {
            firstSeen.push(String(send.request.content));
            // Never finishes on this consumer: it stops with the send in hand.
            await new Promise<void>((resolve) => (release = resolve));
            throw new ChatError('STORE_UNAVAILABLE', 'stopping');
          },
          dead: () => undefined,
        });
        await first.enqueue(sendOf(randomUUID(), 'survivor'));
        await expect.poll(() => firstSeen).toEqual(['survivor']);
        const stopping = first.stop();
        release?.();
        await stopping;
        const secondSeen: string[] = [];
        await start({ store: async (send) => void secondSeen.push(String(send.request.content)), dead: () => undefined });
        await expect.poll(() => secondSeen, { timeout: 10_000 }).toEqual(['survivor']);
      });
    }
  });
}
