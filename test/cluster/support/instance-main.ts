/**
 * The service's entry point for cluster tests run as child processes: `src/main.ts` plus what only
 * a test may set, from two variables.
 *
 * - `CLUSTER_APP_OPTIONS`: JSON of AppOptions' plain parts (`sendQueue` names, `bus`, `outbox`,
 *   `stomp`), so a test never touches the shared chat.send.queue and can shorten timings.
 * - `CLUSTER_FAULT`: where the process kills itself with SIGKILL, as a crash would, at an exact
 *   point no outside kill can hit:
 *     `relay-after-confirms:N`  right after the relay's N-th publish was confirmed by the broker,
 *                               before its outbox row is marked processed;
 *     `store-after-commits:N`   right after the N-th send this instance stored (a commit), before
 *                               its sender hears of it (RECEIPT, ack).
 */
import fs from 'node:fs';
import { createApp, type AppOptions } from '../../../src/app.js';
import type { EventBus } from '../../../src/chat/ports.js';
import { loadConfig } from '../../../src/config/config.js';
import { createLogger } from '../../../src/observability/logger.js';
import { busWith } from '../../support/bus-with.js';

/** Returns a tick; the `count`-th tick writes one JSON line naming what it killed, then SIGKILLs the process. */
function killAfter(count: number, what: string): (detail: Record<string, unknown>) => void {
  let seen = 0;
  return (detail) => {
    seen += 1;
    if (seen !== count) return;
    // Synchronous, so the line is out before the process is.
    fs.writeSync(2, `${JSON.stringify({ msg: 'fault injected', fault: what, ...detail })}\n`);
    // Delivered before kill() returns for a signal to oneself: nothing after this line runs.
    process.kill(process.pid, 'SIGKILL');
  };
}

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const options = JSON.parse(process.env.CLUSTER_APP_OPTIONS ?? '{}') as AppOptions;
  const fault = /^(relay-after-confirms|store-after-commits):(\d+)$/.exec(process.env.CLUSTER_FAULT ?? '');
  if (fault?.[1] === 'relay-after-confirms') {
    const tick = killAfter(Number(fault[2]), 'relay-after-confirm');
    options.faults = {
      relayBus: (bus: EventBus): EventBus =>
        busWith(bus, {
          publish: async (envelope) => {
            await bus.publish(envelope);
            if (envelope.event.type === 'message') tick({ messageId: envelope.event.message.messageId, clientMessageId: envelope.event.message.clientMessageId });
          },
          publishBatch: async (envelopes, batchOptions) => {
            await bus.publishBatch(envelopes, batchOptions);
            for (const envelope of envelopes) {
              if (envelope.event.type === 'message') tick({ messageId: envelope.event.message.messageId, clientMessageId: envelope.event.message.clientMessageId });
            }
          },
        }),
    };
  } else if (fault?.[1] === 'store-after-commits') {
    const tick = killAfter(Number(fault[2]), 'store-after-commit');
    options.faults = {
      sendChat: (chat) => ({
        checkSend: (caller, input) => chat.checkSend(caller, input),
        repeatAckEnvelope: (caller, message) => chat.repeatAckEnvelope(caller, message),
        sendFailedEnvelope: (caller, input, err) => chat.sendFailedEnvelope(caller, input, err),
        sendMessage: async (caller, input) => {
          const result = await chat.sendMessage(caller, input);
          if (result.created) tick({ messageId: result.message.messageId, clientMessageId: result.message.clientMessageId });
          return result;
        },
      }),
    };
  }
  const app = await createApp(config, logger, options);
  const shutdown = (): void => {
    app.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
