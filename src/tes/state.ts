import { PermanentError } from '../errors.js';

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
 * and, only on the `requeue` path: INITIALIZING -> QUEUED, RUNNING -> QUEUED.
 *
 * - QUEUED, INITIALIZING and RUNNING move forward. A task is QUEUED from creation until its job
 *   starts on a node: while the gateway stages its inputs and submits it, and while the job waits in
 *   the scheduler's queue. It is INITIALIZING from the job's start until its first executor starts,
 *   then RUNNING.
 * - The one move back is a requeue: a job that had started and that Slurm puts back in its queue
 *   (REQUEUED, REQUEUE_HOLD, PENDING after a start, PREEMPTED and requeued) makes its task QUEUED
 *   again, as clients expect of a task that waits for the cluster. Only the reconciler takes it,
 *   by asking for the `requeue` path, and writes why in the system logs; no other change can.
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

/** The requeue path: a started task whose job Slurm put back in its queue waits again. */
const REQUEUE: Readonly<Partial<Record<TesState, readonly TesState[]>>> = {
  INITIALIZING: ['QUEUED'],
  RUNNING: ['QUEUED'],
};

/** `forward`: every change of the table above; `requeue`: only the reconciler's move back to QUEUED. */
export type TransitionPath = 'forward' | 'requeue';

export function canTransition(from: TesState, to: TesState, path: TransitionPath = 'forward'): boolean {
  return (path === 'requeue' ? REQUEUE : LEGAL)[from]?.includes(to) ?? false;
}

/** Every state `to` may be reached from: handed to the store so Redis checks it atomically. */
export function legalSources(to: TesState, path: TransitionPath = 'forward'): TesState[] {
  return TES_STATES.filter((from) => canTransition(from, to, path));
}

/**
 * The sources a change of a task to `to` may start from, for the store to check atomically. A caller
 * may narrow the legal sources (only from CANCELING, only from the state it read) but never widen
 * them. Naming `to` itself is a write that keeps the state. Naming a state that can never reach `to`
 * on this path is a mistake in the caller, not a race: it throws instead of quietly never matching.
 */
export function sourcesFor(
  taskId: string,
  to: TesState,
  from: readonly TesState[] | undefined,
  path: TransitionPath = 'forward',
): TesState[] {
  if (from === undefined) return legalSources(to, path);
  const wrong = from.find((s) => s !== to && !canTransition(s, to, path));
  if (wrong !== undefined) throw new IllegalTransitionError(taskId, wrong, to, path);
  return from.filter((s) => canTransition(s, to, path));
}

/** A change the state machine never allows was asked for: a mistake in the code, never retried. */
export class IllegalTransitionError extends PermanentError {
  constructor(
    readonly taskId: string,
    readonly from: TesState,
    readonly to: TesState,
    readonly path: TransitionPath = 'forward',
  ) {
    super(
      `task ${taskId} cannot move from ${from} to ${to}${path === 'requeue' ? ' on the requeue path' : ''}`,
    );
    this.name = 'IllegalTransitionError';
  }
}
