/**
 * Presence across the cluster (docs/adr/0018): a user is online while one of their STOMP connections
 * is open on any instance; their peers (everyone who shares a session with them) are told of each
 * change on /user/queue/presence, and may ask for it (GET /api/chat/{id}/presence).
 *
 * Lifecycle: construct → `start()` (records offline the users a crashed process with the same
 * instance id left, registers this instance's liveness row, then beats and sweeps
 * every `heartbeatMs`) → `userConnected`/`userDisconnected` from the real-time gateway → `stop()` (records
 * this instance's users offline at once, tells their peers, removes its row; idempotent).
 *
 * Invariants:
 * - Connections are counted here, in memory; the store is written only when a user's count on this
 *   instance goes 0→1, or stays at 0 for `debounceMs` (a reconnect within it is not a change), and
 *   once per heart-beat for the instance. Never per connection beyond that, never per client heart-beat.
 * - One user's store calls run one after another, in the order of their transitions here.
 * - Peers are told only of cluster-wide transitions (the store says which): being online on a second
 *   instance, or going offline on one while online on another, is no news.
 * - An instance that dies without stopping stops beating; after `deadAfterMs` any live instance's
 *   sweep records its users offline (last seen: its last beat) and tells their peers.
 * - Store or bus failures are logged and retried on the next beat; a presence error never reaches a
 *   connection.
 */
import type { Caller } from './caller.js';
import type { PeerPresenceView, PresenceView } from './chat-events.js';
import type { ChatService } from './chat-service.js';
import { ChatError } from './chat-errors.js';
import type { BusEnvelope, EventBus, InstanceRecord, PresenceChange, PresenceStore } from './ports.js';
import { requireUuid } from './validation.js';

/** What other parts (webhooks, say) may ask about presence. */
export interface Presence {
  isOnline(email: string): Promise<boolean>;
}

/** Connections across the cluster, for operators (`GET /admin/connections`). */
export interface ClusterConnections {
  /** Open STOMP connections on live instances; each instance's figure is as of its last beat, this one's is now. */
  connections: number;
  /** Users online on a live instance. */
  usersOnline: number;
  instances: Array<Omit<InstanceRecord, 'startedAt' | 'aliveAt'> & { startedAt: string; aliveAt: string; self: boolean }>;
}

export interface PresenceOptions {
  instanceId: string;
  debounceMs: number;
  heartbeatMs: number;
  deadAfterMs: number;
}

export interface PresenceServiceDeps {
  store: PresenceStore;
  bus: EventBus;
  chat: Pick<ChatService, 'participantSession'>;
  options: PresenceOptions;
  /** Failures are the service's own to report; nothing here throws at a caller. */
  onError: (err: unknown, what: string) => void;
  /** Told of each change announced to peers, and what caused it. */
  onAnnounced?: (change: PresenceChange, via: 'connection' | 'sweep' | 'stop') => void;
  clock?: () => Date;
}

interface LocalUser {
  connections: number;
  /** Set while the count is 0 and the debounce runs; the user is still recorded online. */
  offlineTimer: NodeJS.Timeout | undefined;
}

export class PresenceService implements Presence {
  private readonly local = new Map<string, LocalUser>();
  /** Per user, the tail of their store calls, so transitions are recorded in order. */
  private readonly chains = new Map<string, Promise<void>>();
  /** Transitions whose store call failed: retried on the next beat (latest wins). */
  private readonly retry = new Map<string, { online: true } | { online: false; at: Date }>();
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  private state: 'new' | 'started' | 'stopped' = 'new';
  private readonly now: () => Date;

  constructor(private readonly deps: PresenceServiceDeps) {
    this.now = deps.clock ?? (() => new Date());
  }

