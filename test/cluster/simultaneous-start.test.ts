/**
 * Instances of a deployment start at the same moment (a rollout, `npm run cluster`, a node
 * restart): on a fresh database all of them must come up, one applying the migrations while the
 * others wait for its advisory lock, none exiting.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createTestDatabase, infra, type TestDatabase } from '../support/infra.js';
import { api, deleteQueues, type InstanceProcess, instanceQueueOf, sharedCluster, startInstanceProcess } from './support/cluster.js';

describe.skipIf(!infra.postgresUrl || !infra.rabbitmqUrl)('three instances started at the same instant on a fresh database', () => {
  let database: TestDatabase | undefined;
  const started: InstanceProcess[] = [];

  afterAll(async () => {
    await Promise.allSettled(started.map((p) => p.kill()));
    if (database) {
      const shared = sharedCluster(database.url, infra.rabbitmqUrl!);
      await deleteQueues(shared.amqpUrl, shared, started.map(instanceQueueOf).filter((q): q is string => q !== undefined));
      await database.drop();
    }
  });

  it('all become ready', async () => {
    database = await createTestDatabase(infra.postgresUrl!);
    const shared = sharedCluster(database.url, infra.rabbitmqUrl!);
    const results = await Promise.allSettled(['a', 'b', 'c'].map((name) => startInstanceProcess(shared, { name, timeoutMs: 90_000 })));
    for (const result of results) if (result.status === 'fulfilled') started.push(result.value);
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []));
    expect(failures).toEqual([]);
    for (const instance of started) {
      await expect.poll(async () => (await api(instance.url, 'GET', '/health/ready')).status, { timeout: 20_000 }).toBe(200);
    }
  }, 120_000);
});
