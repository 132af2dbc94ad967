/**
 * In-process EventBus for single-instance mode, and a stand-in for RabbitMQ in tests.
 *
 * Lifecycle: construct → `start()` (joins its broker) → `publish`/`addInterest` → `stop()` (leaves the
 * broker, drops deliveries still queued for it; idempotent). Several buses may share one
 * `MemoryBroker` to act as several instances of the cluster in one process.
 *
 * Invariants, matching the RabbitMQ adapter so the shared contract suite means something:
 * - Routing happens synchronously inside `publish`, against each bus's interest set at that moment
 *   (RabbitMQ routes when the message reaches the exchange); a bus gets at most one copy per publish,
 *   however many of the recipients it is interested in (RabbitMQ delivers a message once per queue).
 * - Handlers are called later (setImmediate), never inside `publish`: a handler that publishes must
 *   not re-enter itself or see the publisher's stack half-way through.
 * - Each receiving bus gets its own copy parsed from the JSON the publisher's envelope serialised
 *   to at publish time, as if it had crossed the wire: neither side can mutate the other's object,
 *   and anything that would not survive JSON fails here too, not only in production. An envelope
 *   no other bus is interested in is not serialised at all (a single instance's every event).
 * - Interest is reference-counted; at zero it lingers for `lingerMs` (default 0 here) before the
 *   user stops being routed to this bus, and a new `addInterest` during the linger cancels that.
 */
import type { BusEnvelope, BusHandler, EventBus, PublishBatchOptions } from '../chat/ports.js';
import { silentLogger, type AdapterLogger } from '../common/adapter-logger.js';
import { normaliseUserEmail } from './user-routing-key.js';

/** What a broker needs from a bus that joined it. */
interface BrokerMember {
  isInterestedIn(user: string): boolean;
  deliver(json: string): void;
}

/** The in-process stand-in for the RabbitMQ exchange: routes a publish to the interested buses. */
export class MemoryBroker {
  private readonly members = new Set<BrokerMember>();

  /** Returns the function that leaves the broker. */
  join(member: BrokerMember): () => void {
    this.members.add(member);
    return () => {
      this.members.delete(member);
    };
  }

  /**
   * Hands the envelope, serialised, to every member interested in one of its recipients but
   * `except`. It is serialised only when some member gets it: a single instance publishes every
   * event only to skip itself.
   */
  route(envelope: BusEnvelope, except?: BrokerMember, serialised?: string): void {
    let recipients: string[] | undefined;
    let json = serialised;
    for (const member of this.members) {
      if (member === except) continue;
      recipients ??= envelope.recipients.map(normaliseUserEmail);
      if (recipients.some((user) => member.isInterestedIn(user))) member.deliver((json ??= JSON.stringify(envelope)));
    }
  }
}

export interface MemoryEventBusOptions {
  /** Share one broker between buses to simulate several instances; default: a private one. */
  broker?: MemoryBroker;
  /** How long a user stays routed here after its interest count drops to zero. Default 0. */
  lingerMs?: number;
  logger?: AdapterLogger;
}

interface Interest {
  refs: number;
  linger: NodeJS.Timeout | undefined;
}

export class MemoryEventBus implements EventBus {
  private readonly broker: MemoryBroker;
  private readonly lingerMs: number;
  private readonly log: AdapterLogger;
  private readonly handlers: BusHandler[] = [];
  /** A user is routed here while present, including while lingering at refs 0. */
  private readonly interests = new Map<string, Interest>();
  private leave: (() => void) | undefined;
  private readonly member: BrokerMember = {
    isInterestedIn: (user) => this.interests.has(user),
    deliver: (json) => setImmediate(() => this.dispatch(JSON.parse(json) as BusEnvelope)),
  };
  /** Envelopes handed to deliverLocally, dispatched together on the next turn of the event loop. */
  private localDeliveries: BusEnvelope[] = [];
  private state: 'new' | 'started' | 'stopped' = 'new';

  constructor(options: MemoryEventBusOptions = {}) {
    this.broker = options.broker ?? new MemoryBroker();
    this.lingerMs = options.lingerMs ?? 0;
    this.log = options.logger ?? silentLogger;
  }

  start(): Promise<void> {
    if (this.state === 'stopped') return Promise.reject(new Error('MemoryEventBus: start after stop'));
    if (this.state === 'new') {
      this.leave = this.broker.join(this.member);
      this.state = 'started';
    }
    return Promise.resolve();
  }

  stop(): Promise<void> {
    if (this.state !== 'stopped') {
      this.state = 'stopped';
      this.leave?.();
      for (const interest of this.interests.values()) clearTimeout(interest.linger);
      this.interests.clear();
    }
    return Promise.resolve();
  }

  publish(envelope: BusEnvelope): Promise<void> {
    if (this.state !== 'started') return Promise.reject(new Error(`MemoryEventBus: publish while ${this.state}, call start() first`));
    try {
      // Serialised whoever is interested: an envelope that cannot cross the wire fails here as on RabbitMQ.
      this.broker.route(envelope, undefined, JSON.stringify(envelope));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    return Promise.resolve();
  }

  publishBatch(envelopes: readonly BusEnvelope[], options: PublishBatchOptions = {}): Promise<void> {
    if (this.state !== 'started') return Promise.reject(new Error(`MemoryEventBus: publish while ${this.state}, call start() first`));
    // Routed one by one: the broker stand-in costs nothing per message, and each bus is handed
    // only the events of its interested users, as the port says.
    try {
      for (const envelope of envelopes) this.broker.route(envelope, options.deliveredHere ? this.member : undefined);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    return Promise.resolve();
  }

  onEvent(handler: BusHandler): void {
    this.handlers.push(handler);
  }

  deliverLocally(envelope: BusEnvelope): void {
    // Handed over later, as a delivery from the broker would be; a commit's events share one turn.
    this.localDeliveries.push(envelope);
    if (this.localDeliveries.length === 1) setImmediate(() => this.dispatchLocalDeliveries());
  }

  addInterest(userEmail: string): Promise<void> {
    if (this.state === 'stopped') return Promise.reject(new Error('MemoryEventBus: addInterest after stop'));
    const user = normaliseUserEmail(userEmail);
    const interest = this.interests.get(user);
    if (interest) {
      interest.refs += 1;
      clearTimeout(interest.linger);
      interest.linger = undefined;
    } else {
      this.interests.set(user, { refs: 1, linger: undefined });
    }
    return Promise.resolve();
  }

  removeInterest(userEmail: string): void {
    const user = normaliseUserEmail(userEmail);
    const interest = this.interests.get(user);
    if (!interest || interest.refs === 0) {
      this.log.debug({ user }, 'removeInterest without matching addInterest ignored');
      return;
    }
    interest.refs -= 1;
    if (interest.refs > 0) return;
    if (this.lingerMs <= 0) {
      this.interests.delete(user);
      return;
    }
    interest.linger = setTimeout(() => {
      if (interest.refs === 0 && this.interests.get(user) === interest) this.interests.delete(user);
    }, this.lingerMs);
    interest.linger.unref();
  }

  isHealthy(): boolean {
    return this.state === 'started';
  }

  private dispatchLocalDeliveries(): void {
    const envelopes = this.localDeliveries;
    this.localDeliveries = [];
    for (const envelope of envelopes) this.dispatch(envelope);
  }

  private dispatch(envelope: BusEnvelope): void {
    if (this.state !== 'started') return;
    for (const handler of this.handlers) {
      try {
        handler(envelope);
      } catch (err) {
        // The port says handlers must not throw; one that does must not starve the others.
        this.log.error({ err }, 'bus handler threw');
      }
    }
  }
}
