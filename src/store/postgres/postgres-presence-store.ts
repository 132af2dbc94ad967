/**
 * PresenceStore on PostgreSQL (server or PGlite): `chat_instances` (one liveness row per instance),
 * `chat_presence` (a user online on an instance) and `chat_last_seen` (when a user's last connection
 * closed, and the row that serialises that user's transitions). See docs/adr/0018.
 *
 * Lifecycle: construct on a database the caller owns; no state of its own.
 *
 * Invariants: a transition locks the user's `chat_last_seen` row before it looks at or changes their
 * presence rows, so concurrent transitions of one user run one after another; only rows of live
 * instances (alive within `deadAfterMs`, by the database's clock) count as online; a sweep takes the
 * dead instances' rows with SKIP LOCKED, so two sweeps never take the same instance.
 *
 * Must never happen: a write per connection or per client heart-beat (callers write on transitions
 * and on the instance's own heart-beat only); last-seen moving backwards.
 */
import type { InstanceRecord, PresenceChange, PresenceState, PresenceStore } from '../../chat/ports.js';
import type { Queryable, SqlDatabase } from './sql-database.js';

// --- SQL (literal, reviewed; runs on PostgreSQL 15 and PGlite) ---------------------------------

/** `xmax = 0` only on a freshly inserted row: the instance was not registered (new, or swept). */
const HEARTBEAT_SQL = `
INSERT INTO chat_instances (id, alive_at, connections, users) VALUES ($1, now(), $2, $3)
ON CONFLICT (id) DO UPDATE SET alive_at = now(), connections = EXCLUDED.connections, users = EXCLUDED.users
RETURNING (xmax = 0) AS inserted`;

/** Takes the user's row lock (creating the row on first sight); DO UPDATE locks an existing row. */
const LOCK_USER_SQL = `
INSERT INTO chat_last_seen (email) VALUES ($1)
ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email`;

/** Whether a live instance other than $2 has the user online. */
const ONLINE_ELSEWHERE_SQL = `
SELECT EXISTS (
  SELECT 1 FROM chat_presence p JOIN chat_instances i ON i.id = p.instance_id
   WHERE p.email = $1 AND p.instance_id <> $2 AND i.alive_at > now() - $3::double precision * interval '1 millisecond') AS elsewhere,
  EXISTS (SELECT 1 FROM chat_presence WHERE email = $1 AND instance_id = $2) AS here`;

const INSERT_PRESENCE_SQL = `INSERT INTO chat_presence (email, instance_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`;
const DELETE_PRESENCE_SQL = `DELETE FROM chat_presence WHERE email = $1 AND instance_id = $2`;

/** GREATEST ignores NULL: the first offline sets it, later ones never move it back. */
const SET_LAST_SEEN_SQL = `
UPDATE chat_last_seen SET last_seen_at = GREATEST(last_seen_at, $2::timestamptz) WHERE email = $1
RETURNING last_seen_at`;

/** Dead instances, locked so that a concurrent sweep skips them. */
const DEAD_INSTANCES_SQL = `
SELECT id, alive_at FROM chat_instances i
 WHERE i.alive_at <= now() - $1::double precision * interval '1 millisecond'
 ORDER BY id
 FOR UPDATE SKIP LOCKED`;

const LOCK_INSTANCE_SQL = `SELECT id, now() AS alive_at FROM chat_instances WHERE id = $1 FOR UPDATE`;

/**
 * Removes the instances' presence rows and gives each of their users a last-seen time (the instance's
 * `seen_at`); users in email order, so concurrent sweeps lock users in one order and cannot deadlock.
 */
const REMOVE_PRESENCE_SQL = `
WITH gone AS (
  DELETE FROM chat_presence p USING unnest($1::text[], $2::timestamptz[]) AS d(id, seen_at)
   WHERE p.instance_id = d.id
  RETURNING p.email, d.seen_at
), latest AS (
  SELECT email, max(seen_at) AS seen_at FROM gone GROUP BY email
)
INSERT INTO chat_last_seen AS s (email, last_seen_at)
SELECT email, seen_at FROM latest ORDER BY email
ON CONFLICT (email) DO UPDATE SET last_seen_at = GREATEST(s.last_seen_at, EXCLUDED.last_seen_at)
RETURNING s.email, s.last_seen_at`;

const DELETE_INSTANCES_SQL = `DELETE FROM chat_instances WHERE id = ANY($1::text[])`;

/** Of these users, those online on no live instance. */
const STILL_OFFLINE_SQL = `
SELECT u.email FROM unnest($1::text[]) AS u(email)
 WHERE NOT EXISTS (
   SELECT 1 FROM chat_presence p JOIN chat_instances i ON i.id = p.instance_id
    WHERE p.email = u.email AND i.alive_at > now() - $2::double precision * interval '1 millisecond')`;

const PRESENCE_OF_SQL = `
SELECT u.email,
       EXISTS (SELECT 1 FROM chat_presence p
                WHERE p.email = u.email
                  AND (SELECT i.alive_at FROM chat_instances i WHERE i.id = p.instance_id) > now() - $2::double precision * interval '1 millisecond') AS online,
       (SELECT s.last_seen_at FROM chat_last_seen s WHERE s.email = u.email) AS last_seen_at
  FROM unnest($1::text[]) AS u(email)`;

/** Emails on sessions are stored in comparison form, as callers pass them. */
const PEERS_OF_SQL = `
SELECT DISTINCT ON (peer) peer, id::text AS session_id FROM (
  SELECT receiver_email AS peer, id FROM chat_sessions WHERE sender_email = $1
  UNION ALL
  SELECT sender_email AS peer, id FROM chat_sessions WHERE receiver_email = $1
) AS shared
 ORDER BY peer, id`;

