/** Starts a real app on port 0 for tests and gives typed helpers for calling it over HTTP. */
import { randomUUID } from 'node:crypto';
import { type App, type AppOptions, createApp } from '../../src/app.js';
import { type Config, loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/observability/logger.js';
import { createTestDatabase } from './test-database.js';

export interface TestApp {
  app: App;
  url: string;
  /** A dev-issuer token for email (only with the dev issuer); `scope`: its space-separated scope claim. */
  token(email: string, displayName?: string, scope?: string): Promise<string>;
  /** fetch against the app with JSON in and out. */
  call(method: string, path: string, options?: { token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> }): Promise<{ status: number; body: any; headers: Headers }>;
  close(): Promise<void>;
}

export async function startTestApp(env: Record<string, string> = {}, overrides: Partial<Config> = {}, options: AppOptions = {}): Promise<TestApp> {
  const base = loadConfig({ PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent', ...env });
  // No DATA_DIR and no DATABASE_URL: an in-memory PGlite, so tests leave nothing on disk.
  const config: Config = { ...base, ...(env.DATA_DIR || env.DATABASE_URL ? {} : { store: { kind: 'pglite', dataDir: '' } }), ...overrides };
  const app = await createApp(config, createLogger(config.logLevel), options);
  const call: TestApp['call'] = async (method, path, options = {}) => {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    let body: string | undefined = options.rawBody;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    } else if (body !== undefined) headers['content-type'] ??= 'application/json';
    const res = await fetch(app.url + path, { method, headers, body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON (e.g. /metrics): keep the text
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
  return {
    app,
    url: app.url,
    call,
    async token(email, displayName, scope) {
      const res = await call('POST', '/dev/token', { body: { email, ...(displayName ? { displayName } : {}), ...(scope ? { scope } : {}) } });
      if (res.status !== 200) throw new Error(`dev token failed: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.token as string;
    },
    close: () => app.stop(),
  };
}

export const newId = (): string => randomUUID();

/** A unique email per test, so tests sharing an app never see each other's sessions. */
export const uniqueEmail = (name: string): string => `${name}.${randomUUID().slice(0, 8)}@example.com`;

/** A test app on a database of its own on the PostgreSQL server at `adminUrl`; close() drops it too. */
export async function startTestAppOnPostgres(adminUrl: string, env: Record<string, string> = {}): Promise<TestApp> {
  const database = await createTestDatabase(adminUrl);
  try {
    const t = await startTestApp({ ...env, DATABASE_URL: database.url });
    return {
      ...t,
      async close() {
        await t.close();
        await database.drop();
      },
    };
  } catch (err) {
    await database.drop();
    throw err;
  }
}
