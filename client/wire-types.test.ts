/**
 * The SDK keeps its own copy of the wire shapes so it builds without the server. These checks make
 * a drift between the two copies a type error in `npm test` (tsc), not a surprise for SDK users.
 */
import { describe, expectTypeOf, it } from 'vitest';
import type { ChatEvent, ChatMessageView, PeerPresenceView, PresenceView } from '../src/chat/chat-events.js';
import type {
  ChatService,
  HistoryPage as ServiceHistoryPage,
  ParticipantView,
  SessionListItem,
  SessionView,
  SyncEvent as ServiceSyncEvent,
  SyncPage as ServiceSyncPage,
  SyncReceipt as ServiceSyncReceipt,
} from '../src/chat/chat-service.js';
import type {
  ChatMessage,
  HistoryPage,
  Participant,
  PeerPresence,
  Presence,
  Receipt,
  SessionInfo,
  SessionSummary,
  SyncEvent,
  SyncPage,
  SyncReceipt,
  TypingSignal,
  UnreadMessages,
  UnreadTotals,
} from './chat-types.js';
import type { PresenceService } from '../src/chat/presence.js';

type EventPayload<T extends ChatEvent['type'], K extends string> = Extract<ChatEvent, { type: T }> extends Record<K, infer P> ? P : never;

describe('SDK wire types', () => {
  it('are the service’s response and event shapes', () => {
    expectTypeOf<ChatMessage>().toEqualTypeOf<ChatMessageView>();
    expectTypeOf<Participant>().toEqualTypeOf<ParticipantView>();
    expectTypeOf<SessionInfo>().toEqualTypeOf<SessionView>();
    expectTypeOf<SessionSummary>().toEqualTypeOf<SessionListItem>();
    expectTypeOf<HistoryPage>().toEqualTypeOf<ServiceHistoryPage>();
    expectTypeOf<UnreadMessages>().toEqualTypeOf<Awaited<ReturnType<ChatService['unread']>>>();
    expectTypeOf<Receipt>().toEqualTypeOf<EventPayload<'receipt', 'receipt'>>();
    expectTypeOf<UnreadTotals>().toEqualTypeOf<Awaited<ReturnType<ChatService['unreadCount']>>>();
    expectTypeOf<TypingSignal>().toEqualTypeOf<EventPayload<'typing', 'typing'>>();
    expectTypeOf<ChatMessage>().toEqualTypeOf<EventPayload<'edit' | 'delete', 'message'>>();
    expectTypeOf<SyncReceipt>().toEqualTypeOf<ServiceSyncReceipt>();
    expectTypeOf<SyncEvent>().toEqualTypeOf<ServiceSyncEvent>();
    expectTypeOf<SyncPage>().toEqualTypeOf<ServiceSyncPage>();
    expectTypeOf<SyncPage>().toEqualTypeOf<Awaited<ReturnType<ChatService['sync']>>>();
    expectTypeOf<Presence>().toEqualTypeOf<PresenceView>();
    expectTypeOf<Presence>().toEqualTypeOf<EventPayload<'presence', 'presence'>>();
    expectTypeOf<PeerPresence>().toEqualTypeOf<PeerPresenceView>();
    expectTypeOf<{ peer: PeerPresence }>().toEqualTypeOf<Awaited<ReturnType<PresenceService['peerPresence']>>>();
  });
});
