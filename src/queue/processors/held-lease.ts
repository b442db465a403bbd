import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../logger.js';
import type { TaskLease } from '../../store/task-lease.js';
import type { Fence } from '../../store/task-store.js';

/**
 * Work on one task that only one worker may do at a time (its submission, its finalization) runs
 * under the task's lease for that work (store/task-lease.ts). A second worker on the same task (a
 * queue job run again after a stall) waits for the first, then finds the work done.
 */

/** How long a task's lease lasts unless renewed; its holder renews it every third of this. */
export const TASK_LEASE_MS = 30_000;

/** How often a worker looks whether another one's lease is free. */
const LEASE_POLL_MS = 250;

/**
 * How long a worker waits for another one's work on the same task: longer than any staging or
 * delivery should take. The holder renews its lease while it works, so a wait this long means a
 * stuck holder.
 */
const LEASE_WAIT_MS = 15 * 60_000;

/** A task's lease was lost or not obtained: another worker is doing this work. */
export class LeaseBusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LeaseBusyError';
  }
}

/**
 * A task's lease being held: renewed in the background every third of its life, and checked
 * (renewed once more, which fails once it has lapsed) before each step that only its holder may take.
 */
export class HeldLease {
  private lost = false;
  private isFreed = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly lease: TaskLease,
    private readonly taskId: string,
    private readonly logger: Logger,
  ) {
    this.timer = setInterval(() => void this.renewInBackground(), Math.max(1, lease.ttlMs / 3));
    this.timer.unref();
  }

  private async renewInBackground(): Promise<void> {
    try {
      if (!this.lost && !(await this.lease.renew())) this.lost = true;
    } catch (err) {
      // A failed renewal is retried at the next tick; the lease lapses only if they all fail.
      this.logger.warn({ taskId: this.taskId, err }, 'could not renew a task lease');
    }
  }

  /** Fences a write: it lands only while this process still holds the lease. */
  get fence(): Fence {
    return this.lease.fence;
  }

  /** Whether this process still holds the lease (and, if so, for a whole lease period more). */
  async check(): Promise<boolean> {
    if (this.lost) return false;
    this.lost = !(await this.lease.renew());
    return !this.lost;
  }

  /** After a loss: waits to hold the lease again. */
  async regain(): Promise<void> {
    await takeLease(this.lease, this.taskId, 'work');
    this.lost = false;
  }

  /** The lease was freed by a write fenced with it (TransitionOptions.releaseFence). */
  freed(): void {
    this.isFreed = true;
    clearInterval(this.timer);
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    if (this.isFreed) return;
    await this.lease
      .release()
      .catch((err: unknown) =>
        this.logger.warn({ taskId: this.taskId, err }, 'could not release a task lease'),
      );
  }
}

/**
 * Waits until this process holds the lease, while another holder renews it, up to LEASE_WAIT_MS.
 * `work` names what the lease guards, for the message.
 */
export async function takeLease(lease: TaskLease, taskId: string, work: string): Promise<void> {
  const deadline = Date.now() + LEASE_WAIT_MS;
  while (!(await lease.take())) {
    if (Date.now() > deadline) {
      throw new LeaseBusyError(
        `task ${taskId} has been in ${work} by another worker for over ${LEASE_WAIT_MS} ms ` +
          `(lease ${lease.key}); it will be tried again`,
      );
    }
    await sleep(LEASE_POLL_MS);
  }
}

/** Runs `work` holding the task's lease `lease` (when there is one), and frees it after. */
export async function underLease<T>(
  lease: TaskLease | undefined,
  taskId: string,
  what: string,
  logger: Logger,
  work: (held: HeldLease | undefined) => Promise<T>,
): Promise<T> {
  if (!lease) return work(undefined);
  await takeLease(lease, taskId, what);
  const held = new HeldLease(lease, taskId, logger);
  try {
    return await work(held);
  } finally {
    await held.release();
  }
}
