import { execa, type Options } from 'execa';
import pLimit, { type LimitFunction } from 'p-limit';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { posix } from 'node:path';
import { CommandError, PermanentError } from '../errors.js';
import { HANDOVER_PREFIX, LEDGER_PART } from '../tes/task-directory.js';
import { writeHandoverArchive, type HandoverEntry, type HandoverTask } from './handover-archive.js';

/**
 * The only place that acts as a task's owner: `sudo -n -u <user> <helper> <verb> <task dir> ...`, the
 * root-owned helper (libexec/tes-gateway-helper) checking the user, the directory and every sbatch
 * option itself. Every call has a timeout and keeps the helper's stderr for the error. What each verb
 * does, and what the helper refuses, is in the helper and in docs/security.md.
 */
export type HelperVerb = 'prepare' | 'submit' | 'submit-array' | 'cancel' | 'finish' | 'remove';

/**
 * A task directory to be, `<work root>/<task id>`, and what it will hold: the files and layout
 * prepared in memory, and the task's stage in its ledger (`<ledgers>/<task id>/stage`) when staging
 * wrote inputs there.
 */
export interface StagedTask {
  taskDir: string;
  /** The task's ledger, `<ledgers>/<task id>`. */
  ledgerDir: string;
  entries: readonly HandoverEntry[];
  stageDir?: string | undefined;
}

export interface UserHelperOptions {
  /** The installed helper, as the sudoers rule names it. */
  path: string;
  sudo: string;
  timeoutMs: number;
  maxConcurrentCalls: number;
}

/** The helper's exit code when it refuses a request (a user, a directory, an sbatch option). */
export const HELPER_REFUSED = 77;

/** The helper, or sudo before it, refused: the same request will be refused again. */
export class HelperRefusedError extends PermanentError {
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'HelperRefusedError';
  }
}

/** What sudo prints when it will not run the helper as this user; retrying does not change it. */
const SUDO_REFUSED =
  /^sudo: (unknown user|a password is required|a terminal is required|sorry, you are not allowed|you are not allowed)|is not allowed to execute|is not in the sudoers file|no passwd entry/im;

export class UserHelper {
  private readonly limiter: LimitFunction;
  readonly calls: Record<HelperVerb, number> = {
    prepare: 0,
    submit: 0,
    'submit-array': 0,
    cancel: 0,
    finish: 0,
    remove: 0,
  };

  constructor(private readonly options: UserHelperOptions) {
    this.limiter = pLimit(options.maxConcurrentCalls);
  }

  /**
   * Hands a prepared task directory to the user and submits its job, in one call (the helper's
   * `submit --prepare`); gives sbatch's output.
   */
  async submit(user: string, task: StagedTask): Promise<string> {
    return this.runWithArchive(
      user,
      'submit',
      ['--prepare', task.taskDir],
      [task],
      `hand over and submit the job of ${task.taskDir} as ${user}`,
    );
  }

  /**
   * Hands prepared task directories to the user and submits them as one job array of the user's, in
   * one call (`submit-array --prepare`); gives sbatch's output.
   */
  async submitArray(user: string, batchId: string, tasks: readonly StagedTask[]): Promise<string> {
    return this.runWithArchive(
      user,
      'submit-array',
      ['--prepare', batchId, ...tasks.map((t) => t.taskDir)],
      tasks,
      `hand over and submit ${tasks.length} tasks as array ${batchId} as ${user}`,
    );
  }

  async cancel(user: string, taskDir: string, jobId: string): Promise<void> {
    await this.run(user, 'cancel', [taskDir, jobId], `cancel job ${jobId} as ${user}`);
  }

  async remove(user: string, taskDir: string): Promise<void> {
    await this.run(user, 'remove', [taskDir], `remove ${taskDir} as ${user}`);
  }

  /**
   * Runs `finish` (the user side, src/run-as/user-side.ts) with `request` on its stdin, and hands its
   * stdout to `receive` as it comes.
   */
  async finish<T>(
    user: string,
    taskDir: string,
    request: unknown,
    receive: (stdout: NodeJS.ReadableStream) => Promise<T>,
  ): Promise<T> {
    return this.limiter(async () => {
      this.calls.finish++;
      const sub = execa(this.options.sudo, this.argv(user, 'finish', [taskDir]), {
        ...this.execOptions(),
        input: JSON.stringify(request),
        buffer: { stdout: false, stderr: true },
      });
      // stdout is a pipe (execa's default): never null here.
      const stdout = sub.stdout!;
      let received: T | undefined;
      let receiveError: unknown;
      const receiving = receive(stdout).then(
        (r) => {
          received = r;
        },
        (err: unknown) => {
          receiveError = err;
          stdout.resume();
        },
      );
      const [result] = await Promise.all([sub, receiving]);
      this.check(result, user, 'finish', [taskDir], `read the results of ${taskDir} as ${user}`);
      if (receiveError !== undefined) {
        throw receiveError instanceof Error
          ? receiveError
          : new Error(`the answer of finish for ${taskDir} could not be read`, { cause: receiveError });
      }
      return received as T;
    });
  }

