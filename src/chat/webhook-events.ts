/**
 * The webhook event types and the chat events each one announces. Public API: receivers switch on
 * these names. The store writes a webhook row for an event whose chat type maps to a configured
 * webhook type; the dispatcher turns the row into the body it POSTs.
 */
import type { ChatEvent } from './chat-events.js';

export const WEBHOOK_EVENT_TYPES = ['message.created', 'message.edited', 'message.deleted', 'report.created'] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** The chat event type (`ChatEvent['type']`, or one added by another feature) each webhook type announces. */
export const CHAT_EVENT_OF_WEBHOOK: Readonly<Record<WebhookEventType, string>> = {
  'message.created': 'message',
  'message.edited': 'edit',
  'message.deleted': 'delete',
  'report.created': 'report',
};

export const isWebhookEventType = (value: string): value is WebhookEventType => (WEBHOOK_EVENT_TYPES as readonly string[]).includes(value);

/**
 * Which webhook type a chat event is announced as, given the configured types; undefined when none
 * (receipts, typing, errors, or a type not configured). Takes the type as a string: events of
 * types this build does not know (written by a newer version) pass through the same check.
 */
export function webhookTypeOf(chatEventType: ChatEvent['type'] | string, enabled: ReadonlySet<WebhookEventType>): WebhookEventType | undefined {
  for (const type of enabled) if (CHAT_EVENT_OF_WEBHOOK[type] === chatEventType) return type;
  return undefined;
}
