import { posix } from 'node:path';

/**
 * What is in a task directory (`<work root>/<task id>`), and who writes and reads each part. Every
 * name below is used through this module; nothing else spells them, the job script included (it is
 * rendered from these names, and test/unit/task-directory.test.ts runs one to prove that what it
 * writes is what the gateway reads). The directory is private to the gateway's user: 0700, files
 * 0600 (compute/task-dir.ts lays it out without following links).
 *
 * | Name                        | Written by                                    | Read by                                   |
 * |-----------------------------|-----------------------------------------------|-------------------------------------------|
 * | `inputs/<n>/content`        | staging (stage-inputs.ts): an input's content | the job, bound read-only into the container |
 * | `inputs/<n>/data`           | staging: a downloaded input                   | the job, bound read-only into the container |
 * | `mnt/<container path>`      | prepare-job lays it out; executors write it   | finalize (deliver-outputs.ts), outputs    |
 * | `tmp/`, `var-tmp/`          | the job script makes them; executors write    | the job, as /tmp and /var/tmp; finalize   |
 * | `exec-<n>/`                 | the job script makes and fills it             | see the files below                       |
 * | `exec-<n>/start`, `end`     | the job script, around executor n             | reconciler (RUNNING), finalize (times)    |
 * | `exec-<n>/exit_code`        | the job script, after executor n              | finalize (executor-results.ts)            |
 * | `exec-<n>/stdout`, `stderr` | the job script, executor n's streams          | finalize (log tails), the job (copies)    |
 * | `job.sh`                    | prepare-job (render-job-script.ts)            | sbatch, the local launcher, a dispatcher  |
 * | `sbatch-command`            | the Slurm driver, for a task submitted alone: | people (what was sent, quoted)            |
 * |                             | the exact sbatch command (an array's is in    |                                           |
 * |                             | `.arrays/`); run as user, prepare-job: every  |                                           |
 * |                             | task's own command, with the other files      |                                           |
 * | `submit-attempted`          | the submit processor, just before sbatch: the | the submit processor (look for a job; a   |
 * |                             | time, then prepare-job's notes; the Slurm     | retry that adopts it logs the notes), the |
 * |                             | driver adds the array and index the task went | reconciler (is an array's record the      |
 * |                             | in, before the array's sbatch                 | task's?); compute/submit-marker.ts        |
 * | `array-element`             | gateways before the array line above          | the Slurm driver (find such a job again)  |
 * | `job-end`                   | the job script's EXIT trap                    | reconciler (look again soon)              |
 * | `system-error`              | the job script (a refused path, no runtime),  | finalize: the task is SYSTEM_ERROR        |
 * |                             | the local launcher (bash did not start)       |                                           |
 * | `delivered`                 | finalize (deliver-outputs.ts): one line per   | finalize again (a retry delivers nothing  |
 * |                             | output file sent                              | twice)                                    |
 * | `slurm.out`, `slurm.err`    | Slurm, the local launcher, a dispatcher: the  | people                                    |
 * |                             | job script's own output                       |                                           |
 * | `local.job`                 | the local launcher: submitted                 | the local launcher (after a restart too)  |
 * | `local.pid`                 | the local launcher: started                   | the local launcher (alive? cancel)        |
 * | `local.exit`                | the local launcher: `code:signal` at the end  | the local launcher (the job's state)      |
 * | `local.cancelled`           | the local launcher: cancel asked              | the local launcher (CANCELLED)            |
 *
 * | `sbatch-args`               | prepare-job, run as user only: the sbatch     | the helper's `submit` (checked, then run) |
 * |                             | arguments, NUL-separated                      |                                           |
 * | `array-<batch>.sh`          | the helper's `submit-array`, run as user      | Slurm: the array's dispatcher             |
 *
 * In the work root itself, `.arrays/` holds each job array's dispatcher (`<batch>.sh`), its
 * `<batch>.sbatch-command` and its elements' Slurm output: written by the Slurm driver, run by Slurm.
 *
 * With `identity.runAs: user` the task directory belongs to the task's owner (made by the helper, 0700)
 * and the gateway cannot read it. The gateway's own files of a task (`submit-attempted`) then live in its ledger, `<work root>/.gateway/<task id>/` (the service
 * account's, 0700), beside `stage/` (what staging wrote for the task, content and downloads, laid out as
 * in the task directory, until the helper has made the task directory from it and from what prepare-job
 * rendered; absent when staging wrote nothing) and `mirror/` (what the helper's `finish` sent back:
 * result files, log tails, the sources of remote outputs, laid out as in the task directory). In
 * `service` mode the ledger is the task directory itself.
 */

