import type { ComputeDriver } from './driver.js';

/**
 * Gathers the cancels that arrive within a short window into one call (`scancel 1 2 3 ...`): a
 * workflow engine aborting a run cancels hundreds of tasks at once.
 */
export class CancelBatcher {
  private pending: Array<{ jobId: string; resolve: () => void; reject: (e: unknown) => void }> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly driver: ComputeDriver,
    private readonly windowMs = 100,
  ) {}

  cancel(jobId: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ jobId, resolve, reject });
      this.timer ??= setTimeout(() => void this.flush(), this.windowMs);
    });
  }

  private async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    this.timer = undefined;
    try {
      await this.driver.cancel([...new Set(batch.map((b) => b.jobId))]);
      for (const b of batch) b.resolve();
    } catch (err) {
      for (const b of batch) b.reject(err);
    }
  }
}
