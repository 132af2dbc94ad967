/**
 * The JSON body of a webhook delivery, `{id, type, createdAt, data}`, built from a stored row. Pure:
 * what is looked up at delivery time (is the recipient online, their unread total) comes in.
 *
 * `data` per type (public API, see the README's "Webhooks"):
 * - message.created: `{message, recipientEmail, recipientOnline, recipientUnread: {total, sessions}}`
 * - message.edited, message.deleted: `{message, recipientEmail}`
 * - report.created: `{report}`
 * Without content (`WEBHOOK_INCLUDE_CONTENT=false`) a message has no `content` key and a report's
 * `content` is null.
 */
import type { BusEnvelope, LeasedWebhookRow } from '../chat/ports.js';

export interface WebhookBody {
  readonly id: string;
  readonly type: string;
  readonly createdAt: string;
  readonly data: Record<string, unknown>;
}

/** What the dispatcher looked up for a message.created row. */
export interface RecipientState {
  readonly online: boolean;
  readonly unread: { readonly total: number; readonly sessions: number };
}

export class UnusableWebhookRow extends Error {
  override name = 'UnusableWebhookRow';
}

type MessageLike = { senderEmail: string } & Record<string, unknown>;

/** The message of a message/edit/delete event, or throws: rows written by another version may differ. */
export function messageOf(payload: BusEnvelope): MessageLike {
  const message = (payload?.event as { message?: unknown } | undefined)?.message;
  if (!message || typeof message !== 'object' || typeof (message as { senderEmail?: unknown }).senderEmail !== 'string') {
    throw new UnusableWebhookRow(`event ${String(payload?.event?.type)} carries no message`);
  }
  return message as MessageLike;
}

/**
 * Who a message event notifies: the user whose `messages` queue it is addressed to, else the
 * recipient that is not the sender. Undefined when neither can be told.
 */
export function recipientOf(payload: BusEnvelope): string | undefined {
  const sender = messageOf(payload).senderEmail;
  for (const d of payload.event.destinations ?? []) if ('user' in d && d.queue === 'messages' && d.user !== sender) return d.user;
  return (payload.recipients ?? []).find((r) => r !== sender);
}

const withoutContent = (message: MessageLike): MessageLike => {
  const { content: _content, ...rest } = message;
  return rest as MessageLike;
};

export function buildWebhookBody(row: LeasedWebhookRow, options: { includeContent: boolean }, recipient?: RecipientState): WebhookBody {
  const data = dataOf(row, options.includeContent, recipient);
  return { id: row.eventId, type: row.type, createdAt: row.createdAt.toISOString(), data };
}

function dataOf(row: LeasedWebhookRow, includeContent: boolean, recipient: RecipientState | undefined): Record<string, unknown> {
  switch (row.type) {
    case 'message.created': {
      if (!recipient) throw new Error('message.created needs the recipient state');
      const message = messageOf(row.payload);
      return {
        message: includeContent ? message : withoutContent(message),
        recipientEmail: recipientOf(row.payload) ?? null,
        recipientOnline: recipient.online,
        recipientUnread: { total: recipient.unread.total, sessions: recipient.unread.sessions },
      };
    }
    case 'message.edited':
    case 'message.deleted': {
      const message = messageOf(row.payload);
      return { message: includeContent ? message : withoutContent(message), recipientEmail: recipientOf(row.payload) ?? null };
    }
    case 'report.created': {
      const report = (row.payload?.event as { report?: unknown } | undefined)?.report;
      if (!report || typeof report !== 'object') throw new UnusableWebhookRow('report event carries no report');
      return { report: includeContent ? report : { ...report, content: null } };
    }
    default:
      throw new UnusableWebhookRow(`unknown webhook type ${row.type}`);
  }
}
