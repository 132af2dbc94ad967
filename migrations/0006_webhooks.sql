-- Up Migration

-- Webhook deliveries (docs/adr/0015). A row is written in the same transaction as the chat change
-- it announces, and only while webhooks are configured. The dispatcher works a session's rows one
-- at a time in id order: a row is claimable only while no earlier row of its session is pending.
-- event_id is the id receivers de-duplicate by: the same on every attempt.
CREATE TABLE chat_webhook_outbox (
  id              bigserial   PRIMARY KEY,
  event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
  -- Text, not uuid: a value that is not a uuid must never fail the chat transaction that writes it.
  session_id      text        NOT NULL,
  event_type      text        NOT NULL,
  payload         jsonb       NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  lease           uuid,
  attempts        integer     NOT NULL DEFAULT 0,
  last_error      text,
  delivered_at    timestamptz,
  dead            boolean     NOT NULL DEFAULT false,
  CONSTRAINT chat_webhook_outbox_event_id_uk UNIQUE (event_id)
);
-- Claims read pending rows in id order; the per-session check looks up a session's earlier pending rows.
CREATE INDEX chat_webhook_outbox_claim_idx ON chat_webhook_outbox (id) WHERE delivered_at IS NULL AND NOT dead;
CREATE INDEX chat_webhook_outbox_session_idx ON chat_webhook_outbox (session_id, id) WHERE delivered_at IS NULL AND NOT dead;

-- Down Migration
DROP TABLE chat_webhook_outbox;
