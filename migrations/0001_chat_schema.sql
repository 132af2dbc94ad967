-- Up Migration

-- Profiles of the local profile directory (embedded default). A remote profile service keeps its own.
CREATE TABLE chat_profiles (
  id           uuid        PRIMARY KEY,
  email        text        NOT NULL,
  intent       text        NOT NULL,
  display_name text        NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT chat_profiles_email_intent_uk UNIQUE (email, intent)
);

-- One session per (profile pair, intent). Canonical order sender_profile_id < receiver_profile_id,
-- so A→B and B→A are the same row. Emails and display names are a snapshot refreshed by init, so
-- sends and renders never wait on the profile service.
CREATE TABLE chat_sessions (
  id                    uuid        PRIMARY KEY,
  sender_profile_id     uuid        NOT NULL,
  receiver_profile_id   uuid        NOT NULL,
  intent                text        NOT NULL,
  sender_email          text        NOT NULL,
  receiver_email        text        NOT NULL,
  sender_display_name   text        NOT NULL,
  receiver_display_name text        NOT NULL,
  created_at            timestamptz NOT NULL DEFAULT now(),
  last_seq              bigint      NOT NULL DEFAULT 0,
  last_message_at       timestamptz,
  CONSTRAINT chat_sessions_canonical_ck CHECK (sender_profile_id < receiver_profile_id),
  CONSTRAINT chat_sessions_pair_intent_uk UNIQUE (sender_profile_id, receiver_profile_id, intent)
);
CREATE INDEX chat_sessions_sender_email_idx ON chat_sessions (sender_email);
CREATE INDEX chat_sessions_receiver_email_idx ON chat_sessions (receiver_email);

CREATE TABLE chat_messages (
  id                uuid        PRIMARY KEY,
  session_id        uuid        NOT NULL REFERENCES chat_sessions (id),
  seq               bigint      NOT NULL,
  sender_profile_id uuid        NOT NULL,
  content           text        NOT NULL,
  client_msg_id     uuid        NOT NULL,
  sent_at           timestamptz NOT NULL,
  delivered         boolean     NOT NULL DEFAULT false,
  seen              boolean     NOT NULL DEFAULT false,
  CONSTRAINT chat_messages_session_seq_uk UNIQUE (session_id, seq),
  -- Per sender, not global: a global key would let one user's UUID shadow another's message.
  CONSTRAINT chat_messages_sender_client_msg_uk UNIQUE (sender_profile_id, client_msg_id)
);
CREATE INDEX chat_messages_session_sent_at_idx ON chat_messages (session_id, sent_at DESC);
CREATE INDEX chat_messages_unseen_idx ON chat_messages (session_id, seq) WHERE NOT seen;

-- One row per event; payload lists every destination of the event (docs/adr/0001).
CREATE TABLE chat_message_outbox (
  id            bigserial   PRIMARY KEY,
  destination   text        NOT NULL,
  payload       jsonb       NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  sent_at       timestamptz,
  processed     boolean     NOT NULL DEFAULT false,
  next_retry_at timestamptz NOT NULL DEFAULT now(),
  retry_count   integer     NOT NULL DEFAULT 0,
  last_error    text,
  dead          boolean     NOT NULL DEFAULT false
);
CREATE INDEX chat_message_outbox_due_idx ON chat_message_outbox (next_retry_at) WHERE NOT processed AND NOT dead;

-- Down Migration
DROP TABLE chat_message_outbox;
DROP TABLE chat_messages;
DROP TABLE chat_sessions;
DROP TABLE chat_profiles;
