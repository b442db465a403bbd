import type { TesState } from '../tes/state.js';
import { executorsFinished, type ExecutorResult } from './executor-results.js';

/**
 * How a job's end becomes its task's TES state, for both launchers. What a launcher (Slurm, or the
 * local one) says about a job is in Slurm's terms, the local launcher reporting the same states, so
 * one table and one decision serve both: the job's phase (waiting, started, ended) for the
 * reconciler, and for an ended job the TES state, from the table, the executors' result files, the
 * job script's own error and whether the gateway was asked to cancel (finalize).
 */

export const SLURM_STATES = [
  'PENDING',
  'CONFIGURING',
  'RUNNING',
  'COMPLETING',
  'SUSPENDED',
  'STOPPED',
  'SIGNALING',
  'STAGE_OUT',
  'RESIZING',
  'REQUEUED',
  'REQUEUE_FED',
  'REQUEUE_HOLD',
  'RESV_DEL_HOLD',
  'SPECIAL_EXIT',
  'COMPLETED',
  'FAILED',
  'OUT_OF_MEMORY',
  'TIMEOUT',
  'CANCELLED',
  'NODE_FAIL',
  'BOOT_FAIL',
  'DEADLINE',
  'PREEMPTED',
  'REVOKED',
] as const;

export type SlurmState = (typeof SLURM_STATES)[number];

/** `code:signal` as sacct prints it. */
export interface JobExitCode {
  code: number;
  signal: number;
}

export interface JobStatus {
  jobId: string;
  state: SlurmState;
  /** The state exactly as the scheduler printed it, e.g. `CANCELLED by 0`. */
  rawState: string;
  /**
   * The job's name in accounting, where the launcher reports one: what tells a task's own job from
   * another that got the same id after the controller lost its state (sbatch-args.ts jobNameFor,
   * job-arrays.ts arrayJobName).
   */
  jobName?: string;
  exitCode: JobExitCode;
  /** Pending reason, or why the job ended. */
  reason?: string;
  node?: string;
  elapsedSeconds?: number;
  /** Epoch seconds. */
  startTime?: number;
  endTime?: number;
  cpuTimeSeconds?: number;
  maxRssBytes?: number;
}

export function parseSlurmState(raw: string): SlurmState | undefined {
  const head = raw.trim().split(/\s+/)[0] ?? '';
  const state = head.replace(/\+$/, '');
  return (SLURM_STATES as readonly string[]).includes(state) ? (state as SlurmState) : undefined;
}

/** Slurm's reason for a job's state, or undefined where it gives none (`None`, `(null)`, empty). */
export function meaningfulReason(raw: string | undefined): string | undefined {
  const reason = raw?.trim();
  return reason && reason !== 'None' && reason !== '(null)' ? reason : undefined;
}

/**
 * What can be done about a job Slurm holds, from its pending reason: a held job waits for someone,
 * however long its task waits. Undefined for a reason that passes by itself (Priority, Resources).
 */
export function heldAdvice(reason: string | undefined, jobId: string): string | undefined {
  if (!reason) return undefined;
  const release = `scontrol release ${jobId}`;
  if (/launch.?failed/i.test(reason)) {
    return (
      `its launch failed on the node and Slurm holds it: an administrator can release it (${release}) ` +
      'once the node is fixed, or cancel the task to give up'
    );
  }
  if (reason === 'JobHeldAdmin')
    return `held by an administrator: it starts once released (${release}), or cancel the task`;
  if (reason === 'JobHeldUser')
    return `held by the job's user: it starts once released (${release}), or cancel the task`;
  return undefined;
}

export function parseExitCode(raw: string): JobExitCode {
  const m = /^(\d+):(\d+)$/.exec(raw.trim());
  return m ? { code: Number(m[1]), signal: Number(m[2]) } : { code: 0, signal: 0 };
}

/** The shell's view of an exit: a signal N becomes 128 + N. */
export function effectiveExitCode(exit: JobExitCode): number {
  return exit.signal > 0 ? 128 + exit.signal : exit.code;
}

