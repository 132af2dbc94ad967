-- Up Migration

-- The moderators' list follows the order reports were made in. created_at cannot give it: it is
-- the transaction's start, and on the embedded database the clock moves in whole milliseconds, so
-- reports made in one millisecond tied and came back in the order of their random ids. Reports
-- already stored keep the order they were listed in.
ALTER TABLE chat_reports ADD COLUMN position bigint;
UPDATE chat_reports r SET position = o.n
  FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM chat_reports) o
 WHERE r.id = o.id;
ALTER TABLE chat_reports ALTER COLUMN position SET NOT NULL;
ALTER TABLE chat_reports ALTER COLUMN position ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('chat_reports', 'position'), coalesce(max(position), 0) + 1, false) FROM chat_reports;
DROP INDEX chat_reports_recent_idx;
CREATE UNIQUE INDEX chat_reports_position_idx ON chat_reports (position);

-- Down Migration
DROP INDEX chat_reports_position_idx;
CREATE INDEX chat_reports_recent_idx ON chat_reports (created_at DESC, id DESC);
ALTER TABLE chat_reports DROP COLUMN position;
