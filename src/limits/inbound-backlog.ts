/**
 * What one connection has received but not yet handled, in arrival order, with each item's size.
 *
 * A ring buffer rather than a promise chain or a plain array: pushing and shifting allocate
 * nothing per item (an array's shift() is O(n), a chain's links live until it drains), and the
 * owner can see at any moment how much is waiting. Three marks turn that into backpressure:
 * above the pause mark the owner stops reading from the client, at half of it reading resumes,
 * and above the hard maximum (reachable only through a transport that cannot pause, or a client
 * that packs many frames into one message) the owner drops the client.
 */

export interface InboundBacklogLimits {
  /** Above either mark the owner stops reading; at half of both it resumes. */
  readonly pauseFrames: number;
  readonly pauseBytes: number;
  /** Above either the client is not being held back: the owner drops it. */
  readonly maxFrames: number;
  readonly maxBytes: number;
}

const INITIAL_CAPACITY = 16;

export class InboundBacklog<T> {
  private items: Array<T | undefined> = new Array<T | undefined>(INITIAL_CAPACITY);
  private sizes = new Float64Array(INITIAL_CAPACITY);
  private head = 0;
  private count = 0;
  private totalBytes = 0;

  constructor(readonly limits: InboundBacklogLimits) {}

  get length(): number {
    return this.count;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  /** True once reading should stop. */
  get abovePauseMark(): boolean {
    return this.count > this.limits.pauseFrames || this.totalBytes > this.limits.pauseBytes;
  }

  /** True once a paused reader may resume: drained to half the pause marks. */
  get belowResumeMark(): boolean {
    return this.count <= this.limits.pauseFrames / 2 && this.totalBytes <= this.limits.pauseBytes / 2;
  }

  /** True when the backlog broke a hard maximum. */
  get overflowing(): boolean {
    return this.count > this.limits.maxFrames || this.totalBytes > this.limits.maxBytes;
  }

  push(item: T, bytes: number): void {
    if (this.count === this.items.length) this.grow();
    const index = (this.head + this.count) & (this.items.length - 1);
    this.items[index] = item;
    this.sizes[index] = bytes;
    this.count++;
    this.totalBytes += bytes;
  }

  /** The oldest item, or undefined when empty. */
  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.totalBytes -= this.sizes[this.head]!;
    this.head = (this.head + 1) & (this.items.length - 1);
    this.count--;
    // A burst grew the ring; an idle connection should not keep its high-water memory.
    if (this.count === 0) {
      this.head = 0;
      this.totalBytes = 0;
      if (this.items.length > INITIAL_CAPACITY * 4) this.reset();
    }
    return item;
  }

  clear(): void {
    this.reset();
  }

  private reset(): void {
    this.items = new Array<T | undefined>(INITIAL_CAPACITY);
    this.sizes = new Float64Array(INITIAL_CAPACITY);
    this.head = 0;
    this.count = 0;
    this.totalBytes = 0;
  }

  /** Doubles the capacity (always a power of two, so indices wrap with a mask). */
  private grow(): void {
    const capacity = this.items.length * 2;
    const items = new Array<T | undefined>(capacity);
    const sizes = new Float64Array(capacity);
    for (let i = 0; i < this.count; i++) {
      const from = (this.head + i) & (this.items.length - 1);
      items[i] = this.items[from];
      sizes[i] = this.sizes[from]!;
    }
    this.items = items;
    this.sizes = sizes;
    this.head = 0;
  }
}