  async start(): Promise<void> {
    if (this.state !== 'new') return;
    // INSTANCE_ID may outlive a process (a pod's name, a compose service's): rows a crashed
    // predecessor left would read as online as soon as this one beats. It held those users, so
    // they are offline now; their peers are told.
    const leftovers = await this.deps.store.leave(this.deps.options.instanceId, this.deps.options.deadAfterMs);
    // Registered before any connection is accepted: a presence row of an unregistered instance counts for nothing.
    await this.deps.store.heartbeat(this.deps.options.instanceId, this.counts());
    await Promise.all(leftovers.map((change) => this.announce(change, 'sweep').catch((err: unknown) => this.deps.onError(err, 'announcing a predecessor’s users offline'))));
    this.state = 'started';
    this.timer = setInterval(() => {
      this.beating ??= this.beat().finally(() => (this.beating = undefined));
    }, this.deps.options.heartbeatMs);
    this.timer.unref();
    this.beating = this.sweep().finally(() => (this.beating = undefined));
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    const wasStarted = this.state === 'started';
    this.state = 'stopped';
    clearInterval(this.timer);
    for (const user of this.local.values()) clearTimeout(user.offlineTimer);
    await this.beating;
    await Promise.allSettled([...this.chains.values()]);
    if (!wasStarted) return;
    try {
      const changes = await this.deps.store.leave(this.deps.options.instanceId, this.deps.options.deadAfterMs);
      await Promise.all(changes.map((change) => this.announce(change, 'stop')));
    } catch (err) {
      // Its row then ages out, and another instance sweeps its users within deadAfterMs.
      this.deps.onError(err, 'recording this instance’s users offline at stop');
    }
    this.local.clear();
  }

  /** A STOMP connection of `email` was registered on this instance. */
  userConnected(email: string): void {
    if (this.state === 'stopped') return;
    let user = this.local.get(email);
    if (!user) this.local.set(email, (user = { connections: 0, offlineTimer: undefined }));
    user.connections += 1;
    if (user.offlineTimer) {
      // Back within the debounce: still recorded online, nobody was told otherwise.
      clearTimeout(user.offlineTimer);
      user.offlineTimer = undefined;
      return;
    }
    if (user.connections === 1) this.record(email, { online: true });
  }

  /** A registered STOMP connection of `email` closed. */
  userDisconnected(email: string): void {
    const user = this.local.get(email);
    if (!user || user.connections === 0) return;
    user.connections -= 1;
    if (user.connections > 0 || this.state === 'stopped') return;
    const closedAt = this.now();
    user.offlineTimer = setTimeout(() => {
      user.offlineTimer = undefined;
      if (user.connections > 0 || this.local.get(email) !== user) return;
      this.local.delete(email);
      this.record(email, { online: false, at: closedAt });
    }, this.deps.options.debounceMs);
    user.offlineTimer.unref();
  }

  async isOnline(email: string): Promise<boolean> {
    const state = (await this.deps.store.presenceOf([email], this.deps.options.deadAfterMs)).get(email);
    return state?.online ?? false;
  }

  /** The presence of the caller's peer in a session; only its participants may ask. */
  async peerPresence(caller: Caller, sessionIdInput: unknown): Promise<{ peer: PeerPresenceView }> {
    const sessionId = requireUuid('sessionId', sessionIdInput);
    const session = await this.deps.chat.participantSession(caller, sessionId);
    const peer = session.a.email === caller.email ? session.b : session.a;
    const state = (await this.deps.store.presenceOf([peer.email], this.deps.options.deadAfterMs)).get(peer.email);
    return { peer: { online: state?.online ?? false, lastSeenAt: state?.lastSeenAt?.toISOString() ?? null } };
  }

  async clusterConnections(): Promise<ClusterConnections> {
    const { instanceId, deadAfterMs } = this.deps.options;
    const [rows, usersOnline] = await Promise.all([this.deps.store.instances(deadAfterMs), this.deps.store.onlineUsers(deadAfterMs)]);
    const here = this.counts();
    const instances = rows.map((row) => ({
      ...row,
      ...(row.instanceId === instanceId ? here : {}),
      startedAt: row.startedAt.toISOString(),
      aliveAt: row.aliveAt.toISOString(),
      self: row.instanceId === instanceId,
    }));
    return { connections: instances.filter((i) => i.alive).reduce((sum, i) => sum + i.connections, 0), usersOnline, instances };
  }

