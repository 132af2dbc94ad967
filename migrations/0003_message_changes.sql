-- Up Migration

-- Edits and deletes change a message in place: seq and id stay, so history stays gapless. A
-- deleted message keeps its row as a tombstone with its content erased.
--
-- Every change carries a stamp for GET /api/chat/sync (docs/adr/0017): the id of the transaction
-- that made it and a number from one sequence. A sync returns the stamps above its token that are
-- below the oldest transaction still running, so a change that commits late is never skipped.
-- On the send path the stamp costs only two column defaults, no statement.
CREATE SEQUENCE chat_change_seq;

-- Existing rows all get this migration's transaction id and change number 0 (defaults that are not
-- volatile are stored once, not written to every row: no table rewrite); they are older than any
-- sync token. New rows get the writer's transaction id and a number from the sequence.
ALTER TABLE chat_messages
  ADD COLUMN edited_at  timestamptz,
  ADD COLUMN deleted_at timestamptz,
  ADD COLUMN change_xid xid8   NOT NULL DEFAULT pg_current_xact_id(),
  ADD COLUMN change_id  bigint NOT NULL DEFAULT 0;
ALTER TABLE chat_messages ALTER COLUMN change_id SET DEFAULT nextval('chat_change_seq');

-- The one index sync needs: a session's changes in stamp order. Building it holds off writes to
-- chat_messages while it reads the table: on a large table, create it CONCURRENTLY by hand first
-- (same name) and this statement finds it there.
CREATE INDEX IF NOT EXISTS chat_messages_change_idx ON chat_messages (session_id, change_xid, change_id);

-- How far each side of a session has read (seen) and received (delivered), stamped like messages,
-- so a sync tells receipts too. Written by markSeen and markDelivered, never by a send.
CREATE TABLE chat_read_marks (
  session_id        uuid   NOT NULL REFERENCES chat_sessions (id),
  reader_profile_id uuid   NOT NULL,
  seen_up_to        bigint NOT NULL DEFAULT 0,
  delivered_up_to   bigint NOT NULL DEFAULT 0,
  change_xid        xid8   NOT NULL DEFAULT pg_current_xact_id(),
  change_id         bigint NOT NULL DEFAULT nextval('chat_change_seq'),
  PRIMARY KEY (session_id, reader_profile_id)
);

-- Down Migration
DROP TABLE chat_read_marks;
DROP INDEX chat_messages_change_idx;
ALTER TABLE chat_messages DROP COLUMN change_id, DROP COLUMN change_xid, DROP COLUMN deleted_at, DROP COLUMN edited_at;
DROP SEQUENCE chat_change_seq;
