/** `npm run migrate`: applies pending migrations to DATABASE_URL, or to the PGlite under DATA_DIR. */
import { loadConfig } from '../../config/config.js';
import { createLogger } from '../../observability/logger.js';
import { migrate } from './migrator.js';
import { PgliteDatabase } from './pglite-database.js';

const config = loadConfig();
const logger = createLogger(config.logLevel);
let applied: string[];
if (config.store.kind === 'postgres') {
  applied = await migrate({ kind: 'postgres', url: config.store.url }, logger);
} else {
  const db = await PgliteDatabase.open(config.store.dataDir);
  try {
    applied = await migrate({ kind: 'pglite', db }, logger);
  } finally {
    await db.close();
  }
}
logger.info({ store: config.store.kind, applied }, applied.length ? 'migrations applied' : 'schema is up to date');
