import { Connection } from 'rabbitmq-client';
import { describe } from 'vitest';
import { infra, uniqueName } from '../../test/support/infra.js';
import { MemorySendQueue } from './memory-send-queue.js';
import { RabbitMqSendQueue } from './rabbitmq-send-queue.js';
import { describeSendQueueContract } from './send-queue.contract.js';

const retry = { maxAttempts: 3, retryMinMs: 20, retryMaxMs: 100 };

describeSendQueueContract('memory', async () => ({ open: () => new MemorySendQueue(retry), close: async () => undefined }), { sharedBetweenProcesses: false });

describe.skipIf(!infra.rabbitmqUrl)('rabbitmq', () => {
  describeSendQueueContract(
    'rabbitmq',
    async () => {
      const url = infra.rabbitmqUrl ?? '';
      // This run's queue names, never the shared chat.send.queue; removed on close.
      const queue = uniqueName('test.contract.send');
      const deadLetterQueue = `${queue}.dead`;
      return {
        open: () => new RabbitMqSendQueue({ ...retry, url, instanceId: uniqueName('test.contract'), queue, deadLetterQueue, closeTimeoutMs: 2_000 }),
        async close() {
          const admin = new Connection(url);
          admin.on('error', () => undefined);
          try {
            await admin.queueDelete({ queue });
            await admin.queueDelete({ queue: deadLetterQueue });
          } finally {
            await admin.close();
          }
        },
      };
    },
    { sharedBetweenProcesses: true },
  );
});
