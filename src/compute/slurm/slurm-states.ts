import type { TesState } from '../../tes/state.js';
import {
  describeExit,
  meaningfulReason,
  parseSlurmState,
  type JobStatus,
  type SlurmState,
} from '../job-status.js';
import type { ExecutorResult } from '../executor-results.js';
import { expandJobId } from './job-arrays.js';

/**
 * How a job's state in Slurm becomes the task's TES state: one table, one row per Slurm state
 * (each row pinned by a test in test/unit/slurm-states.test.ts). See `man sacct`, JOB STATE CODES.
 *
 * | Slurm state                         | TES state                                                      |
 * |-------------------------------------|----------------------------------------------------------------|
 * | PENDING, REQUEUED, REQUEUE_FED,     | QUEUED; Slurm's pending reason goes to the system logs when    |
 * | REQUEUE_HOLD, RESV_DEL_HOLD,        | there is one and it changes. A task that had started goes back |
 * | SPECIAL_EXIT                        | to QUEUED: a requeue ("Slurm requeued job N: ..."), the one   |
 * |                                     | backward move (tes/state.ts, reconciler)                       |
 * | CONFIGURING, RUNNING, COMPLETING,.. | INITIALIZING until the first executor starts, then RUNNING    |
 * | COMPLETED                           | COMPLETE, or EXECUTOR_ERROR if an executor exited non-zero    |
 * | FAILED                              | EXECUTOR_ERROR if an executor failed, else SYSTEM_ERROR       |
 * | OUT_OF_MEMORY, TIMEOUT              | EXECUTOR_ERROR with the reason                                 |
 * | NODE_FAIL, BOOT_FAIL, DEADLINE,     | SYSTEM_ERROR with the reason                                   |
 * | REVOKED, CANCELLED (not by us)      |                                                                |
 * | PREEMPTED, and requeued             | as the state the controller shows (confirmPreempted): QUEUED   |
 * | PREEMPTED for good                  | slurm.preempted: PREEMPTED (default) or SYSTEM_ERROR           |
 * | any ended state while CANCELING     | CANCELED                                                       |
 */

type Row =
  | { phase: 'waiting' }
  | { phase: 'started' }
  | { phase: 'ended'; rule: 'by-executors' | 'executor-or-system' | 'preempted' }
  | { phase: 'ended'; rule: 'fixed'; tes: TesState; reason: string };

export const SLURM_STATE_TABLE: Readonly<Record<SlurmState, Row>> = {
  PENDING: { phase: 'waiting' },
  REQUEUED: { phase: 'waiting' },
  REQUEUE_FED: { phase: 'waiting' },
  REQUEUE_HOLD: { phase: 'waiting' },
  RESV_DEL_HOLD: { phase: 'waiting' },
  SPECIAL_EXIT: { phase: 'waiting' },
  CONFIGURING: { phase: 'started' },
  RUNNING: { phase: 'started' },
  COMPLETING: { phase: 'started' },
  SUSPENDED: { phase: 'started' },
  STOPPED: { phase: 'started' },
  SIGNALING: { phase: 'started' },
  STAGE_OUT: { phase: 'started' },
  RESIZING: { phase: 'started' },
  COMPLETED: { phase: 'ended', rule: 'by-executors' },
  FAILED: { phase: 'ended', rule: 'executor-or-system' },
  OUT_OF_MEMORY: {
    phase: 'ended',
    rule: 'fixed',
    tes: 'EXECUTOR_ERROR',
    reason: 'the task ran out of memory (Slurm OUT_OF_MEMORY); ask for more with resources.ram_gb',
  },
  TIMEOUT: {
    phase: 'ended',
    rule: 'fixed',
    tes: 'EXECUTOR_ERROR',
    reason:
      'the task reached its time limit (Slurm TIMEOUT); ask for more time with backend_parameters.time_limit',
  },
  NODE_FAIL: {
    phase: 'ended',
    rule: 'fixed',
    tes: 'SYSTEM_ERROR',
    reason: 'the node running the task failed (Slurm NODE_FAIL); resubmit the task',
  },
  BOOT_FAIL: {
    phase: 'ended',
    rule: 'fixed',
    tes: 'SYSTEM_ERROR',
    reason: 'the node for the task failed to boot (Slurm BOOT_FAIL); resubmit the task',
  },
  DEADLINE: {
    phase: 'ended',
    rule: 'fixed',
    tes: 'SYSTEM_ERROR',
    reason: 'the job passed its deadline before it could run (Slurm DEADLINE)',
  },
  REVOKED: {
    phase: 'ended',
    rule: 'fixed',
    tes: 'SYSTEM_ERROR',
    reason: 'the job was revoked by a federated cluster (Slurm REVOKED)',
  },
  CANCELLED: {
    phase: 'ended',
    rule: 'fixed',
    tes: 'SYSTEM_ERROR',
    reason: 'the Slurm job was cancelled outside the gateway',
  },
  // Final only once the controller confirms it will not requeue the job (see confirmPreempted).
  PREEMPTED: { phase: 'ended', rule: 'preempted' },
};

export type JobPhase = Row['phase'];