  /**
   * Asks every instance to close the user's connections: one bus event to the user's routing key
   * reaches exactly the instances where they are connected (this one included).
   */
  async disconnectEverywhere(email: string, by: string): Promise<void> {
    const envelope: BusEnvelope = { recipients: [email], event: { type: 'disconnect', sessionId: '', destinations: [], disconnect: { email, by } } };
    try {
      await this.deps.bus.publish(envelope);
    } catch (err) {
      // At least this instance's connections go; the caller is told the others may not have.
      this.deps.bus.deliverLocally(envelope);
      throw new ChatError('BUS_UNAVAILABLE', 'only this instance could be told to close the connections; try again', undefined, { cause: err });
    }
  }

  /** This instance's open connections and users with one, as counted here. */
  counts(): { connections: number; users: number } {
    let connections = 0;
    let users = 0;
    for (const user of this.local.values()) {
      if (user.connections === 0) continue;
      connections += user.connections;
      users += 1;
    }
    return { connections, users };
  }

  private record(email: string, transition: { online: true } | { online: false; at: Date }): void {
    const previous = this.chains.get(email) ?? Promise.resolve();
    const next = previous.then(() => this.apply(email, transition));
    this.chains.set(email, next);
    void next.finally(() => {
      if (this.chains.get(email) === next) this.chains.delete(email);
    });
  }

  /** Never rejects: a failure is logged and left for the next beat. */
  private async apply(email: string, transition: { online: true } | { online: false; at: Date }): Promise<void> {
    const { instanceId, deadAfterMs } = this.deps.options;
    try {
      this.retry.delete(email);
      if (transition.online) {
        const { firstOnline } = await this.deps.store.online(email, instanceId, deadAfterMs);
        if (firstOnline) await this.announce({ email, online: true, lastSeenAt: null }, 'connection');
      } else {
        const { lastOffline, lastSeenAt } = await this.deps.store.offline(email, instanceId, transition.at, deadAfterMs);
        if (lastOffline) await this.announce({ email, online: false, lastSeenAt }, 'connection');
      }
    } catch (err) {
      if (!this.retry.has(email)) this.retry.set(email, transition);
      this.deps.onError(err, `recording ${transition.online ? 'online' : 'offline'}`);
    }
  }

  private async beat(): Promise<void> {
    if (this.state !== 'started') return;
    try {
      const { registered } = await this.deps.store.heartbeat(this.deps.options.instanceId, this.counts());
      if (registered) {
        // Swept as dead while the database was out of reach: our users are online again, as far as
        // the cluster knows, only once recorded again.
        for (const [email, user] of this.local) if (user.connections > 0 || user.offlineTimer) this.record(email, { online: true });
      }
    } catch (err) {
      this.deps.onError(err, 'presence heart-beat');
      return;
    }
    for (const [email, transition] of [...this.retry]) {
      this.retry.delete(email);
      this.record(email, transition);
    }
    await this.sweep();
  }

  private async sweep(): Promise<void> {
    try {
      const changes = await this.deps.store.sweep(this.deps.options.deadAfterMs);
      await Promise.all(changes.map((change) => this.announce(change, 'sweep')));
    } catch (err) {
      this.deps.onError(err, 'sweeping dead instances');
    }
  }

  /** Tells everyone who shares a session with the user; the bus routes to where they are connected. */
  private async announce(change: PresenceChange, via: 'connection' | 'sweep' | 'stop'): Promise<void> {
    this.deps.onAnnounced?.(change, via);
    const peers = await this.deps.store.peersOf(change.email);
    if (peers.length === 0) return;
    const presence: PresenceView = { email: change.email, online: change.online, lastSeenAt: change.lastSeenAt?.toISOString() ?? null };
    // One per peer, naming a session they share; the bus packs them into few broker messages.
    const envelopes: BusEnvelope[] = peers.map((peer) => ({
      recipients: [peer.email],
      event: { type: 'presence', sessionId: peer.sessionId, destinations: [{ user: peer.email, queue: 'presence' }], presence },
    }));
    try {
      await this.deps.bus.publishBatch(envelopes);
    } catch (err) {
      // Ephemeral, like typing: without the broker, the peers connected here still hear of it.
      for (const envelope of envelopes) this.deps.bus.deliverLocally(envelope);
      this.deps.onError(err, 'publishing a presence change');
    }
  }
}
