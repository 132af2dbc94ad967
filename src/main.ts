/** Entry point: config → app → serve; SIGTERM/SIGINT stop it gracefully. */
import { ConfigError, loadConfig } from './config/config.js';
import { createApp } from './app.js';
import { createLogger, flushLogs } from './observability/logger.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`chat-service: configuration error: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  const exit = (code: number): void => flushLogs(logger, () => process.exit(code));
  const app = await createApp(config, logger).catch((err: unknown) => {
    logger.fatal({ err }, 'start-up failed');
    exit(1);
    return new Promise<never>(() => undefined);
  });

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      logger.error('shutdown took too long, exiting');
      exit(1);
    }, config.shutdownTimeoutMs);
    force.unref();
    app.stop().then(
      () => exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));
}

void main();
