/**
 * The exit codes of `tes-gateway task ...`, the one place that says them.
 *
 * | code | meaning                                                                                   |
 * |------|-------------------------------------------------------------------------------------------|
 * | 0    | done; for `wait` (and `logs --follow`): every task ended COMPLETE                         |
 * | 1    | a task ended EXECUTOR_ERROR                                                               |
 * | 2    | a task ended SYSTEM_ERROR                                                                 |
 * | 3    | a task ended CANCELED or PREEMPTED                                                        |
 * | 4    | the server refused or failed a request (an HTTP error status), or its answer was not TES |
 * | 5    | the server could not be reached (connection refused, name unknown, no answer in time)     |
 * | 6    | `wait --timeout` ran out before every task had ended                                      |
 * | 64   | usage: an unknown option, a missing argument, a task file that cannot be read or parsed   |
 * | 70   | the command itself failed unexpectedly (a bug: the message carries its stack)             |
 *
 * With several tasks, `wait` exits with the largest of their codes, so one failure among many shows.
 */
export const EXIT_OK = 0;
export const EXIT_EXECUTOR_ERROR = 1;
export const EXIT_SYSTEM_ERROR = 2;
export const EXIT_CANCELED = 3;
export const EXIT_SERVER_ERROR = 4;
export const EXIT_UNREACHABLE = 5;
export const EXIT_TIMEOUT = 6;
export const EXIT_USAGE = 64;
export const EXIT_INTERNAL = 70;

/** The TES states in which a task never changes again. */
export const FINAL_STATES = ['COMPLETE', 'EXECUTOR_ERROR', 'SYSTEM_ERROR', 'CANCELED', 'PREEMPTED'] as const;

export function isFinalState(state: string): boolean {
  return (FINAL_STATES as readonly string[]).includes(state);
}

/** The exit code of a task that ended in `state`; undefined while it may still change. */
export function exitCodeOfState(state: string): number | undefined {
  switch (state) {
    case 'COMPLETE':
      return EXIT_OK;
    case 'EXECUTOR_ERROR':
      return EXIT_EXECUTOR_ERROR;
    case 'SYSTEM_ERROR':
      return EXIT_SYSTEM_ERROR;
    case 'CANCELED':
    case 'PREEMPTED':
      return EXIT_CANCELED;
    default:
      return undefined;
  }
}
