import { describe, expect, it } from 'vitest';
import type { ChatMessageView } from '../chat/chat-events.js';
import type { BusEnvelope, LeasedWebhookRow } from '../chat/ports.js';
import { CHAT_EVENT_OF_WEBHOOK, WEBHOOK_EVENT_TYPES, webhookTypeOf } from '../chat/webhook-events.js';
import { buildWebhookBody, recipientOf } from './webhook-payload.js';

const SESSION = '5f1c1e9e-0d5e-4f43-9d3a-8b0c5d8a0001';
const message: ChatMessageView = {
  messageId: 'm-1',
  sessionId: SESSION,
  seq: 7,
  senderId: 'p-ann',
  senderEmail: 'ann@example.com',
  senderDisplayName: 'Ann',
  content: 'see you at 8',
  clientMessageId: 'c-1',
  sentAt: '2026-01-01T10:00:00.000Z',
  delivered: false,
  seen: false,
  editedAt: null,
  deleted: false,
};
const destinations = [{ topic: `/topic/session.${SESSION}` }, { user: 'ben@example.com', queue: 'messages' as const }, { user: 'ann@example.com', queue: 'ack' as const }];

const row = (type: string, event: unknown, recipients = ['ann@example.com', 'ben@example.com']): LeasedWebhookRow => ({
  id: '1',
  eventId: 'e0e0e0e0-0000-4000-8000-000000000001',
  sessionId: SESSION,
  type,
  payload: { recipients, event } as BusEnvelope,
  createdAt: new Date('2026-01-01T10:00:00.123Z'),
  attempts: 0,
  lease: 'l',
});
const recipient = { online: false, unread: { total: 3, sessions: 2 } };

describe('webhook types', () => {
  it('map each webhook type to the chat event it announces, and only configured ones', () => {
    expect(WEBHOOK_EVENT_TYPES.map((t) => CHAT_EVENT_OF_WEBHOOK[t])).toEqual(['message', 'edit', 'delete', 'report']);
    const all = new Set(WEBHOOK_EVENT_TYPES);
    expect(['message', 'edit', 'delete', 'report', 'receipt', 'typing', 'error'].map((t) => webhookTypeOf(t, all))).toEqual([
      'message.created',
      'message.edited',
      'message.deleted',
      'report.created',
      undefined,
      undefined,
      undefined,
    ]);
    expect(webhookTypeOf('message', new Set(['report.created'] as const))).toBeUndefined();
  });
});

describe('webhook bodies', () => {
  it('message.created: the message, its recipient, whether they are online, and their unread totals', () => {
    const body = buildWebhookBody(row('message.created', { type: 'message', sessionId: SESSION, destinations, message }), { includeContent: true }, recipient);
    expect(body).toEqual({
      id: 'e0e0e0e0-0000-4000-8000-000000000001',
      type: 'message.created',
      createdAt: '2026-01-01T10:00:00.123Z',
      data: { message, recipientEmail: 'ben@example.com', recipientOnline: false, recipientUnread: { total: 3, sessions: 2 } },
    });
  });

  it('leaves the content out when told to', () => {
    const body = buildWebhookBody(row('message.created', { type: 'message', sessionId: SESSION, destinations, message }), { includeContent: false }, recipient);
    expect(body.data.message).not.toHaveProperty('content');
    expect(JSON.stringify(body)).not.toContain('see you at 8');
    expect(body.data.message).toMatchObject({ messageId: 'm-1', seq: 7, senderEmail: 'ann@example.com' });
  });

  it('message.edited and message.deleted: the message view as the event carries it, and the recipient', () => {
    const edited = { ...message, content: 'see you at 9', editedAt: '2026-01-01T10:05:00.000Z', deleted: false };
    const deleted = { ...message, content: '', editedAt: null, deleted: true };
    // Events of the edits feature, constructed here: their destinations are the feature's to choose.
    const editBody = buildWebhookBody(row('message.edited', { type: 'edit', sessionId: SESSION, destinations: [{ topic: `/topic/session.${SESSION}` }], message: edited }), {
      includeContent: true,
    });
    expect(editBody).toMatchObject({ type: 'message.edited', data: { message: edited, recipientEmail: 'ben@example.com' } });
    const deleteBody = buildWebhookBody(row('message.deleted', { type: 'delete', sessionId: SESSION, destinations: [], message: deleted }), { includeContent: false });
    expect(deleteBody.data).toEqual({ message: { ...deleted, content: undefined }, recipientEmail: 'ben@example.com' });
    expect(deleteBody.data.message).not.toHaveProperty('content');
  });

  it('report.created: the report, its content only when content is included', () => {
    const report = {
      reportId: 'r-1',
      sessionId: SESSION,
      reporterEmail: 'ben@example.com',
      messageId: 'm-1',
      reason: 'spam',
      content: 'see you at 8',
      createdAt: '2026-01-01T11:00:00.000Z',
    };
    const event = { type: 'report', sessionId: SESSION, destinations: [], report };
    expect(buildWebhookBody(row('report.created', event, []), { includeContent: true }).data).toEqual({ report });
    expect(buildWebhookBody(row('report.created', event, []), { includeContent: false }).data).toEqual({ report: { ...report, content: null } });
  });

  it('finds the recipient from the recipients when no messages queue names one, and refuses a row without a message', () => {
    expect(recipientOf({ recipients: ['ann@example.com', 'ben@example.com'], event: { type: 'message', sessionId: SESSION, destinations: [], message } })).toBe('ben@example.com');
    expect(() => buildWebhookBody(row('message.edited', { type: 'edit', sessionId: SESSION, destinations: [] }), { includeContent: true })).toThrow(/no message/);
    expect(() => buildWebhookBody(row('thing.happened', { type: 'x', sessionId: SESSION, destinations: [] }), { includeContent: true })).toThrow(/unknown webhook type/);
  });
});
