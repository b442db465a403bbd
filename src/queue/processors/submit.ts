import { access, writeFile } from 'node:fs/promises';
import { prepareJob, type PreparedJob } from './prepare-job.js';
import { isPermanent } from '../../errors.js';
import type { TaskRecord } from '../../tes/types.js';
import { TASK_FILE, taskDirOf, taskFile } from '../../tes/task-directory.js';
import { withSystemLogs } from '../../tes/task-logs.js';
import type { Attempt, ProcessorContext } from './context.js';

/** Written just before sbatch: its presence means a job may exist although Redis has none. */
const SUBMIT_MARKER = TASK_FILE.submitAttempted;

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
 * Hands a task to the cluster, exactly once. Before submitting it looks for a job already carrying the
 * task's marker: sbatch may have submitted and then timed out, or a worker may have died between
 * sbatch and the Redis write. A cancel that arrives meanwhile is honoured after the fact.
 */
export async function processSubmit(taskId: string, attempt: Attempt, ctx: ProcessorContext): Promise<void> {
  const { store, driver, logger } = ctx;
  const record = await store.get(taskId);
  if (!record || record.run?.jobId) return;
  // A task stays QUEUED until its job starts (see tes/state.ts); INITIALIZING without a job is a
  // submission an older gateway began.
  const waiting = record.state;
  if (waiting !== 'QUEUED' && waiting !== 'INITIALIZING') return;

  let prepared;
  let jobId: string;
  try {
    const workDir = taskDirOf(ctx.prepare.workRoot, taskId);
    // Only an attempt that got as far as sbatch can have left a job behind: look for it then.
    const earlier = (await exists(taskFile(workDir, SUBMIT_MARKER)))
      ? await driver.findJob(taskId, new Date(record.creationTime), workDir)
      : undefined;
    prepared = await prepareJob(record, ctx.prepare);
    jobId = earlier ?? (await launch(ctx, record, prepared));
  } catch (err) {
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

  await writeFile(taskFile(prepared.workDir, TASK_FILE.jobId), `${jobId}\n`, { mode: 0o600 });
  const run = {
    workDir: taskDirOf(ctx.prepare.workRoot, taskId),
    submittedAt: new Date().toISOString(),
    jobId,
  };
  const logs = withSystemLogs(record.logs, [
    ...prepared.warnings,
    `submitted as ${driver.kind} job ${jobId}`,
  ]);
  // The job, its run and these logs are recorded in one change, and only while the task still waits:
  // the reconciler cannot see the job (and move the task on) before the submission's logs are in.
  const t = await store.transition(taskId, waiting, { from: [waiting], logs, run, job: jobId });
  if (t.outcome === 'illegal' || t.outcome === 'missing') {
    // Cancelled while it was being submitted: the job just made must go too.
    await driver.cancel([jobId]);
    logger.info({ taskId, jobId }, 'task cancelled during submission; its job was cancelled');
  }
}
