import type { Batcher } from '../../compute/batcher.js';
import type { ProcessorContext } from './context.js';

/**
 * Asks the cluster to stop a CANCELING task's job. The task becomes CANCELED when the reconciler sees
 * the job gone (or ended: the cancel was asked first, so it wins).
 */
export async function processCancel(
  taskId: string,
  ctx: ProcessorContext,
  cancels: Batcher<string, void>,
): Promise<void> {
  const record = await ctx.store.get(taskId);
  if (!record || record.state !== 'CANCELING' || !record.run?.jobId) return;
  await cancels.request(record.run.jobId);
  ctx.logger.info({ taskId, jobId: record.run.jobId }, 'cancel sent to the cluster');
}
