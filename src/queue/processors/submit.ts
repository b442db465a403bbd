import { access, readFile } from 'node:fs/promises';
import { parseSubmitMarker, renderSubmitMarker } from '../../compute/submit-marker.js';
import { ledgerOf, prepareJob, runAsUser, type PreparedJob } from './prepare-job.js';
import { isPermanent } from '../../errors.js';
import { LeaseBusyError, underLease, type HeldLease } from './held-lease.js';
import type { TaskRecord } from '../../tes/types.js';
import { TASK_FILE, taskDirOf, taskFile } from '../../tes/task-directory.js';
import { withSystemLogs } from '../../tes/task-logs.js';
import type { Attempt, ProcessorContext } from './context.js';
import type { SubmittedJob } from '../../compute/driver.js';

/**
 * Written by the launcher just before sbatch: its presence means a job may exist although Redis has
 * none. It holds the time of the attempt, the notes of the preparation that made the job, for the
 * task's logs when a retry adopts that job, and the array the task went in (compute/submit-marker.ts):
 * one file per attempt, written once, where each file written costs metadata operations on the shared
 * filesystems work roots live on.
 */
const SUBMIT_MARKER = TASK_FILE.submitAttempted;

/**
 * Submits, the launcher marking the attempt just before. A worker that dies after the mark leaves a
 * job the next one finds, and the notes of the preparation that made it, for the task's logs.
 */
export async function launch(
  ctx: ProcessorContext,
  record: TaskRecord,
  prepared: PreparedJob,
  retried: boolean,
): Promise<SubmittedJob> {
  return ctx.driver.submit({
    taskId: record.id,
    workDir: prepared.workDir,
    ledgerDir: prepared.ledgerDir,
    user: prepared.user,
    handover: prepared.handover,
    args: prepared.args,
    since: new Date(record.creationTime),
    retried,
    marker: renderSubmitMarker(new Date(), prepared.warnings),
  });
}

/** The notes of the preparation that made the job a retry adopts, from the submit marker. */
async function preparedNotes(ledgerDir: string): Promise<string[]> {
  const text = await readFile(taskFile(ledgerDir, SUBMIT_MARKER), 'utf8').catch(() => '');
  return parseSubmitMarker(text).notes;
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
 * Hands a task to the cluster, exactly once. Only the holder of the task's submission lease
 * (ctx.taskLease) submits: a second worker on the same task (a queue job run again after a
 * stall) waits for the first, then finds the task submitted. Before submitting, the holder looks for a
 * job already carrying the task's marker: sbatch may have submitted and then timed out, or a worker
 * may have died between sbatch and the Redis write; a job found so is adopted as it is, without
 * preparing the task again under it. A cancel that arrives meanwhile is honoured after the fact,
 * through the cancel queue, which retries until Slurm has taken the job back.
 */
export async function processSubmit(taskId: string, attempt: Attempt, ctx: ProcessorContext): Promise<void> {
  await underLease(ctx.taskLease?.('submit', taskId), taskId, 'submission', ctx.logger, (held) =>
    submit(taskId, attempt, ctx, held),
  );
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
  const ledgerDir = ledgerOf(ctx.prepare, taskId);
  let warnings: string[] = [];
  let job: SubmittedJob;
  try {
    // Only an attempt that got as far as sbatch can have left a job behind: look for it then.
    const user = ctx.prepare.runAs ? runAsUser(record) : undefined;
    const retried = await exists(taskFile(ledgerDir, SUBMIT_MARKER));
    const earlier = retried
      ? await driver.findJob(taskId, new Date(record.creationTime), ledgerDir, user)
      : undefined;
    if (earlier) {
      job = earlier;
      warnings = await preparedNotes(ledgerDir);
    } else {
      const prepared = await prepareJob(record, ctx.prepare);
      warnings = prepared.warnings;
      if (held && !(await held.check())) {
        throw new LeaseBusyError(
          `lost the submission lease of task ${taskId} before sbatch; another worker may be submitting it`,
        );
      }
      job = await launch(ctx, record, prepared, retried);
    }
  } catch (err) {
    if (err instanceof LeaseBusyError) throw err;
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

  const { jobId, jobName } = job;
  const run = { workDir, submittedAt: new Date().toISOString(), jobId, ...(jobName ? { jobName } : {}) };
  const logs = withSystemLogs(record.logs, [...warnings, `submitted as ${driver.kind} job ${jobId}`]);
  let from = waiting;
  for (let round = 0; ; round++) {
    if (held && round > 0) {
      // The fence refused the write: the lease lapsed during sbatch, or after it. Another worker may
      // have looked for a job (and adopted this one) or submitted its own. Whichever it recorded
      // stands; this job goes unless it is that one.
      if (round >= 3) {
        throw new LeaseBusyError(
          `task ${taskId} keeps losing its submission lease; job ${jobId} is adopted by the retry`,
        );
      }
      logger.warn({ taskId, jobId }, 'submission lease lost after sbatch; settling with the new holder');
      await held.regain();
      const now = await store.get(taskId);
      if (now?.run?.jobId === jobId) return;
      if (now?.run?.jobId || (now?.state !== 'QUEUED' && now?.state !== 'INITIALIZING')) {
        await cancelOrphan(ctx, taskId, jobId, 'another worker submitted the task meanwhile');
        return;
      }
      from = now.state;
    }
    // The job, its run and these logs are recorded in one change, and only while the task still waits
    // and this worker holds the lease (the fence, checked in the same script: no round trip to ask
    // first): the reconciler cannot see the job (and move the task on) before the submission's logs
    // are in. The same change frees the lease.
    const t = await store.transition(taskId, from, {
      from: [from],
      logs,
      run,
      job: jobId,
      fence: held?.fence,
      releaseFence: held !== undefined,
    });
    if (t.outcome === 'fenced') continue;
    if (t.outcome === 'ok' || t.outcome === 'same') held?.freed();
    if (t.outcome === 'illegal' || t.outcome === 'missing') {
      await cancelOrphan(ctx, taskId, jobId, 'the task was cancelled during submission');
    }
    return;
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
