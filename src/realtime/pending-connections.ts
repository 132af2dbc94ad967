/**
 * Admission for connections that have not authenticated yet: raw WebSockets before CONNECT,
 * SockJS sessions before their CONNECT went through.
 *
 * Before CONNECT a connection costs us memory (socket, parser, StompConnection, a SockJS session
 * and its binding) and proves nothing about who holds it, so it is the one thing an anonymous
 * client can multiply. A global cap bounds that memory; a per-address cap (client address as
 * the trusted proxy reports it, IPv6 by /64) keeps one source from taking the whole global cap.
 * A slot is held from admission until the connection authenticates or goes away, whichever is
 * first; `release` is idempotent so every path that ends a connection may call it.
 */
import { addressBucket } from './client-address.js';

export interface PendingLimits {
  /** Connections not yet authenticated, on this instance. */
  readonly max: number;
  /** Of those, from one address bucket. */
  readonly maxPerAddress: number;
}

export interface PendingSlot {
  readonly address: string;
  /** True once given back (the connection authenticated or went away). */
  readonly released: boolean;
  /** Gives the slot back; later calls do nothing. */
  release(): void;
}

export type PendingRefusal = 'pending_limit' | 'pending_limit_per_address';

export class PendingConnections {
  private total = 0;
  private readonly perBucket = new Map<string, number>();

  constructor(readonly limits: PendingLimits) {}

  /** Number of slots held now. */
  get size(): number {
    return this.total;
  }

  admit(address: string): PendingSlot | PendingRefusal {
    if (this.total >= this.limits.max) return 'pending_limit';
    const bucket = addressBucket(address);
    const held = this.perBucket.get(bucket) ?? 0;
    if (held >= this.limits.maxPerAddress) return 'pending_limit_per_address';
    this.total++;
    this.perBucket.set(bucket, held + 1);
    let released = false;
    return {
      address,
      get released() {
        return released;
      },
      release: () => {
        if (released) return;
        released = true;
        this.total--;
        const left = (this.perBucket.get(bucket) ?? 1) - 1;
        if (left === 0) this.perBucket.delete(bucket);
        else this.perBucket.set(bucket, left);
      },
    };
  }
}
