import type { Batcher } from '../../compute/batcher.js';
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
  cancels: Batcher<string, void>,
  orphanJobId?: string,
): Promise<void> {
  const record = await ctx.store.get(taskId);
  if (orphanJobId) {
    if (record?.run?.jobId === orphanJobId && record.state !== 'CANCELING') return;
    await cancels.request(orphanJobId);
    ctx.logger.info({ taskId, jobId: orphanJobId }, 'cancel of a job never recorded sent to the cluster');
    return;
  }
  if (!record || record.state !== 'CANCELING' || !record.run?.jobId) return;
  await cancels.request(record.run.jobId);
  ctx.logger.info({ taskId, jobId: record.run.jobId }, 'cancel sent to the cluster');
}