  /**
   * Runs `verb` with the prepared task directories on the helper's stdin, as an archive of one folder
   * per task named by its task id (run-as/handover-archive.ts), which the helper unpacks into each
   * `taskDir`, `<work root>/<task id>`, before the verb's own work.
   *
   * The archive is written to a file in the ledgers (the gateway's own, mode 0700) and that file is
   * the helper's stdin: the bytes go from disk to the helper without passing through this process,
   * whose event loop, busy with a burst, would otherwise pace the helper's unpacking.
   */
  private async runWithArchive(
    user: string,
    verb: HelperVerb,
    args: readonly string[],
    tasks: readonly StagedTask[],
    what: string,
  ): Promise<string> {
    const ledgers = posix.dirname(tasks[0]!.ledgerDir);
    const members: HandoverTask[] = tasks.map(({ taskDir, ledgerDir, stageDir, entries }) => {
      const taskId = posix.basename(taskDir);
      if (ledgerDir !== posix.join(ledgers, taskId)) {
        throw new Error(`${ledgerDir} is not the ledger of ${taskDir} in ${ledgers}`);
      }
      if (stageDir !== undefined && stageDir !== posix.join(ledgerDir, LEDGER_PART.stage)) {
        throw new Error(`${stageDir} is not the stage of ${taskDir} in ${ledgers}`);
      }
      return { taskId, entries, stageDir };
    });
    return this.limiter(async () => {
      this.calls[verb]++;
      // Not a task id: the ledgers' walks pass it by.
      const archive = posix.join(ledgers, `${HANDOVER_PREFIX}${randomBytes(8).toString('hex')}.tar`);
      try {
        try {
          await writeHandoverArchive(archive, members);
        } catch (err) {
          throw new Error(
            `failed to write the archive of the prepared task directories in ${ledgers}: ${(err as Error).message}`,
            { cause: err },
          );
        }
        const result = await execa(this.options.sudo, this.argv(user, verb, args), {
          ...this.execOptions(),
          stdin: { file: archive },
        });
        this.check(result, user, verb, args, what);
        return String(result.stdout);
      } finally {
        await rm(archive, { force: true });
      }
    });
  }

  private async run(user: string, verb: HelperVerb, args: readonly string[], what: string): Promise<string> {
    return this.limiter(async () => {
      this.calls[verb]++;
      const result = await execa(this.options.sudo, this.argv(user, verb, args), {
        ...this.execOptions(),
        stdin: 'ignore',
      });
      this.check(result, user, verb, args, what);
      return String(result.stdout);
    });
  }

  private argv(user: string, verb: HelperVerb, args: readonly string[]): string[] {
    return ['-n', '-u', user, '--', this.options.path, verb, ...args];
  }

  private execOptions(): Options {
    return {
      timeout: this.options.timeoutMs,
      reject: false,
      // sudo resets the environment anyway; nothing of the gateway's needs to reach the helper.
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
      extendEnv: false,
      maxBuffer: 64 * 1024 * 1024,
    };
  }

  private check(
    result: { failed: boolean; exitCode?: number | undefined; stderr?: unknown; timedOut?: boolean },
    user: string,
    verb: HelperVerb,
    args: readonly string[],
    what: string,
  ): void {
    if (!result.failed) return;
    const stderr = typeof result.stderr === 'string' ? result.stderr.trim() : '';
    const exitCode = typeof result.exitCode === 'number' ? result.exitCode : undefined;
    if (exitCode === HELPER_REFUSED) {
      throw new HelperRefusedError(`the helper refused to ${what}: ${stderr || '(no reason given)'}`, stderr);
    }
    if (exitCode === 1 && SUDO_REFUSED.test(stderr)) {
      throw new HelperRefusedError(
        `sudo refused to run the helper as ${user} (to ${what}): ${stderr}; the user must exist on this ` +
          'host and belong to the group the sudoers rule names (docs/security.md)',
        stderr,
      );
    }
    throw new CommandError(
      `tes-gateway-helper ${verb}`,
      args,
      exitCode,
      stderr,
      Boolean(result.timedOut),
      `failed to ${what}`,
    );
  }
}
