/**
 * The TES task state machine: the only place that decides which state changes are legal.
 *
 * | from \ to     | QUEUED | INITIALIZING | RUNNING | COMPLETE | EXECUTOR_ERROR | SYSTEM_ERROR | CANCELING | CANCELED | PREEMPTED |
 * |---------------|--------|--------------|---------|----------|----------------|--------------|-----------|----------|-----------|
 * | QUEUED        |        | yes          | yes     | yes      | yes            | yes          | yes       | yes      | yes       |
 * | INITIALIZING  |        |              | yes     | yes      | yes            | yes          | yes       | yes      | yes       |
 * | RUNNING       |        |              |         | yes      | yes            | yes          | yes       |          | yes       |
 * | CANCELING     |        |              |         |          |                | yes          |           | yes      |           |
 * | terminal      |        |              |         |          |                |              |           |          |           |
 *
 * - QUEUED, INITIALIZING and RUNNING only move forward. A task is QUEUED from creation until its
 *   job starts on a node: while the gateway stages its inputs and submits it, and while the job
 *   waits in the scheduler's queue. It is INITIALIZING from the job's start until its first executor
 *   starts, then RUNNING. A job the scheduler puts back in its queue (a requeue, or a job seen
 *   pending after a start) does not move its task back: the reason is written to the system logs.
 * - A task that is not yet on the cluster is CANCELED at once; a task that may have a Slurm job goes
 *   through CANCELING until Slurm confirms the job is gone. RUNNING never jumps to CANCELED directly.
 *   (INITIALIZING -> CANCELED remains for tasks an older gateway left INITIALIZING while submitting.)
 * - CANCELING ends as CANCELED, or SYSTEM_ERROR when the job cannot be cancelled at all.
 * - Terminal states (COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR, CANCELED, PREEMPTED) never change.
 */

export const TES_STATES = [
  'UNKNOWN',
  'QUEUED',
  'INITIALIZING',
  'RUNNING',
  'PAUSED',
  'COMPLETE',
  'EXECUTOR_ERROR',
  'SYSTEM_ERROR',
  'CANCELED',
  'PREEMPTED',
  'CANCELING',
] as const;

export type TesState = (typeof TES_STATES)[number];

export const TERMINAL_STATES: readonly TesState[] = [
  'COMPLETE',
  'EXECUTOR_ERROR',
  'SYSTEM_ERROR',
  'CANCELED',
  'PREEMPTED',
];

/** States in which the task may have (or be about to get) a job on the cluster. */
export const ACTIVE_STATES: readonly TesState[] = ['QUEUED', 'INITIALIZING', 'RUNNING', 'CANCELING'];

const FINISHES: TesState[] = ['COMPLETE', 'EXECUTOR_ERROR', 'SYSTEM_ERROR', 'PREEMPTED'];

const LEGAL: Readonly<Partial<Record<TesState, readonly TesState[]>>> = {
  QUEUED: ['INITIALIZING', 'RUNNING', ...FINISHES, 'CANCELING', 'CANCELED'],
  INITIALIZING: ['RUNNING', ...FINISHES, 'CANCELING', 'CANCELED'],
  RUNNING: [...FINISHES, 'CANCELING'],
  CANCELING: ['CANCELED', 'SYSTEM_ERROR'],
};

export function isTerminal(state: TesState): boolean {
  return TERMINAL_STATES.includes(state);
}

export function isTesState(value: string): value is TesState {
  return (TES_STATES as readonly string[]).includes(value);
}

export function canTransition(from: TesState, to: TesState): boolean {
  return LEGAL[from]?.includes(to) ?? false;
}

/** Every state `to` may be reached from: handed to the store so Redis checks it atomically. */
export function legalSources(to: TesState): TesState[] {
  return TES_STATES.filter((from) => canTransition(from, to));
}

export class IllegalTransitionError extends Error {
  constructor(
    readonly taskId: string,
    readonly from: TesState,
    readonly to: TesState,
  ) {
    super(`task ${taskId} cannot move from ${from} to ${to}`);
    this.name = 'IllegalTransitionError';
  }
}
