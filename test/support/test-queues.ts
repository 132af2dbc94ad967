/** Removes the queues a test run or a benchmark declared on the shared broker. */
import { Connection } from 'rabbitmq-client';

export async function deleteQueues(amqpUrl: string, queues: readonly string[]): Promise<void> {
  const conn = new Connection({ url: amqpUrl, retryLow: 100, retryHigh: 500 });
  conn.on('error', () => undefined);
  try {
    for (const queue of queues) await conn.queueDelete({ queue });
  } finally {
    await conn.close();
  }
}
