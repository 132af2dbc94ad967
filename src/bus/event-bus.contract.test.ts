import { describe } from 'vitest';
import { infra, uniqueName } from '../../test/support/infra.js';
import type { EventBus } from '../chat/ports.js';
import { describeEventBusContract, type BusFixture } from './event-bus.contract.js';
import { MemoryBroker, MemoryEventBus } from './memory-event-bus.js';
import { RabbitMqEventBus } from './rabbitmq-event-bus.js';

/** Opens three started buses made by `create` and stops everything it made on close. */
async function openFixture(create: () => EventBus, lingerMs: number): Promise<BusFixture> {
  const made: EventBus[] = [];
  const make = (): EventBus => {
    const bus = create();
    made.push(bus);
    return bus;
  };
  const buses = [make(), make(), make()] as const;
  try {
    await Promise.all(buses.map((bus) => bus.start()));
  } catch (err) {
    await Promise.allSettled(made.map((bus) => bus.stop()));
    throw err;
  }
  return {
    buses,
    createUnstarted: make,
    lingerMs,
    async close() {
      await Promise.all(made.map((bus) => bus.stop()));
    },
  };
}

describeEventBusContract('memory', () => {
  const broker = new MemoryBroker();
  return openFixture(() => new MemoryEventBus({ broker, lingerMs: 20 }), 20);
});

describe.skipIf(!infra.rabbitmqUrl)('rabbitmq', () => {
  describeEventBusContract('rabbitmq', () => {
    const url = infra.rabbitmqUrl ?? '';
    // Unique instance ids keep parallel runs on one broker apart; the exclusive queues die with stop().
    return openFixture(() => new RabbitMqEventBus({ url, instanceId: uniqueName('test.contract'), lingerMs: 100 }), 100);
  });
});
