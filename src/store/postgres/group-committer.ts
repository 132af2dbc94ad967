/**
 * Group commit: concurrent requests share one transaction instead of queueing for one each.
 *
 * A request waits only while all `parallelism` transaction slots are busy; the moment a slot frees,
 * everything queued so far (up to `maxBatch`) goes in one batch. So an idle system adds no delay,
 * and under load the batch size grows with the load, which is what lifts the write ceiling.
 * Invariant: every submitted item is settled exactly once, by its own result or error.
 */
export type BatchOutcome<O> = { ok: true; value: O } | { ok: false; error: unknown };

export class GroupCommitter<I, O> {
  private queue: Array<{ item: I; resolve: (o: O) => void; reject: (e: unknown) => void }> = [];
  private inFlight = 0;

  constructor(
    private readonly runBatch: (items: readonly I[]) => Promise<ReadonlyArray<BatchOutcome<O>>>,
    private readonly parallelism: number,
    private readonly maxBatch = 256,
  ) {}

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.drain();
    });
  }

  private drain(): void {
    while (this.inFlight < this.parallelism && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight++;
      this.runBatch(batch.map((b) => b.item))
        .then(
          (outcomes) => {
            batch.forEach((entry, i) => {
              const outcome = outcomes[i];
              if (!outcome) entry.reject(new Error('group commit returned no outcome for an item'));
              else if (outcome.ok) entry.resolve(outcome.value);
              else entry.reject(outcome.error);
            });
          },
          (err: unknown) => batch.forEach((entry) => entry.reject(err)),
        )
        .finally(() => {
          this.inFlight--;
          this.drain();
        });
    }
  }
}
