/** The contract against the HTTP directory; the PostgreSQL one runs it in src/store/postgres/. */
import { generateKeyPairSync } from 'node:crypto';
import pino from 'pino';
import { Registry } from 'prom-client';
import { startProfileService } from '../../tools/profile-service/profile-service.js';
import { HttpProfileDirectory } from './http-profile-directory.js';
import { describeProfileDirectoryContract } from './profile-directory.contract.js';

const logger = pino({ level: 'silent' });

describeProfileDirectoryContract('HTTP (reference profile service)', async () => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const service = await startProfileService({ publicKey, autoCreate: true });
  const directory = new HttpProfileDirectory({
    baseUrl: service.url,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    issuer: 'chat-service',
    audience: 'profile-service',
    cacheTtlMs: 60_000,
    cacheMax: 1000,
    logger,
    registry: new Registry(),
  });
  return { directory, close: () => service.close() };
});
