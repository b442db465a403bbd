/**
 * Gathers the requests that arrive within a short window into one call: a workflow engine aborting a
 * run cancels hundreds of tasks at once (one `scancel 1 2 3 ...`), and jobs that end together are
 * looked up together (one `sacct`).
 */
export class Batcher<K, V> {
  private pending: Array<{ key: K; resolve: (v: V | undefined) => void; reject: (e: unknown) => void }> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly run: (keys: K[]) => Promise<Map<K, V> | void>,
    private readonly windowMs = 100,
  ) {}

  request(key: K): Promise<V | undefined> {
    return new Promise((resolve, reject) => {
      this.pending.push({ key, resolve, reject });
      this.timer ??= setTimeout(() => void this.flush(), this.windowMs);
    });
  }

  /** Sends what has gathered now, without waiting for the window to close (a process stopping). */
  flushNow(): void {
    if (this.timer === undefined) return;
    clearTimeout(this.timer);
    void this.flush();
  }

  private async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    this.timer = undefined;
    try {
      const results = await this.run([...new Set(batch.map((b) => b.key))]);
      for (const b of batch) b.resolve(results ? results.get(b.key) : undefined);
    } catch (err) {
      for (const b of batch) b.reject(err);
    }
  }
}