const INSTANCES_SQL = `
SELECT id, started_at, alive_at, connections, users,
       alive_at > now() - $1::double precision * interval '1 millisecond' AS alive
  FROM chat_instances ORDER BY started_at, id`;

const ONLINE_USERS_SQL = `
SELECT count(DISTINCT p.email)::int AS n FROM chat_presence p JOIN chat_instances i ON i.id = p.instance_id
 WHERE i.alive_at > now() - $1::double precision * interval '1 millisecond'`;

// -----------------------------------------------------------------------------------------------

export class PostgresPresenceStore implements PresenceStore {
  constructor(private readonly db: SqlDatabase) {}

  async heartbeat(instanceId: string, counts: { connections: number; users: number }): Promise<{ registered: boolean }> {
    const [row] = await this.db.query<{ inserted: boolean }>(HEARTBEAT_SQL, [instanceId, counts.connections, counts.users]);
    return { registered: row?.inserted === true };
  }

  async online(email: string, instanceId: string, deadAfterMs: number): Promise<{ firstOnline: boolean }> {
    return this.db.transaction(async (tx) => {
      await tx.query(LOCK_USER_SQL, [email]);
      const [row] = await tx.query<{ elsewhere: boolean; here: boolean }>(ONLINE_ELSEWHERE_SQL, [email, instanceId, deadAfterMs]);
      await tx.query(INSERT_PRESENCE_SQL, [email, instanceId]);
      return { firstOnline: !row?.elsewhere && !row?.here };
    });
  }

  async offline(email: string, instanceId: string, at: Date, deadAfterMs: number): Promise<{ lastOffline: boolean; lastSeenAt: Date }> {
    return this.db.transaction(async (tx) => {
      await tx.query(LOCK_USER_SQL, [email]);
      await tx.query(DELETE_PRESENCE_SQL, [email, instanceId]);
      const [row] = await tx.query<{ elsewhere: boolean }>(ONLINE_ELSEWHERE_SQL, [email, instanceId, deadAfterMs]);
      const [seen] = await tx.query<{ last_seen_at: Date }>(SET_LAST_SEEN_SQL, [email, at]);
      return { lastOffline: !row?.elsewhere, lastSeenAt: new Date(seen?.last_seen_at ?? at) };
    });
  }

  async sweep(deadAfterMs: number): Promise<PresenceChange[]> {
    return this.db.transaction(async (tx) => {
      const dead = await tx.query<{ id: string; alive_at: Date }>(DEAD_INSTANCES_SQL, [deadAfterMs]);
      return removeInstances(tx, dead, deadAfterMs);
    });
  }

  async leave(instanceId: string, deadAfterMs: number): Promise<PresenceChange[]> {
    return this.db.transaction(async (tx) => {
      const rows = await tx.query<{ id: string; alive_at: Date }>(LOCK_INSTANCE_SQL, [instanceId]);
      return removeInstances(tx, rows, deadAfterMs);
    });
  }

  async presenceOf(emails: readonly string[], deadAfterMs: number): Promise<Map<string, PresenceState>> {
    const result = new Map<string, PresenceState>();
    if (emails.length === 0) return result;
    const rows = await this.db.query<{ email: string; online: boolean; last_seen_at: Date | null }>(PRESENCE_OF_SQL, [[...new Set(emails)], deadAfterMs]);
    for (const row of rows) {
      result.set(row.email, { online: row.online, lastSeenAt: row.online || !row.last_seen_at ? null : new Date(row.last_seen_at) });
    }
    return result;
  }

  async peersOf(email: string): Promise<Array<{ email: string; sessionId: string }>> {
    const rows = await this.db.query<{ peer: string; session_id: string }>(PEERS_OF_SQL, [email]);
    return rows.map((r) => ({ email: r.peer, sessionId: r.session_id }));
  }

  async instances(deadAfterMs: number): Promise<InstanceRecord[]> {
    const rows = await this.db.query<{ id: string; started_at: Date; alive_at: Date; connections: number; users: number; alive: boolean }>(INSTANCES_SQL, [deadAfterMs]);
    return rows.map((r) => ({
      instanceId: r.id,
      startedAt: new Date(r.started_at),
      aliveAt: new Date(r.alive_at),
      alive: r.alive,
      connections: Number(r.connections),
      users: Number(r.users),
    }));
  }

  async onlineUsers(deadAfterMs: number): Promise<number> {
    const [row] = await this.db.query<{ n: number }>(ONLINE_USERS_SQL, [deadAfterMs]);
    return Number(row?.n ?? 0);
  }
}

/** Inside the caller's transaction: the instances' rows go, and the users left offline everywhere come back. */
async function removeInstances(tx: Queryable, instances: ReadonlyArray<{ id: string; alive_at: Date }>, deadAfterMs: number): Promise<PresenceChange[]> {
  if (instances.length === 0) return [];
  const ids = instances.map((i) => i.id);
  const touched = await tx.query<{ email: string; last_seen_at: Date }>(REMOVE_PRESENCE_SQL, [ids, instances.map((i) => new Date(i.alive_at))]);
  await tx.query(DELETE_INSTANCES_SQL, [ids]);
  if (touched.length === 0) return [];
  const offline = new Set((await tx.query<{ email: string }>(STILL_OFFLINE_SQL, [touched.map((t) => t.email), deadAfterMs])).map((r) => r.email));
  return touched
    .filter((t) => offline.has(t.email))
    .sort((a, b) => (a.email < b.email ? -1 : a.email > b.email ? 1 : 0))
    .map((t) => ({ email: t.email, online: false, lastSeenAt: new Date(t.last_seen_at) }));
}
