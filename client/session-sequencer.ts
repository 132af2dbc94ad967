/**
 * Puts one session's messages in `seq` order without duplicates.
 *
 * Invariants: `lastSeq` only grows; every message handed out has seq = previous lastSeq + 1; a seq
 * at or below `lastSeq`, or already buffered, is dropped. Messages that arrive early (a live
 * delivery overtaking a history page during recovery) wait in the buffer until the gap fills.
 */
export class SessionSequencer<M extends { seq: number }> {
  private last: number;
  private readonly buffer = new Map<number, M>();

  /** @param lastSeq the highest seq the consumer already has (0: none). */
  constructor(lastSeq: number) {
    this.last = lastSeq;
  }

  /** The highest seq handed out in order. */
  get lastSeq(): number {
    return this.last;
  }

  /** Messages are waiting for an earlier seq. */
  get hasGap(): boolean {
    return this.buffer.size > 0;
  }

  get buffered(): number {
    return this.buffer.size;
  }

  /** Offers one message; returns what is now deliverable, in order (often just it, maybe nothing). */
  offer(message: M): M[] {
    if (!Number.isSafeInteger(message.seq) || message.seq <= this.last || this.buffer.has(message.seq)) return [];
    this.buffer.set(message.seq, message);
    return this.drain();
  }

  /**
   * Offers a message in a newer state than any copy of it waiting here (an edit or delete of a
   * message not handed out yet): it replaces the waiting copy, or is offered like any message.
   */
  offerNewer(message: M): M[] {
    if (!Number.isSafeInteger(message.seq) || message.seq <= this.last) return [];
    this.buffer.set(message.seq, message);
    return this.drain();
  }

  /** The consumer has everything up to `seq` by other means: skip to it and hand out what follows. */
  advanceTo(seq: number): M[] {
    if (seq <= this.last) return [];
    this.last = seq;
    for (const buffered of this.buffer.keys()) if (buffered <= seq) this.buffer.delete(buffered);
    return this.drain();
  }

  private drain(): M[] {
    const ready: M[] = [];
    for (let next = this.buffer.get(this.last + 1); next; next = this.buffer.get(this.last + 1)) {
      this.buffer.delete(next.seq);
      this.last = next.seq;
      ready.push(next);
    }
    return ready;
  }
}
