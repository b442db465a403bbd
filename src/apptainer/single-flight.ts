/**
 * Callers in one process asking for the same key while a run is under way share its promise; the
 * next call after it settles starts afresh (a failure is not remembered here).
 */
export class SingleFlight<T> {
  private readonly pending = new Map<string, Promise<T>>();

  run(key: string, start: () => Promise<T>): Promise<T> {
    let running = this.pending.get(key);
    if (!running) {
      running = start().finally(() => this.pending.delete(key));
      this.pending.set(key, running);
    }
    return running;
  }
}
