-- Up Migration

-- Presence across the cluster (docs/adr/0018). Rows change on a user's online/offline transition on
-- an instance and on each instance's liveness heart-beat, never per connection or per client
-- heart-beat.

-- One row per running instance, refreshed every PRESENCE_HEARTBEAT_MS. An instance whose alive_at is
-- older than PRESENCE_DEAD_AFTER_MS is dead: any live instance sweeps it and its presence rows.
CREATE TABLE chat_instances (
  id          text        PRIMARY KEY,
  started_at  timestamptz NOT NULL DEFAULT now(),
  alive_at    timestamptz NOT NULL DEFAULT now(),
  -- As of alive_at: open STOMP connections and distinct users on the instance (for /admin/connections).
  connections integer     NOT NULL DEFAULT 0,
  users       integer     NOT NULL DEFAULT 0
);

-- A user is online on an instance while this row exists (and the instance is alive).
CREATE TABLE chat_presence (
  email       text        NOT NULL,
  instance_id text        NOT NULL,
  since       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (email, instance_id)
);
CREATE INDEX chat_presence_instance_idx ON chat_presence (instance_id);

-- One row per user who was ever online: when their last connection closed, and the row every
-- transition of that user locks first, so two instances never both miss (or both claim) the last one.
CREATE TABLE chat_last_seen (
  email        text        PRIMARY KEY,
  last_seen_at timestamptz
);

-- Dead outbox rows, for operators (GET /admin/outbox/dead); few, so the index is small.
CREATE INDEX chat_message_outbox_dead_idx ON chat_message_outbox (id) WHERE dead;

-- Down Migration
DROP INDEX chat_message_outbox_dead_idx;
DROP TABLE chat_last_seen;
DROP TABLE chat_presence;
DROP TABLE chat_instances;
