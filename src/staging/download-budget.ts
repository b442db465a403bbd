import { PermanentError } from '../errors.js';

/**
 * What one task's downloads may still use, shared by all its http and s3 inputs: bytes written to the
 * gateway's disk (`storage.maxTaskDownloadBytes`) and objects listed for S3 DIRECTORY inputs
 * (`storage.s3.maxListedObjects`). Without it a single task could fill the shared filesystem, or keep
 * a worker paging through a bucket of millions of objects. stageInputs makes one per task.
 */

export interface DownloadLimits {
  /** Bytes over all of a task's downloaded inputs (`storage.maxTaskDownloadBytes`). */
  maxDownloadBytes: number;
  /** Objects listed over all of a task's S3 DIRECTORY inputs (`storage.s3.maxListedObjects`). */
  maxListedObjects: number;
}

/** A task's downloads went past a budget; a retry would meet the same budget, so it is permanent. */
export class DownloadBudgetError extends PermanentError {
  constructor(message: string) {
    super(message);
    this.name = 'DownloadBudgetError';
  }
}

export class DownloadBudget {
  private bytes = 0;
  private listed = 0;

  constructor(readonly limits: DownloadLimits) {}

  /** No limits: for a fetcher used on its own, outside a task's staging. */
  static unlimited(): DownloadBudget {
    return new DownloadBudget({
      maxDownloadBytes: Number.MAX_SAFE_INTEGER,
      maxListedObjects: Number.MAX_SAFE_INTEGER,
    });
  }

  get remainingBytes(): number {
    return this.limits.maxDownloadBytes - this.bytes;
  }

  /** Counts `n` more bytes; throws once the task's downloads pass the budget. */
  take(n: number): void {
    this.bytes += n;
    if (this.bytes > this.limits.maxDownloadBytes) throw this.overBytes();
  }

  /** Gives back bytes that are no longer on disk: a failed try's partial file, which the next try overwrites. */
  give(n: number): void {
    this.bytes = Math.max(0, this.bytes - n);
  }

  /** Throws at once when `n` announced bytes (a Content-Length, a listing's sizes) would not fit. */
  expect(n: number): void {
    if (n > this.remainingBytes) throw this.overBytes(n);
  }

  /** Counts one more listed object; throws once the task has listed more than its limit. */
  list(): void {
    this.listed++;
    if (this.listed > this.limits.maxListedObjects) {
      throw new DownloadBudgetError(
        `listing stopped after ${this.limits.maxListedObjects} objects, the limit for one task's ` +
          `DIRECTORY inputs (storage.s3.maxListedObjects)`,
      );
    }
  }

  private overBytes(announced?: number): DownloadBudgetError {
    const max = this.limits.maxDownloadBytes;
    const what =
      announced === undefined
        ? `the task's downloads pass`
        : `${announced} more bytes would take the task's downloads past`;
    return new DownloadBudgetError(`${what} their budget of ${max} bytes (storage.maxTaskDownloadBytes)`);
  }
}
