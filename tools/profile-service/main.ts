/**
 * Runs the reference profile service as its own process (`npm run profile-service`).
 *
 *   PORT (8090), HOST (0.0.0.0), SERVICE_JWT_PUBLIC_KEY (PEM, required),
 *   SERVICE_JWT_ISSUER (chat-service), SERVICE_JWT_AUDIENCE (profile-service),
 *   PROFILES_FILE (JSON array of {id?, email, intent, displayName}), AUTO_CREATE=1,
 *   LOG_LEVEL (info)
 */
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { parseSeedProfiles, startProfileService, type SeedProfile } from './profile-service.js';

const env = process.env;
const logger = pino({ level: env.LOG_LEVEL ?? 'info', base: { service: 'profile-service' }, timestamp: pino.stdTimeFunctions.isoTime });

function fail(message: string): never {
  console.error(`profile-service: ${message}`);
  process.exit(2);
}

function readOptions() {
  const rawKey = env.SERVICE_JWT_PUBLIC_KEY?.trim();
  if (!rawKey) fail('SERVICE_JWT_PUBLIC_KEY: required (PEM public key that verifies the service JWT)');
  // Env files and orchestrators often carry PEM newlines as a literal "\n".
  const publicKey = rawKey.replaceAll('\\n', '\n');
  if (!publicKey.includes('-----BEGIN PUBLIC KEY-----')) fail('SERVICE_JWT_PUBLIC_KEY: must be a PEM "PUBLIC KEY" (-----BEGIN PUBLIC KEY-----)');

  const rawPort = env.PORT?.trim() || '8090';
  const port = Number(rawPort);
  if (!/^\d+$/.test(rawPort) || port > 65535) fail(`PORT: must be an integer between 0 and 65535, got "${rawPort}"`);

  let profiles: SeedProfile[] | undefined;
  const file = env.PROFILES_FILE?.trim();
  if (file) {
    try {
      profiles = parseSeedProfiles(JSON.parse(readFileSync(file, 'utf8')));
    } catch (err) {
      fail(`PROFILES_FILE: ${file}: ${(err as Error).message}`);
    }
  }

  return {
    port,
    host: env.HOST?.trim() || '0.0.0.0',
    publicKey,
    issuer: env.SERVICE_JWT_ISSUER?.trim() || 'chat-service',
    audience: env.SERVICE_JWT_AUDIENCE?.trim() || 'profile-service',
    profiles,
    autoCreate: env.AUTO_CREATE === '1' || env.AUTO_CREATE === 'true',
    logger,
  };
}

const options = readOptions();
const service = await startProfileService(options).catch((err: unknown) => {
  logger.fatal({ err }, 'start-up failed');
  process.exit(1);
});
logger.info(
  { url: service.url, seeded: options.profiles?.length ?? 0, autoCreate: options.autoCreate, issuer: options.issuer, audience: options.audience },
  'profile-service started',
);

const shutdown = (signal: string): void => {
  logger.info({ signal }, 'shutting down');
  service.close().then(
    () => process.exit(0),
    (err: unknown) => {
      logger.error({ err }, 'shutdown failed');
      process.exit(1);
    },
  );
};
process.once('SIGTERM', () => shutdown('SIGTERM'));
process.once('SIGINT', () => shutdown('SIGINT'));