export function describeExit(exit: JobExitCode): string {
  return exit.signal > 0 ? `killed by signal ${exit.signal}` : `exit code ${exit.code}`;
}

/**
 * How a job's state in Slurm becomes the task's TES state: one table, one row per Slurm state
 * (each row pinned by a test in test/unit/job-end.test.ts). See `man sacct`, JOB STATE CODES.
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
 * | PREEMPTED, and requeued             | as the state the controller shows (slurm-states.ts): QUEUED    |
 * | PREEMPTED for good                  | slurm.preempted: PREEMPTED (default) or SYSTEM_ERROR           |
 * | gone (neither accounting nor the     | from the executors' exit_code files when they show the        |
 * | controller knows it, or its id now  | executors finished (COMPLETE or EXECUTOR_ERROR, as for        |
 * | names another job: vanishedJob)     | COMPLETED); else SYSTEM_ERROR: the task's outcome is unknown  |
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
  // Final only once the controller confirms it will not requeue the job (confirmPreempted, in
  // slurm/slurm-states.ts).
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
  const failed = results.find((r) => r.exitCode !== undefined && r.exitCode !== 0 && !r.ignored);
  if (status.rawState === VANISHED) {
    const gone =
      status.reason === REUSED
        ? `Slurm job ${status.jobId} is gone: its id now names another job, so the controller lost this one`
        : `Slurm job ${status.jobId} is gone: neither accounting nor the controller knows it any more ` +
          `(purged, or lost with the controller's state)`;
    if (!executorsFinished(results)) {
      return { state: 'SYSTEM_ERROR', systemLogs: [`${gone}; the task's outcome is unknown`] };
    }
    // The job script writes an executor's exit_code only once it has ended: the outcome is known.
    const note = `${gone}; the executors' exit codes show how the task ended`;
    const ignored = results
      .filter((r) => r.exitCode !== undefined && r.exitCode !== 0 && r.ignored)
      .map((r) => `executor ${r.index} exited ${r.exitCode}; ignored because ignore_error is set`);
    if (failed)
      return {
        state: 'EXECUTOR_ERROR',
        systemLogs: [note, ...ignored, `executor ${failed.index} exited ${failed.exitCode}`],
      };
    return { state: 'COMPLETE', systemLogs: [note, ...ignored] };
  }
  const row = SLURM_STATE_TABLE[status.state];
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

/**
 * The decision once the job script's own error is known. A `system-error` it left (a path it refused,
 * a runtime it could not find) makes the task SYSTEM_ERROR whatever the executors did, and explains a
 * failed job better than the job's end state does; a cancel still wins.
 */
export function withScriptError(
  decision: Decision,
  scriptError: string | undefined,
  canceling: boolean,
): Decision {
  if (!scriptError) return { state: decision.state, systemLogs: [...decision.systemLogs] };
  const keepJobLogs = canceling || decision.state !== 'SYSTEM_ERROR';
  return {
    state: canceling ? decision.state : 'SYSTEM_ERROR',
    systemLogs: [scriptError, ...(keepJobLogs ? decision.systemLogs : [])],
  };
}

/** The raw state of a job that vanished: no Slurm state, since Slurm no longer knows the job. */
const VANISHED = 'MISSING';

/** Why a job vanished when accounting shows its id on another job. */
const REUSED = 'the job id now names another job';

/**
 * The status of a job neither accounting nor the controller knows any more (the reconciler waits
 * out accounting's delay before it asks), or whose id accounting now shows on another job
 * (`idReused`: the controller lost its state and gave the id out again): it ended, and Slurm cannot
 * say how. It is an ended state, so the task is finalized; decideEndState takes the outcome from the
 * executors' exit codes when they all wrote one, and otherwise says the job vanished rather than
 * name a cause nobody saw.
 */
export function vanishedJob(jobId: string, idReused = false): JobStatus {
  return {
    jobId,
    state: 'NODE_FAIL',
    rawState: VANISHED,
    exitCode: { code: 0, signal: 0 },
    reason: idReused ? REUSED : 'neither accounting nor the controller knows the job any more',
  };
}
