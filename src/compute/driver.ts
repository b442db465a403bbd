import type { JobStatus } from './job-end.js';
import type { HandoverEntry } from '../run-as/handover-archive.js';

/**
 * A task directory that the helper makes as the task's owner: its rendered files and layout, and the
 * stage in the ledger where staging wrote its inputs, when it wrote any.
 */
export interface Handover {
  entries: readonly HandoverEntry[];
  stageDir?: string | undefined;
}

/**
 * What the gateway needs from a launcher. Two exist: `slurm` (sbatch/sacct/squeue/scancel) and
 * `local` (the same job script as a child process on the gateway host).
 */
export interface LaunchRequest {
  taskId: string;
  workDir: string;
  /** Where the gateway keeps its own files of the task (tes/task-directory.ts: the task directory, or its ledger). */
  ledgerDir: string;
  /** The task's owner, when tasks run as their owners (identity.runAs user): the job is theirs. */
  user?: string | undefined;
  /**
   * Then: the task directory as prepared, which the launcher hands to the helper (`prepare`, one call
   * for a burst) before it submits.
   */
  handover?: Handover | undefined;
  /** sbatch arguments (the local launcher ignores them). */
  args: readonly string[];
  /** When the task was created: a job for it cannot be older. */
  since: Date;
  /**
   * The attempt's submit marker (compute/submit-marker.ts), which the launcher writes into the ledger
   * just before it submits: in the same write as the array line when the task goes in an array.
   */
  marker: string;
  /**
   * An earlier attempt got as far as submitting (its submit marker was there): it may have left
   * files of its own, such as the command of a job that went alone.
   */
  retried?: boolean | undefined;
}

/** A job to cancel, and whose it is when tasks run as their owners. */
export interface CancelRequest {
  jobId: string;
  /** The task's owner and directory (identity.runAs user): the cancel goes through the helper as them. */
  owner?: { user: string; workDir: string } | undefined;
}

/** A job a launcher made, or found made, for a task. */
export interface SubmittedJob {
  jobId: string;
  /**
   * Its name in the scheduler's accounting, where the launcher names jobs: the task's own job name, or
   * for an array element its array's. Kept with the task's run, so that the reconciler tells the task's
   * job from a later one given the same id without reading the task's files.
   */
  jobName?: string | undefined;
}

export interface PollResult {
  jobs: Map<string, JobStatus>;
  /** Records that could not be read (each fails only itself). */
  errors: string[];
}

export interface ComputeDriver {
  readonly kind: 'slurm' | 'local';
  readonly supportedBackendParameters: readonly string[];
  /**
   * The job already submitted for a task, if any: what makes submission idempotent. `user`: the
   * task's owner, when tasks run as their owners (their jobs are searched).
   */
  findJob(taskId: string, since: Date, ledgerDir: string, user?: string): Promise<SubmittedJob | undefined>;
  /** Submits and returns the job; throws SubmissionRejectedError when retrying cannot help. */
  submit(request: LaunchRequest): Promise<SubmittedJob>;
  /** One batched status query for all the given jobs. A job absent from the result is unknown yet. */
  poll(jobIds: readonly string[]): Promise<PollResult>;
  /** Peak memory (bytes) of ended jobs, where the launcher knows it. */
  usage(jobIds: readonly string[]): Promise<Map<string, number>>;
  /** Which of these jobs the scheduler still knows (to confirm that a job missing from poll is gone). */
  known(jobIds: readonly string[]): Promise<Set<string>>;
  /** Cancels jobs; cancelling a job that already ended is not an error. */
  cancel(jobs: readonly CancelRequest[]): Promise<void>;
  close(): Promise<void>;
}
