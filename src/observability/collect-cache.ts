/**
 * A value reused for `ttlMs` after it arrived, and never read twice at once: a scrape storm, or many
 * probes at once, costs Redis or Slurm one read per interval, and a read slower than the interval (a
 * controller that does not answer) is waited for rather than started again. A failed read is kept
 * for the interval too (a dead Redis is not asked again by every scrape), and is thrown to each
 * caller in it.
 */
export class CollectCache<T> {
  private value: { at: number; settled: boolean; result: Promise<T> } | undefined;

  constructor(
    private readonly read: () => Promise<T>,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get(): Promise<T> {
    const value = this.value;
    if (value && (!value.settled || this.now() - value.at < this.ttlMs)) return value.result;
    const entry = { at: 0, settled: false, result: this.read() };
    const settle = (): void => {
      entry.settled = true;
      entry.at = this.now();
    };
    // A rejection is handed to the callers; the cache itself must not leave one unhandled.
    entry.result.then(settle, settle);
    this.value = entry;
    return entry.result;
  }
}
