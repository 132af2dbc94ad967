/**
 * An EventBus with some methods replaced and the rest handed to the real one: how fault and
 * recording tests wrap the outbox relay's bus (AppOptions.faults.relayBus).
 */
import type { EventBus } from '../../src/chat/ports.js';

export function busWith(bus: EventBus, overrides: Partial<EventBus>): EventBus {
  return {
    start: () => bus.start(),
    stop: () => bus.stop(),
    publish: (envelope) => bus.publish(envelope),
    publishBatch: (envelopes, options) => bus.publishBatch(envelopes, options),
    deliverLocally: (envelope) => bus.deliverLocally(envelope),
    onEvent: (handler) => bus.onEvent(handler),
    addInterest: (user) => bus.addInterest(user),
    removeInterest: (user) => bus.removeInterest(user),
    isHealthy: () => bus.isHealthy(),
    ...overrides,
  };
}
