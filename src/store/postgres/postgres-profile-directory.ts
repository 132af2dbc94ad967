/**
 * ProfileDirectory on PostgreSQL (server or PGlite): the local directory, used when no profile
 * service is configured. A profile per (email, intent) in the chat database, created on first use.
 * Profiles never change id, so they are cached for the process lifetime (bounded).
 */
import { randomUUID } from 'node:crypto';
import { ChatError } from '../../chat/chat-errors.js';
import type { Profile, ProfileDirectory } from '../../chat/ports.js';
import { normalizeEmail } from '../../chat/validation.js';
import { isConnectionFailure, type SqlDatabase } from './sql-database.js';

const CACHE_MAX = 50_000;

interface ProfileRow {
  id: string;
  email: string;
  display_name: string;
}

export class PostgresProfileDirectory implements ProfileDirectory {
  private readonly byKey = new Map<string, Profile>();
  private readonly byProfileId = new Map<string, Profile>();

  constructor(private readonly db: SqlDatabase) {}

  async resolve(email: string, intent: string, hint?: { displayName?: string }): Promise<Profile> {
    const normalized = normalizeEmail(email);
    const key = `${normalized}|${intent}`;
    const cached = this.byKey.get(key);
    if (cached) return cached;
    let rows: ProfileRow[];
    try {
      // The no-op update makes RETURNING yield the existing row when another caller created it first.
      rows = await this.db.query<ProfileRow>(
        `INSERT INTO chat_profiles (id, email, intent, display_name) VALUES ($1, $2, $3, $4)
         ON CONFLICT (email, intent) DO UPDATE SET email = EXCLUDED.email
         RETURNING id, email, display_name`,
        [randomUUID(), normalized, intent, hint?.displayName?.trim() || normalized],
      );
    } catch (err) {
      if (isConnectionFailure(err)) throw new ChatError('STORE_UNAVAILABLE', 'the profile store is unavailable', undefined, { cause: err });
      throw err;
    }
    const profile: Profile = { id: rows[0]!.id, email: rows[0]!.email, displayName: rows[0]!.display_name };
    this.remember(key, profile);
    return profile;
  }

  async byId(profileId: string): Promise<Profile | undefined> {
    const cached = this.byProfileId.get(profileId);
    if (cached) return cached;
    const rows = await this.db.query<ProfileRow & { intent: string }>('SELECT id, email, intent, display_name FROM chat_profiles WHERE id = $1', [profileId]);
    const row = rows[0];
    if (!row) return undefined;
    const profile: Profile = { id: row.id, email: row.email, displayName: row.display_name };
    this.remember(`${row.email}|${row.intent}`, profile);
    return profile;
  }

  private remember(key: string, profile: Profile): void {
    if (this.byKey.size >= CACHE_MAX) {
      this.byKey.clear();
      this.byProfileId.clear();
    }
    this.byKey.set(key, profile);
    this.byProfileId.set(profile.id, profile);
  }
}
