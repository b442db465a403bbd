import type { JobStatus } from '../compute/job-end.js';

/** The gateway's queues, each with its typed payload. One BullMQ queue per kind of work. */
export const JOB_KINDS = ['submit', 'cancel', 'finalize'] as const;
export type JobKind = (typeof JOB_KINDS)[number];

export interface JobPayloads {
  /** Stage, render and hand the task to the cluster. */
  submit: { taskId: string };
  /**
   * Ask the cluster to stop the task's job; or, with `jobId`, that job: one made for a task that was
   * cancelled (or submitted by another worker) during its submission, which Redis never recorded.
   */
  cancel: { taskId: string; jobId?: string | undefined };
  /** Read the ended job's results, write the task's logs and its terminal state. */
  finalize: { taskId: string; status: JobStatus };
}

/** What hands work to the queues; the HTTP handlers, the processors and the reconciler see only this. */
export interface Enqueuer {
  /** Queues the work; true when it replaced a finished job of the same id (`replaceFinished`). */
  enqueue<K extends JobKind>(kind: K, payload: JobPayloads[K], options?: EnqueueOptions): Promise<boolean>;
}

export interface EnqueueOptions {
  /**
   * Replace a job of the same id that completed or failed (kept a while for dedupe) with a new one;
   * one waiting or running is still left alone. For work found undone after its job finished.
   */
  replaceFinished?: boolean | undefined;
}

/** BullMQ dedupes on job id: the same work for the same task is never queued twice at once. */
export function jobIdFor(kind: JobKind, taskId: string): string {
  return `${kind}-${taskId}`;
}
