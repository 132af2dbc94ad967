import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChatClientError } from './chat-client-error.js';
import type { ChatMessage } from './chat-types.js';
import { newClientMessageId, PendingSends, type SendRequest } from './pending-sends.js';

const RESEND_MS = 1_000;

function sends(options: { wire?: boolean } = {}) {
  const transmitted: SendRequest[] = [];
  let wire = options.wire ?? true;
  const pending = new PendingSends({
    transmit: (request) => {
      if (!wire) return false;
      transmitted.push(request);
      return true;
    },
    resendAfterMs: RESEND_MS,
  });
  return { pending, transmitted, cutWire: (cut: boolean) => (wire = !cut) };
}

const stored = (request: SendRequest, seq = 1): ChatMessage => ({
  messageId: `id-${seq}`,
  sessionId: request.sessionId,
  seq,
  senderId: 'me',
  senderEmail: 'me@example.com',
  senderDisplayName: 'Me',
  content: request.content,
  clientMessageId: request.clientMessageId,
  sentAt: new Date(0).toISOString(),
  delivered: false,
  seen: false,
  editedAt: null,
  deleted: false,
});

const refusal = (clientMessageId: string, code: string, status: number) => ChatClientError.fromProblem({ code, status, detail: code, clientMessageId });

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('PendingSends', () => {
  it('keeps sends made offline and SENDs them all when a connection is up', () => {
    const { pending, transmitted } = sends();
    const a = pending.add('s1', 'one');
    const b = pending.add('s1', 'two');
    expect(transmitted).toEqual([]);
    pending.resume();
    expect(transmitted.map((r) => [r.clientMessageId, r.content])).toEqual([
      [a.clientMessageId, 'one'],
      [b.clientMessageId, 'two'],
    ]);
    expect(pending.size).toBe(2);
  });

  it('re-SENDs with the same clientMessageId after resendAfterMs while up, and not while down', () => {
    const { pending, transmitted } = sends();
    pending.resume();
    const out = pending.add('s1', 'hi');
    vi.advanceTimersByTime(RESEND_MS - 1);
    expect(transmitted).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(transmitted.map((r) => r.clientMessageId)).toEqual([out.clientMessageId, out.clientMessageId]);

    pending.pause();
    vi.advanceTimersByTime(10 * RESEND_MS);
    expect(transmitted).toHaveLength(2);
    pending.resume(); // the next connection
    expect(transmitted).toHaveLength(3);
  });

  it('leaves a SEND that could not go out to the next connection, without a resend timer', () => {
    const { pending, transmitted, cutWire } = sends({ wire: false });
    pending.resume();
    pending.add('s1', 'lost in the socket');
    vi.advanceTimersByTime(10 * RESEND_MS);
    expect(transmitted).toEqual([]);
    cutWire(false);
    pending.pause();
    pending.resume();
    expect(transmitted).toHaveLength(1);
  });

  it('settles on a stored copy of the same send, from any source, once', async () => {
    const { pending, transmitted } = sends();
    pending.resume();
    const out = pending.add('s1', 'hi');
    pending.settle({ ...stored(transmitted[0]!), sessionId: 's2' }); // the same id in another session is not it
    expect(pending.size).toBe(1);
    pending.settle(stored(transmitted[0]!, 7));
    pending.settle(stored(transmitted[0]!, 7));
    await expect(out.acked).resolves.toMatchObject({ seq: 7, clientMessageId: out.clientMessageId });
    expect(pending.size).toBe(0);
    vi.advanceTimersByTime(10 * RESEND_MS);
    expect(transmitted).toHaveLength(1);
  });

  it('rejects a send refused for good, with its session; keeps one refused for now for the next resend', async () => {
    const { pending, transmitted } = sends();
    pending.resume();
    const empty = pending.add('s1', ' ');
    const busy = pending.add('s1', 'hi');
    const limited = pending.add('s1', 'hi again');

    const reported = pending.refused(refusal(empty.clientMessageId, 'CONTENT_EMPTY', 400));
    expect(reported).toMatchObject({ code: 'CONTENT_EMPTY', status: 400, details: { clientMessageId: empty.clientMessageId, sessionId: 's1' } });
    await expect(empty.acked).rejects.toBe(reported);

    expect(pending.refused(refusal(busy.clientMessageId, 'STORE_UNAVAILABLE', 503)).details.sessionId).toBe('s1');
    pending.refused(refusal(limited.clientMessageId, 'RATE_LIMITED', 429));
    expect(pending.size).toBe(2);
    vi.advanceTimersByTime(RESEND_MS);
    expect(transmitted.slice(3).map((r) => r.clientMessageId)).toEqual([busy.clientMessageId, limited.clientMessageId]);

    const stranger = refusal(newClientMessageId(), 'NOT_A_PARTICIPANT', 403);
    expect(pending.refused(stranger)).toBe(stranger);
  });

  it('close rejects what is pending and refuses later sends', async () => {
    const { pending, transmitted } = sends();
    const out = pending.add('s1', 'never sent');
    pending.close((r) => new ChatClientError('CLIENT_CLOSED', 'closed', undefined, { clientMessageId: r.clientMessageId, sessionId: r.sessionId }));
    await expect(out.acked).rejects.toMatchObject({ code: 'CLIENT_CLOSED', details: { clientMessageId: out.clientMessageId, sessionId: 's1' } });
    await expect(pending.add('s1', 'too late').acked).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
    pending.resume();
    expect([pending.size, transmitted.length]).toEqual([0, 0]);
  });

  it('makes version 4 UUIDs', () => {
    const ids = new Set(Array.from({ length: 100 }, newClientMessageId));
    expect(ids.size).toBe(100);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
