import type { Batcher } from '../../compute/batcher.js';
import type { CancelRequest } from '../../compute/driver.js';
import { taskDirOf } from '../../tes/task-directory.js';
import { runAsUser } from './prepare-job.js';
import type { ProcessorContext } from './context.js';

/**
 * Asks the cluster to stop a CANCELING task's job. The task becomes CANCELED when the reconciler sees
 * the job gone (or ended: the cancel was asked first, so it wins).
 *
 * With `orphanJobId`, the job is one that submission made but could not record (the task was
 * cancelled meanwhile): it is cancelled whatever the task's state, unless the task has since recorded
 * it as its own and still runs it. A failed scancel throws, and the queue tries again with backoff.
 */
export async function processCancel(
  taskId: string,
  ctx: ProcessorContext,
  cancels: Batcher<CancelRequest, void>,
  orphanJobId?: string,
): Promise<void> {
  const record = await ctx.store.get(taskId);
  // Run as their owners, jobs are cancelled as their owners (the gateway's account may not).
  const owner = (): CancelRequest['owner'] =>
    ctx.prepare.runAs && record
      ? { user: runAsUser(record), workDir: record.run?.workDir ?? taskDirOf(ctx.prepare.workRoot, taskId) }
      : undefined;
  if (orphanJobId) {
    if (record?.run?.jobId === orphanJobId && record.state !== 'CANCELING') return;
    await cancels.request({ jobId: orphanJobId, owner: owner() });
    ctx.logger.info({ taskId, jobId: orphanJobId }, 'cancel of a job never recorded sent to the cluster');
    return;
  }
  if (!record || record.state !== 'CANCELING' || !record.run?.jobId) return;
  await cancels.request({ jobId: record.run.jobId, owner: owner() });
  ctx.logger.info({ taskId, jobId: record.run.jobId }, 'cancel sent to the cluster');
}
