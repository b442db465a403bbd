/**
 * What a launcher (Slurm, or the local one) says about a job, in Slurm's terms: the local launcher
 * reports the same states so one decision table serves both.
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
