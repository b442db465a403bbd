import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { Batcher } from '../compute/batcher.js';
import type { CancelRequest } from '../compute/driver.js';
import { isPermanent } from '../errors.js';
import type { JobKind, JobPayloads } from './jobs.js';
import type { ProcessorContext } from './processors/context.js';
import { processCancel } from './processors/cancel.js';
import { PeakMemory, processFinalize } from './processors/finalize.js';
import { processSubmit } from './processors/submit.js';

/**
 * What BullMQ gets from a failed job: a permanent error becomes its UnrecoverableError, so no attempt
 * follows, with the original as its cause for the logs.
 */
export function forQueue(err: unknown): unknown {
  if (!isPermanent(err)) return err;
  const unrecoverable = new UnrecoverableError((err as Error).message);
  unrecoverable.cause = err;
  return unrecoverable;
}

/**
 * A queue job's lock lasts this long unless its worker renews it (every half of it). A job left
 * active without a lock (its worker died, or a Redis failover lost the write that finished it) is
 * found by a stall check every STALLED_CHECK_MS and runs again: within LOCK_MS plus two checks,
 * instead of BullMQ's default of 30 s plus two 30 s checks. Running a job again is safe: each
 * processor holds its task's lease and finds done work done.
 */
const LOCK_MS = 15_000;
const STALLED_CHECK_MS = 5_000;

/**
 * Peak memory lookups of this long are gathered into one sacct. They run after their tasks' terminal
 * writes, so a wide window costs clients nothing, and jobs that end together cost one accounting
 * query instead of several (each a process and a request to slurmdbd, on a host busy with the ends).
 */
const USAGE_WINDOW_MS = 2_000;

export interface WorkerTuning {
  submitConcurrency: number;
  finalizeConcurrency: number;
}

/** Runs the three queues' processors in this process. */
export class TaskWorkers {
  private readonly workers: Worker[];
  /** Each worker blocks on its own connection; BullMQ leaves connections it was given open. */
  private readonly connections: Redis[] = [];
  /** Peak memory lookups, which finish after their tasks' finalizations. */
  private readonly peaks: PeakMemory;

  constructor(connection: Redis, prefix: string, ctx: ProcessorContext, tuning: WorkerTuning) {
    const cancels = new Batcher<CancelRequest, void>((jobs) => ctx.driver.cancel(jobs));
    const usage = new Batcher<string, number>((jobIds) => ctx.driver.usage(jobIds), USAGE_WINDOW_MS);
    this.peaks = new PeakMemory(ctx, usage);
    const make = <K extends JobKind>(
      kind: K,
      concurrency: number,
      run: (job: Job<JobPayloads[K]>) => Promise<void>,
    ): Worker =>
      new Worker<JobPayloads[K]>(
        kind,
        async (job) => {
          try {
            await run(job);
          } catch (err) {
            throw forQueue(err);
          }
        },
        {
          connection: this.connect(connection),
          prefix,
          concurrency,
          lockDuration: LOCK_MS,
          stalledInterval: STALLED_CHECK_MS,
        },
      );
    this.workers = [
      make('submit', tuning.submitConcurrency, (job) =>
        processSubmit(job.data.taskId, { number: job.attemptsMade + 1, of: job.opts.attempts ?? 1 }, ctx),
      ),
      make('cancel', 64, (job) => processCancel(job.data.taskId, ctx, cancels, job.data.jobId)),
      make('finalize', tuning.finalizeConcurrency, (job) =>
        processFinalize(job.data.taskId, job.data.status, ctx, this.peaks),
      ),
    ];
    for (const w of this.workers) {
      w.on('failed', (job, err) =>
        ctx.logger.warn({ queue: w.name, jobId: job?.id, err }, 'queue job failed'),
      );
      w.on('error', (err) => ctx.logger.error({ queue: w.name, err }, 'queue worker error'));
    }
  }

  private connect(base: Redis): Redis {
    const c = base.duplicate({ maxRetriesPerRequest: null });
    this.connections.push(c);
    return c;
  }

  /**
   * Stops taking jobs and waits for the running ones. `force` stops at once: running jobs keep their
   * BullMQ lock until it lapses, then go to another worker as stalled jobs.
   */
  async close(force = false): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close(force)));
    if (!force) await this.peaks.settle();
    for (const c of this.connections) c.disconnect();
  }
}
