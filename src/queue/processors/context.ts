import type { ComputeDriver } from '../../compute/driver.js';
import type { PrepareDeps } from './prepare-job.js';
import type { EndStatePolicy } from '../../compute/job-end.js';
import type { Logger } from '../../logger.js';
import type { TaskLease } from '../../store/task-lease.js';
import type { TaskStore } from '../../store/task-store.js';
import type { Enqueuer } from '../jobs.js';
import type { OutputDelivery } from '../../staging/deliver-outputs.js';
import type { FinalizeMetrics } from '../../observability/metrics.js';

/** What every queue processor works with. */
export interface ProcessorContext {
  store: TaskStore;
  driver: ComputeDriver;
  queues: Enqueuer;
  prepare: PrepareDeps;
  outputs: OutputDelivery;
  logger: Logger;
  /** Bytes of each executor's stdout/stderr kept in the FULL view. */
  tailBytes: number;
  /** Bytes of all executors' stdout/stderr tails of one task together. */
  taskLogMaxBytes: number;
  /** What a final PREEMPTED becomes (slurm.preempted); PREEMPTED when unset. */
  endStates?: EndStatePolicy | undefined;
  /**
   * The lease on one kind of work on one task (store/task-lease.ts): only its holder submits, or
   * finalizes, the task. The gateway always gives one; without it, two workers could submit one task
   * at once, or deliver its outputs twice.
   */
  taskLease?: ((work: 'submit' | 'finalize', taskId: string) => TaskLease) | undefined;
  /** The lag from a job's end to its task's terminal state. */
  metrics?: FinalizeMetrics | undefined;
}

/** Which attempt this is, so a processor can tell a retry from the last try. */
export interface Attempt {
  number: number;
  of: number;
}