/** The files of a task directory, by meaning. */
export const TASK_FILE = {
  jobScript: 'job.sh',
  sbatchCommand: 'sbatch-command',
  submitAttempted: 'submit-attempted',
  arrayElement: 'array-element',
  jobEnd: 'job-end',
  systemError: 'system-error',
  delivered: 'delivered',
  slurmOut: 'slurm.out',
  slurmErr: 'slurm.err',
  localJob: 'local.job',
  localPid: 'local.pid',
  localExit: 'local.exit',
  localCancelled: 'local.cancelled',
  sbatchArgs: 'sbatch-args',
} as const;

export type TaskFile = (typeof TASK_FILE)[keyof typeof TASK_FILE];

/** The folders that hold everything executors can write: the container's own places, /tmp, /var/tmp. */
export const WRITABLE_DIR = { mnt: 'mnt', tmp: 'tmp', varTmp: 'var-tmp' } as const;

/** The files the job script writes for each executor, in `exec-<n>/`. */
export const EXECUTOR_FILE = {
  start: 'start',
  end: 'end',
  exitCode: 'exit_code',
  stdout: 'stdout',
  stderr: 'stderr',
} as const;

export type ExecutorFile = (typeof EXECUTOR_FILE)[keyof typeof EXECUTOR_FILE];

/** What staging writes for input n: its inline content, or what it downloaded. */
export const INPUT_FILE = { content: 'content', data: 'data' } as const;

/** The work root's folder for job arrays' dispatchers, commands and output. */
export const ARRAYS_DIR = '.arrays';

/**
 * The work root's folder where each job script, as it ends, leaves an empty file named after its task
 * (tasks run by the service account only): one folder the reconciler watches, so that a job's end
 * starts a look at accounting at once instead of at the next poll. A file there only hastens a look;
 * accounting still decides.
 */
export const ENDS_DIR = '.ends';

export function endsDirOf(workRoot: string): string {
  return posix.join(workRoot, ENDS_DIR);
}

export function endMarkerOf(workRoot: string, taskId: string): string {
  return posix.join(endsDirOf(workRoot), taskId);
}

/** The one place a task's directory is decided. */
export function taskDirOf(workRoot: string, taskId: string): string {
  return posix.join(workRoot, taskId);
}

/** A file of the task directory. */
export function taskFile(workDir: string, name: TaskFile): string {
  return posix.join(workDir, name);
}

/** `exec-<n>`, relative to the task directory (the job script works inside it). */
export function executorDirName(index: number): string {
  return `exec-${index}`;
}

export function executorDir(workDir: string, index: number): string {
  return posix.join(workDir, executorDirName(index));
}

export function executorFile(workDir: string, index: number, name: ExecutorFile): string {
  return posix.join(executorDir(workDir, index), name);
}

/** `inputs/<n>`: where staging puts what it writes for input n. */
export function inputDir(workDir: string, index: number): string {
  return posix.join(workDir, 'inputs', String(index));
}

export function inputFile(workDir: string, index: number, name: keyof typeof INPUT_FILE): string {
  return posix.join(inputDir(workDir, index), INPUT_FILE[name]);
}

export function writableDir(workDir: string, name: keyof typeof WRITABLE_DIR): string {
  return posix.join(workDir, WRITABLE_DIR[name]);
}

/** The work root's folder of the gateway's own files of each task, when tasks run as their owners. */
export const LEDGERS_DIR = '.gateway';

/** Who owns task directories: `service`, the gateway (ledger = task directory); `user`, the task's owner. */
export type DirOwner = 'service' | 'user';

/** Where the gateway keeps its own files of a task (see above). */
export function ledgerDirOf(workRoot: string, taskId: string, owner: DirOwner): string {
  return owner === 'user' ? posix.join(workRoot, LEDGERS_DIR, taskId) : taskDirOf(workRoot, taskId);
}

/**
 * In the ledgers folder: an archive of prepared task directories on its way to the helper, for as
 * long as one call lasts (run-as/user-helper.ts); one left by a crash goes with the orphan sweep.
 */
export const HANDOVER_PREFIX = '.handover-';

/** In a ledger (run as user): staged inputs on their way to the task directory; the copy of its results. */
export const LEDGER_PART = { stage: 'stage', mirror: 'mirror' } as const;

/** `.arrays/` of the work root that holds the task directory `workDir`. */
export function arraysDirOf(workDir: string): string {
  return posix.join(posix.dirname(workDir), ARRAYS_DIR);
}
