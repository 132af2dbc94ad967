/**
 * Runs the reference webhook receiver (`npm run webhook-receiver`): verifies each request's
 * signature, de-duplicates by event id and prints one JSON line per event.
 *
 *   --port N (or PORT, default 8099), --host H (or HOST, default 127.0.0.1),
 *   --secret S (or WEBHOOK_SECRET, required), --fail-first N (answer 503 to the first N requests)
 */
import { parseArgs } from 'node:util';
import { startWebhookReceiver } from './receiver.js';

const env = process.env;
const { values } = parseArgs({
  options: { port: { type: 'string' }, host: { type: 'string' }, secret: { type: 'string' }, 'fail-first': { type: 'string' } },
});

function fail(message: string): never {
  console.error(`webhook-receiver: ${message}`);
  process.exit(2);
}

const secret = values.secret ?? env.WEBHOOK_SECRET;
if (!secret) fail('--secret or WEBHOOK_SECRET: required (the WEBHOOK_SECRET the chat service signs with)');
const rawPort = values.port ?? env.PORT ?? '8099';
if (!/^\d+$/.test(rawPort) || Number(rawPort) > 65535) fail(`--port: must be an integer between 0 and 65535, got "${rawPort}"`);
const rawFail = values['fail-first'] ?? '0';
if (!/^\d+$/.test(rawFail)) fail(`--fail-first: must be a count, got "${rawFail}"`);

const receiver = await startWebhookReceiver({ secret, port: Number(rawPort), host: values.host ?? env.HOST ?? '127.0.0.1', failFirst: Number(rawFail) });
console.log(JSON.stringify({ listening: receiver.url }));
const shutdown = (): void => void receiver.close().then(() => process.exit(0));
process.once('SIGINT', shutdown);
process.once('SIGTERM', shutdown);
