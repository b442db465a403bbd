/**
 * One error class per meaning. The HTTP status each one gets is decided in api/error-handler.ts and
 * nowhere else; queue processors turn the permanent ones (PermanentError) into BullMQ's
 * UnrecoverableError.
 */

/**
 * The base of every error a retry cannot fix: a submission that meets one ends the task at once
 * instead of trying again. An error whose permanence is known only when it happens (a pull that may
 * or may not work later) says which in `permanent`.
 */
export class PermanentError extends Error {
  readonly permanent: boolean;

  constructor(message: string, options: { cause?: unknown; permanent?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.permanent = options.permanent ?? true;
    this.name = 'PermanentError';
  }
}

/** Whether retrying the work that threw `err` is pointless. */
export function isPermanent(err: unknown): boolean {
  return err instanceof PermanentError && err.permanent;
}

export interface FieldProblem {
  /** Where in the request: `executors[0].command`, or `body` for the whole of it. */
  path: string;
  message: string;
}

/** The request is understood but breaks the spec or a rule of this service. */
export class ValidationError extends Error {
  constructor(readonly problems: FieldProblem[]) {
    super(problems.map((p) => `${p.path}: ${p.message}`).join('; '));
    this.name = 'ValidationError';
  }
}

/** The request target (path and query) is longer than the service reads. */
export class RequestTargetTooLongError extends Error {
  constructor(
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(`the request target is ${bytes} bytes; at most ${limit} are accepted`);
    this.name = 'RequestTargetTooLongError';
  }
}

export class TaskNotFoundError extends Error {
  constructor(readonly taskId: string) {
    super(`task ${taskId} does not exist`);
    this.name = 'TaskNotFoundError';
  }
}

/**
 * The request carries no credentials this service accepts. `challenges` are the WWW-Authenticate
 * values to answer with; `reason` says what was wrong, without echoing the credentials.
 */
export class UnauthorizedError extends Error {
  constructor(
    readonly reason: string,
    readonly challenges: readonly string[],
  ) {
    super(`authentication required: ${reason}`);
    this.name = 'UnauthorizedError';
  }
}

/** The identity provider cannot be reached, so valid credentials cannot be told from bad ones. */
export class IdentityUnavailableError extends Error {
  constructor(reason: string) {
    super(`${reason}; retry later`);
    this.name = 'IdentityUnavailableError';
  }
}

/** The service's own queue is full: the client should retry later. */
export class BacklogFullError extends Error {
  constructor(
    readonly backlog: number,
    readonly retryAfterSeconds: number,
  ) {
    super(`the gateway already holds ${backlog} queued tasks, its configured limit; retry later`);
    this.name = 'BacklogFullError';
  }
}

/** Redis (the source of truth) cannot be reached: nothing can be read or written safely. */
export class StoreUnavailableError extends Error {
  constructor(cause: unknown) {
    super(`the task store is unavailable: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'StoreUnavailableError';
  }
}

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`invalid configuration in ${source}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** An external program failed; carries what it printed on stderr. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly timedOut: boolean,
    what: string,
  ) {
    const how = timedOut ? 'timed out' : exitCode === undefined ? 'could not run' : `exit ${exitCode}`;
    const detail = stderr.trim() ? `: ${stderr.trim()}` : '';
    super(`${what} with ${command} (${how})${detail}`);
    this.name = 'CommandError';
  }
}

/** The cluster refused the job for a reason a retry will not fix (bad partition, impossible resources). */
export class SubmissionRejectedError extends PermanentError {
  constructor(message: string) {
    super(message);
    this.name = 'SubmissionRejectedError';
  }
}
