/**
 * The dependency rule is held by ESLint (eslint.config.js). These fixtures prove the lint fails on a
 * forbidden import and passes an allowed one, so a config change that silently disables the rule is
 * caught here, not in review.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const eslint = new ESLint({ cwd: ROOT });

/** The restricted-import messages ESLint reports for `source` as if it were the file at `file`. */
async function violations(file: string, source: string): Promise<string[]> {
  const [result] = await eslint.lintText(source, { filePath: path.join(ROOT, file) });
  return (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('the dependency rule, enforced by lint', () => {
  it.each([
    ['the core importing an adapter', 'src/chat/fixture.ts', "import { X } from '../store/postgres/pg-database.js';"],
    ['the core importing a transport library', 'src/chat/fixture.ts', "import Fastify from 'fastify';"],
    ['an adapter importing another adapter', 'src/bus/fixture.ts', "import { X } from '../queue/memory-send-queue.js';"],
    ['an adapter importing config', 'src/profiles/fixture.ts', "import type { Config } from '../config/config.js';"],
    ['a nested adapter importing another adapter', 'src/store/postgres/fixture.ts', "import { X } from '../../bus/memory-event-bus.js';"],
    ['an adapter importing a transport', 'src/outbox/fixture.ts', "import { X } from '../realtime/realtime-gateway.js';"],
    ['the webhook dispatcher importing the store', 'src/webhooks/fixture.ts', "import { X } from '../store/postgres/postgres-webhook-store.js';"],
    ['the webhook dispatcher importing config', 'src/webhooks/fixture.ts', "import type { Config } from '../config/config.js';"],
    ['a transport importing an adapter', 'src/realtime/fixture.ts', "import { X } from '../bus/rabbitmq-event-bus.js';"],
    ['a nested transport importing an adapter', 'src/realtime/stomp/fixture.ts', "import { X } from '../../store/postgres/pg-database.js';"],
    ['a transport importing config', 'src/http/fixture.ts', "import { loadConfig } from '../config/config.js';"],
    ['a transport importing the composition root', 'src/http/fixture.ts', "import { createApp } from '../app.js';"],
    ['a shared helper importing an adapter', 'src/observability/fixture.ts', "import { X } from '../store/postgres/pg-database.js';"],
  ])('fails %s', async (_what, file, source) => {
    expect(await violations(file, `${source}\n`)).toHaveLength(1);
  });

  it.each([
    ['an adapter importing a port', 'src/bus/fixture.ts', "import type { EventBus } from '../chat/ports.js';"],
    ['a nested adapter importing the core', 'src/store/postgres/fixture.ts', "import { ChatError } from '../../chat/chat-errors.js';"],
    ['an adapter importing its own folder', 'src/queue/fixture.ts', "import { X } from './memory-send-queue.js';"],
    ['a transport importing the core', 'src/realtime/fixture.ts', "import { SendPath } from '../chat/send-path.js';"],
    ['the composition root importing everything', 'src/app.ts', "import { X } from './store/postgres/pg-database.js';"],
    ['the webhook dispatcher importing a port and a shared helper', 'src/webhooks/fixture.ts', "import type { WebhookStore } from '../chat/ports.js';\nimport { backoffMs } from '../common/backoff.js';"],
    ['a test wiring adapters', 'src/outbox/fixture.test.ts', "import { X } from '../store/postgres/pg-database.js';"],
  ])('passes %s', async (_what, file, source) => {
    expect(await violations(file, `${source}\n`)).toEqual([]);
  });
});