export function phaseOf(state: SlurmState): JobPhase {
  return SLURM_STATE_TABLE[state].phase;
}

export interface Decision {
  state: TesState;
  systemLogs: string[];
}

/**
 * What a final PREEMPTED becomes. Sprocket resubmits a PREEMPTED task; Nextflow never finishes one,
 * Cromwell takes it as still running, Snakemake drops it, and py-tes 0.4 and pydantic-tes cannot
 * parse the state: sites serving those pick SYSTEM_ERROR (docs/deployment.md).
 */
export interface EndStatePolicy {
  preempted: 'PREEMPTED' | 'SYSTEM_ERROR';
}

export const DEFAULT_END_STATES: EndStatePolicy = { preempted: 'PREEMPTED' };

/** squeue's view of given jobs, one `id|STATE|reason` line each (`--jobs=` is added per call). */
export const SQUEUE_STATE_ARGS: readonly string[] = ['--noheader', '--states=all', '--format=%i|%T|%r'];

/**
 * Jobs accounting shows PREEMPTED, as the controller (squeue, SQUEUE_STATE_ARGS) now shows them:
 * a job preempted and requeued stays PREEMPTED in accounting for a few seconds while the controller
 * already has it completing, then pending again. Returned are the jobs that are not over: those the
 * controller holds waiting (the reconciler then requeues their tasks) or still completing (undecided:
 * the task stays where it is). A job the controller shows PREEMPTED, or no longer lists, is
 * preempted for good and keeps its accounting record.
 */
export function confirmPreempted(preempted: readonly JobStatus[], squeueText: string): JobStatus[] {
  const byId = new Map(preempted.map((s) => [s.jobId, s]));
  const out: JobStatus[] = [];
  for (const line of squeueText.split('\n')) {
    const [id, raw, reason] = line.trim().split('|');
    if (!id || !raw) continue;
    const state = parseSlurmState(raw);
    if (!state || phaseOf(state) === 'ended') continue;
    for (const jobId of expandJobId(id)) {
      const earlier = byId.get(jobId);
      if (!earlier) continue;
      const why = meaningfulReason(reason);
      out.push({
        jobId,
        state,
        rawState: raw.trim(),
        exitCode: earlier.exitCode,
        reason: why ? `preempted, ${why}` : 'preempted',
      });
    }
  }
  return out;
}

/**
 * The TES state of a task whose job has ended, from the table, the executors' own result files and
 * whether the gateway was asked to cancel it.
 */
export function decideEndState(
  status: JobStatus,
  results: readonly ExecutorResult[],
  canceling: boolean,
  policy: EndStatePolicy = DEFAULT_END_STATES,
): Decision {
  const where = `Slurm job ${status.jobId} ended ${status.rawState} (${describeExit(status.exitCode)})`;
  if (canceling) return { state: 'CANCELED', systemLogs: [`${where} after the task was cancelled`] };
  const row = SLURM_STATE_TABLE[status.state];
  const failed = results.find((r) => r.exitCode !== undefined && r.exitCode !== 0 && !r.ignored);
  const failedIgnored = results.filter((r) => r.exitCode !== undefined && r.exitCode !== 0 && r.ignored);
  const notes = failedIgnored.map(
    (r) => `executor ${r.index} exited ${r.exitCode}; ignored because ignore_error is set`,
  );
  const exitNote = (r: ExecutorResult): string =>
    `executor ${r.index} exited ${r.exitCode}` +
    (r.exitCode === 255
      ? ' (255 is also what the container runtime returns when it cannot start the container: see its stderr)'
      : '');
  if (row.phase !== 'ended') return { state: 'SYSTEM_ERROR', systemLogs: [`${where}: not an end state`] };
  switch (row.rule) {
    case 'by-executors':
      if (failed) return { state: 'EXECUTOR_ERROR', systemLogs: [...notes, exitNote(failed)] };
      if (results.some((r) => r.exitCode === undefined)) {
        return {
          state: 'SYSTEM_ERROR',
          systemLogs: [...notes, `${where}, but not every executor recorded an exit code`],
        };
      }
      return { state: 'COMPLETE', systemLogs: notes };
    case 'executor-or-system':
      if (failed) return { state: 'EXECUTOR_ERROR', systemLogs: [...notes, exitNote(failed)] };
      return {
        state: 'SYSTEM_ERROR',
        systemLogs: [
          ...notes,
          `${where} before ${results.some((r) => r.started) ? 'an executor recorded its exit code' : 'any executor started'}`,
        ],
      };
    case 'preempted': {
      const state = policy.preempted;
      const advice = state === 'SYSTEM_ERROR' ? '; resubmit the task' : '';
      return {
        state,
        systemLogs: [...notes, `${where}: Slurm preempted the job and did not requeue it${advice}`],
      };
    }
    case 'fixed': {
      const by = /^CANCELLED by (\d+)/.exec(status.rawState);
      const reason = by ? `${row.reason} (by uid ${by[1]})` : row.reason;
      return { state: row.tes, systemLogs: [...notes, `${where}: ${reason}`] };
    }
  }
}
