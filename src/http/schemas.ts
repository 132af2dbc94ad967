/**
 * Request shapes for Fastify's validator. They check types and presence only; formats (UUID, email,
 * content limits) are the domain's rules, so REST and STOMP refuse the same inputs the same way.
 */
import { Type } from 'typebox';

const maybeString = Type.Optional(Type.Union([Type.String({ maxLength: 320 }), Type.Null()]));

export const InitChatBody = Type.Object(
  { fromEmail: Type.Optional(Type.String({ maxLength: 320 })), toEmail: Type.String({ maxLength: 320 }), intent: Type.String({ maxLength: 64 }) },
  { additionalProperties: false },
);

export const ChatMessageBody = Type.Object(
  {
    sessionId: Type.String({ maxLength: 64 }),
    senderEmail: maybeString,
    intent: maybeString,
    content: Type.String(),
    clientMessageId: Type.String({ maxLength: 64 }),
  },
  { additionalProperties: false },
);

export const SessionParams = Type.Object({ sessionId: Type.String({ maxLength: 64 }) });

export const HistoryQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200 })),
    before: Type.Optional(Type.Integer({ minimum: 0 })),
    after: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);

export const LegacyHistoryQuery = Type.Object(
  {
    chatId: Type.String({ maxLength: 64 }),
    page: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    size: Type.Optional(Type.Integer({ minimum: 1, maximum: 200 })),
  },
  { additionalProperties: false },
);

export const UnreadQuery = Type.Object(
  { readerEmail: Type.Optional(Type.String({ maxLength: 320 })), intent: Type.Optional(Type.String({ maxLength: 64 })) },
  { additionalProperties: false },
);

export const LegacyUnreadQuery = Type.Object(
  { chatId: Type.String({ maxLength: 64 }), readerEmail: Type.Optional(Type.String({ maxLength: 320 })), intent: Type.Optional(Type.String({ maxLength: 64 })) },
  { additionalProperties: false },
);

export const ReportBody = Type.Object(
  { messageId: Type.Optional(Type.Union([Type.String({ maxLength: 64 }), Type.Null()])), reason: Type.String() },
  { additionalProperties: false },
);

export const MessageParams = Type.Object({ sessionId: Type.String({ maxLength: 64 }), messageId: Type.String({ maxLength: 64 }) });

/** `{content}`; the ids may be repeated from the path (as a STOMP chat.edit body has them), and must then match it. */
export const EditMessageBody = Type.Object(
  { content: Type.String(), sessionId: Type.Optional(Type.String({ maxLength: 64 })), messageId: Type.Optional(Type.String({ maxLength: 64 })) },
  { additionalProperties: false },
);

export const SyncQuery = Type.Object(
  { since: Type.Optional(Type.String({ maxLength: 128 })), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })) },
  { additionalProperties: false },
);

export const SeenBody = Type.Object({ upToSeq: Type.Integer({ minimum: 0 }) }, { additionalProperties: false });

export const DevTokenBody = Type.Object(
  {
    email: Type.String({ maxLength: 320 }),
    displayName: Type.Optional(Type.String({ maxLength: 100 })),
    // RFC 6749 §3.3 scope tokens, space-separated: printable ASCII but space, double quote and backslash.
    scope: Type.Optional(Type.String({ maxLength: 1000, pattern: '^[!#-\\[\\]-~]+( [!#-\\[\\]-~]+)*$' })),
  },
  { additionalProperties: false },
);
