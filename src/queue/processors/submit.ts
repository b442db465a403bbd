import { access, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { prepareJob, type PreparedJob } from './prepare-job.js';
import { isPermanent } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { TaskLease } from '../../store/task-lease.js';
import type { TaskRecord } from '../../tes/types.js';
import { TASK_FILE, taskDirOf, taskFile } from '../../tes/task-directory.js';
import { withSystemLogs } from '../../tes/task-logs.js';
import type { Attempt, ProcessorContext } from './context.js';

/** Written just before sbatch: its presence means a job may exist although Redis has none. */
const SUBMIT_MARKER = TASK_FILE.submitAttempted;

/** How long a task's submission lease lasts unless renewed; its holder renews it every third of this. */
export const SUBMISSION_LEASE_MS = 30_000;

/** How often a worker looks whether another one's submission lease is free. */
const LEASE_POLL_MS = 250;

/**
 * How long a worker waits for another one's submission of the same task: longer than any staging
 * should take. The holder renews its lease while it works, so a wait this long means a stuck holder.
 */
const LEASE_WAIT_MS = 15 * 60_000;

/** The submission lease of a task was lost or not obtained: another worker is submitting it. */
export class SubmissionLeaseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SubmissionLeaseError';
  }
}

/** Marks the attempt, then submits. A worker that dies after this leaves a job the next one finds. */
export async function launch(
  ctx: ProcessorContext,
  record: TaskRecord,
  prepared: PreparedJob,
): Promise<string> {
  await writeFile(taskFile(prepared.workDir, SUBMIT_MARKER), `${new Date().toISOString()}\n`, {
    mode: 0o600,
  });
  return ctx.driver.submit({
    taskId: record.id,
    workDir: prepared.workDir,
    args: prepared.args,
    since: new Date(record.creationTime),
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * A submission lease being held: renewed in the background every third of its life, and checked
 * (renewed once more, which fails once it has lapsed) before each step that only its holder may take.
 */
class HeldLease {
  private lost = false;
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
      this.logger.warn({ taskId: this.taskId, err }, 'could not renew a submission lease');
    }
  }

  /** Whether this process still holds the lease (and, if so, for a whole lease period more). */
  async check(): Promise<boolean> {
    if (this.lost) return false;
    this.lost = !(await this.lease.renew());
    return !this.lost;
  }

  /** After a loss: waits to hold the lease again. */
  async regain(): Promise<void> {
    await takeLease(this.lease, this.taskId);
    this.lost = false;
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    await this.lease
      .release()
      .catch((err: unknown) =>
        this.logger.warn({ taskId: this.taskId, err }, 'could not release a submission lease'),
      );
  }
}

/** Waits until this process holds the lease, while another holder renews it, up to LEASE_WAIT_MS. */
async function takeLease(lease: TaskLease, taskId: string): Promise<void> {
  const deadline = Date.now() + LEASE_WAIT_MS;
  while (!(await lease.take())) {
    if (Date.now() > deadline) {
      throw new SubmissionLeaseError(
        `task ${taskId} has been in submission by another worker for over ${LEASE_WAIT_MS} ms ` +
          `(lease ${lease.key}); it will be tried again`,
      );
    }
    await sleep(LEASE_POLL_MS);
  }
}

/**
 * Hands a task to the cluster, exactly once. Only the holder of the task's submission lease
 * (ctx.submissionLease) submits: a second worker on the same task (a queue job run again after a
 * stall) waits for the first, then finds the task submitted. Before submitting, the holder looks for a
 * job already carrying the task's marker: sbatch may have submitted and then timed out, or a worker
 * may have died between sbatch and the Redis write; a job found so is adopted as it is, without
 * preparing the task again under it. A cancel that arrives meanwhile is honoured after the fact,
 * through the cancel queue, which retries until Slurm has taken the job back.
 */
export async function processSubmit(taskId: string, attempt: Attempt, ctx: ProcessorContext): Promise<void> {
  const lease = ctx.submissionLease?.(taskId);
  if (!lease) return submit(taskId, attempt, ctx, undefined);
  await takeLease(lease, taskId);
  const held = new HeldLease(lease, taskId, ctx.logger);
  try {
    await submit(taskId, attempt, ctx, held);
  } finally {
    await held.release();
  }
}

async function submit(
  taskId: string,
  attempt: Attempt,
  ctx: ProcessorContext,
  held: HeldLease | undefined,
): Promise<void> {
  const { store, driver, logger } = ctx;
  const record = await store.get(taskId);
  if (!record || record.run?.jobId) return;
  // A task stays QUEUED until its job starts (see tes/state.ts); INITIALIZING without a job is a
  // submission an older gateway began.
  const waiting = record.state;
  if (waiting !== 'QUEUED' && waiting !== 'INITIALIZING') return;

  const workDir = taskDirOf(ctx.prepare.workRoot, taskId);
  let warnings: string[] = [];
  let jobId: string;
  try {
    // Only an attempt that got as far as sbatch can have left a job behind: look for it then.
    const earlier = (await exists(taskFile(workDir, SUBMIT_MARKER)))
      ? await driver.findJob(taskId, new Date(record.creationTime), workDir)
      : undefined;
    if (earlier) {
      jobId = earlier;
    } else {
      const prepared = await prepareJob(record, ctx.prepare);
      warnings = prepared.warnings;
      if (held && !(await held.check())) {
        throw new SubmissionLeaseError(
          `lost the submission lease of task ${taskId} before sbatch; another worker may be submitting it`,
        );
      }
      jobId = await launch(ctx, record, prepared);
    }
  } catch (err) {
    if (err instanceof SubmissionLeaseError) throw err;
    const last = attempt.number >= attempt.of;
    if (!isPermanent(err) && !last) {
      logger.warn({ taskId, err, attempt }, 'submission failed; it will be retried');
      throw err;
    }
    const reason = (err as Error).message;
    const lines = isPermanent(err)
      ? [`the task could not be submitted: ${reason}`]
      : [`the task could not be submitted after ${attempt.of} attempts: ${reason}`];
    await store.transition(taskId, 'SYSTEM_ERROR', {
      from: ['INITIALIZING', 'QUEUED'],
      logs: withSystemLogs(record.logs, lines),
    });
    logger.info({ taskId, reason }, 'task failed before submission');
    return;
  }

  await writeFile(taskFile(workDir, TASK_FILE.jobId), `${jobId}\n`, { mode: 0o600 });
  if (held && !(await held.check())) {
    // The lease lapsed during sbatch: another worker may have looked for a job (and adopted this one)
    // or submitted its own. Whichever it recorded stands; this job goes unless it is that one.
    logger.warn({ taskId, jobId }, 'submission lease lost during sbatch; settling with the new holder');
    await held.regain();
    const now = await store.get(taskId);
    if (now?.run?.jobId === jobId) return;
    if (now?.run?.jobId || (now?.state !== 'QUEUED' && now?.state !== 'INITIALIZING')) {
      await cancelOrphan(ctx, taskId, jobId, 'another worker submitted the task meanwhile');
      return;
    }
  }
  const run = { workDir, submittedAt: new Date().toISOString(), jobId };
  const logs = withSystemLogs(record.logs, [...warnings, `submitted as ${driver.kind} job ${jobId}`]);
  // The job, its run and these logs are recorded in one change, and only while the task still waits:
  // the reconciler cannot see the job (and move the task on) before the submission's logs are in.
  const t = await store.transition(taskId, waiting, { from: [waiting], logs, run, job: jobId });
  if (t.outcome === 'illegal' || t.outcome === 'missing') {
    await cancelOrphan(ctx, taskId, jobId, 'the task was cancelled during submission');
  }
}

/**
 * A job made for a task that will not record it goes through the cancel queue, which retries a
 * failed scancel with backoff: the job is not in Redis, so nothing else would ever stop it.
 */
async function cancelOrphan(
  ctx: ProcessorContext,
  taskId: string,
  jobId: string,
  why: string,
): Promise<void> {
  await ctx.queues.enqueue('cancel', { taskId, jobId }, { replaceFinished: true });
  ctx.logger.info({ taskId, jobId }, `${why}; its job ${jobId} is being cancelled`);
}
