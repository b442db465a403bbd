import { spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, writeFileSync, renameSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import type { Logger } from '../../logger.js';
import type { CancelRequest, ComputeDriver, LaunchRequest, PollResult, SubmittedJob } from '../driver.js';
import type { JobStatus } from '../job-end.js';
import { TASK_FILE, taskDirOf, taskFile } from '../../tes/task-directory.js';
import { writePrivateFile } from '../task-dir.js';

/**
 * The `local` launcher: runs a task's job script as a child process on the gateway host, in its own
 * process group, with at most `maxConcurrentTasks` at once. Its job id is the task id. What Slurm
 * would know is kept as files in the task directory, so a restarted gateway can still read it:
 * `local.job` (submitted), `local.pid` (started), `local.exit` (`code:signal`), `local.cancelled`
 * (see tes/task-directory.ts).
 */
export interface LocalDriverOptions {
  workRoot: string;
  maxConcurrentTasks: number;
  logger: Logger;
  /** Seconds between SIGTERM and SIGKILL on cancel, like Slurm's KillWait. */
  killWaitSeconds?: number;
}

export class LocalDriver implements ComputeDriver {
  readonly kind = 'local' as const;
  readonly supportedBackendParameters: readonly string[] = [];
  private readonly waiting: string[] = [];
  private readonly running = new Map<string, number>();
  private closed = false;

  constructor(private readonly options: LocalDriverOptions) {}

  private dir(taskId: string): string {
    return taskDirOf(this.options.workRoot, taskId);
  }

  async findJob(taskId: string): Promise<SubmittedJob | undefined> {
    return existsSync(taskFile(this.dir(taskId), TASK_FILE.localJob)) ? { jobId: taskId } : undefined;
  }

  async submit(request: LaunchRequest): Promise<SubmittedJob> {
    // The attempt's mark comes first, as before an sbatch: a retry then looks for `local.job`.
    await writePrivateFile(taskFile(request.ledgerDir, TASK_FILE.submitAttempted), request.marker);
    writeAtomic(taskFile(request.workDir, TASK_FILE.localJob), new Date().toISOString());
    this.waiting.push(request.taskId);
    this.pump();
    return { jobId: request.taskId };
  }

  private pump(): void {
    while (!this.closed && this.running.size < this.options.maxConcurrentTasks && this.waiting.length > 0) {
      this.start(this.waiting.shift()!);
    }
  }

  private start(taskId: string): void {
    const dir = this.dir(taskId);
    if (existsSync(taskFile(dir, TASK_FILE.localExit))) return;
    const out = openSync(taskFile(dir, TASK_FILE.slurmOut), 'a', 0o600);
    const err = openSync(taskFile(dir, TASK_FILE.slurmErr), 'a', 0o600);
    // What the job writes is for the gateway's user only, from its first file on (as job.sh says too).
    const child = spawn(
      'bash',
      ['-c', 'umask 077 && exec bash -- "$1"', 'job', taskFile(dir, TASK_FILE.jobScript)],
      {
        cwd: dir,
        detached: true,
        stdio: ['ignore', out, err],
        // As with sbatch: the gateway's own environment does not reach the task (see slurm-cli.ts).
        env: { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8' },
      },
    );
    closeSync(out);
    closeSync(err);
    const pid = child.pid;
    if (pid === undefined) {
      writeAtomic(taskFile(dir, TASK_FILE.localExit), '1:0');
      writeAtomic(
        taskFile(dir, TASK_FILE.systemError),
        'the local launcher could not start bash for the job script',
      );
      return;
    }
    this.running.set(taskId, pid);
    writeAtomic(taskFile(dir, TASK_FILE.localPid), String(pid));
    child.on('exit', (code, signal) => {
      this.running.delete(taskId);
      try {
        writeAtomic(taskFile(dir, TASK_FILE.localExit), `${code ?? 0}:${signal ? signalNumber(signal) : 0}`);
      } catch (err) {
        // The task directory went while its job ran (removed by hand, or by retention after the task
        // ended): there is nowhere to record the end, and nobody left to read it. The launcher goes on.
        this.options.logger.warn({ err, taskId }, 'could not record the end of a local job');
      }
      this.pump();
    });
    child.on('error', (e) => this.options.logger.error({ err: e, taskId }, 'local job failed to start'));
  }

  async poll(jobIds: readonly string[]): Promise<PollResult> {
    const jobs = new Map<string, JobStatus>();
    for (const taskId of jobIds) {
      const dir = this.dir(taskId);
      const exit = readText(taskFile(dir, TASK_FILE.localExit));
      if (exit !== undefined) {
        const [code, signal] = exit.split(':').map(Number) as [number, number];
        const cancelled = existsSync(taskFile(dir, TASK_FILE.localCancelled));
        const state = cancelled ? 'CANCELLED' : code === 0 && signal === 0 ? 'COMPLETED' : 'FAILED';
        jobs.set(taskId, {
          jobId: taskId,
          state,
          rawState: state,
          exitCode: { code, signal },
          node: 'localhost',
        });
        continue;
      }
      const pid = this.running.get(taskId) ?? Number(readText(taskFile(dir, TASK_FILE.localPid)) ?? NaN);
      if (Number.isFinite(pid)) {
        if (isAlive(pid)) {
          jobs.set(taskId, {
            jobId: taskId,
            state: 'RUNNING',
            rawState: 'RUNNING',
            exitCode: { code: 0, signal: 0 },
            node: 'localhost',
          });
        } else {
          jobs.set(taskId, {
            jobId: taskId,
            state: 'NODE_FAIL',
            rawState: 'NODE_FAIL',
            exitCode: { code: 0, signal: 0 },
            reason: 'the gateway process that ran the task stopped',
          });
        }
        continue;
      }
      if (!this.waiting.includes(taskId) && existsSync(taskFile(dir, TASK_FILE.localJob))) {
        // Submitted before a restart of the gateway: it waits for a slot again.
        this.waiting.push(taskId);
        this.pump();
      }
      jobs.set(taskId, {
        jobId: taskId,
        state: 'PENDING',
        rawState: 'PENDING',
        exitCode: { code: 0, signal: 0 },
        reason: 'Resources',
      });
    }
    return { jobs, errors: [] };
  }

  async usage(): Promise<Map<string, number>> {
    return new Map();
  }

  async known(jobIds: readonly string[]): Promise<Set<string>> {
    return new Set(jobIds.filter((id) => existsSync(taskFile(this.dir(id), TASK_FILE.localJob))));
  }

  async cancel(jobs: readonly CancelRequest[]): Promise<void> {
    for (const { jobId: taskId } of jobs) {
      const dir = this.dir(taskId);
      if (existsSync(taskFile(dir, TASK_FILE.localExit))) continue;
      writeAtomic(taskFile(dir, TASK_FILE.localCancelled), new Date().toISOString());
      const queued = this.waiting.indexOf(taskId);
      if (queued >= 0) {
        this.waiting.splice(queued, 1);
        writeAtomic(taskFile(dir, TASK_FILE.localExit), '0:15');
        continue;
      }
      const pid = this.running.get(taskId) ?? Number(readText(taskFile(dir, TASK_FILE.localPid)) ?? NaN);
      if (!Number.isFinite(pid)) {
        writeAtomic(taskFile(dir, TASK_FILE.localExit), '0:15');
        continue;
      }
      signalGroup(pid, 'SIGTERM');
      const timer = setTimeout(
        () => signalGroup(pid, 'SIGKILL'),
        (this.options.killWaitSeconds ?? 10) * 1000,
      );
      timer.unref();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

function writeAtomic(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, `${text}\n`, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

function signalNumber(signal: NodeJS.Signals): number {
  return constants.signals[signal] ?? 15;
}
