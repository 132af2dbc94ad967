-- Up Migration

-- A block lives on the session row, one column per side, so the send transaction, which already
-- locks the session row FOR UPDATE to take the next seq, sees it in the same read at no extra cost,
-- and a block committed by any instance is seen by the very next send (docs/adr/0016).
ALTER TABLE chat_sessions
  ADD COLUMN blocked_by_sender_at   timestamptz,
  ADD COLUMN blocked_by_receiver_at timestamptz;

-- What a participant reported, with the reported message's content as it was then (a later edit or
-- delete must not change the evidence).
CREATE TABLE chat_reports (
  id                  uuid        PRIMARY KEY,
  session_id          uuid        NOT NULL REFERENCES chat_sessions (id),
  reporter_profile_id uuid        NOT NULL,
  reporter_email      text        NOT NULL,
  -- No foreign key: the report is evidence and outlives whatever happens to the message.
  message_id          uuid,
  reason              text        NOT NULL,
  content             text,
  created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_reports_session_idx ON chat_reports (session_id, created_at);
-- The moderators' list (GET /admin/reports): newest first, paged by (created_at, id).
CREATE INDEX chat_reports_recent_idx ON chat_reports (created_at DESC, id DESC);

-- Down Migration
DROP TABLE chat_reports;
ALTER TABLE chat_sessions DROP COLUMN blocked_by_receiver_at, DROP COLUMN blocked_by_sender_at;
