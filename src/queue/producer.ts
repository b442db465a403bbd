import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  JOB_KINDS,
  jobIdFor,
  type Enqueuer,
  type EnqueueOptions,
  type JobKind,
  type JobPayloads,
} from './jobs.js';
import type { QueueDepth } from '../observability/metrics.js';

/** The statuses the metrics report (docs/operations.md); completed jobs are only kept for dedupe. */
const DEPTH_STATUSES = ['waiting', 'active', 'delayed', 'failed'] as const;

export interface QueueTuning {
  submitAttempts: number;
  submitBackoffMs: number;
}

/** Enqueues work for the worker; the only place that decides job ids, retries and retention. */
export class TaskQueues implements Enqueuer {
  private readonly queues: Record<JobKind, Queue>;

  constructor(
    connection: Redis,
    readonly prefix: string,
    private readonly tuning: QueueTuning,
  ) {
    const make = (kind: JobKind): Queue => new Queue(kind, { connection, prefix });
    this.queues = Object.fromEntries(JOB_KINDS.map((k) => [k, make(k)])) as Record<JobKind, Queue>;
  }

  async enqueue<K extends JobKind>(
    kind: K,
    payload: JobPayloads[K],
    options?: EnqueueOptions,
  ): Promise<boolean> {
    const transient = kind !== 'finalize';
    const jobId = jobIdFor(kind, payload.taskId);
    let replaced = false;
    if (options?.replaceFinished) {
      const done = await this.queues[kind].getJob(jobId);
      const state = await done?.getState();
      if (state === 'completed' || state === 'failed') {
        await done!.remove();
        replaced = true;
      }
    }
    await this.queues[kind].add(kind, payload, {
      jobId,
      attempts: transient ? this.tuning.submitAttempts : 3,
      backoff: { type: 'exponential', delay: this.tuning.submitBackoffMs },
      // Kept for a while after completion so that an enqueue repeated soon after is a no-op.
      removeOnComplete: { age: 3600, count: 20_000 },
      removeOnFail: { age: 7 * 24 * 3600, count: 20_000 },
    });
    return replaced;
  }

  queue(kind: JobKind): Queue {
    return this.queues[kind];
  }

  /**
   * Each queue's jobs by status and the creation time of its oldest waiting job (BullMQ adds at the
   * head of its wait list and takes from the tail: the tail is the oldest). Two reads per queue.
   */
  async depth(): Promise<QueueDepth[]> {
    return Promise.all(
      JOB_KINDS.map(async (kind) => {
        const queue = this.queues[kind];
        const [counts, [oldest]] = await Promise.all([
          queue.getJobCounts(...DEPTH_STATUSES),
          queue.getJobs(['wait'], 0, 0, true),
        ]);
        return { queue: kind, counts, oldestWaitingMs: oldest?.timestamp };
      }),
    );
  }

  async close(): Promise<void> {
    await Promise.all(Object.values(this.queues).map((q) => q.close()));
  }
}
