import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { CommandError, SubmissionRejectedError } from '../../errors.js';
import { arraysDirOf, TASK_FILE } from '../../tes/task-directory.js';
import { parseSubmitMarker, renderArrayLine, withoutArray } from '../submit-marker.js';
import { writePrivateFile } from '../task-dir.js';
import type { CancelRequest, ComputeDriver, LaunchRequest, PollResult, SubmittedJob } from '../driver.js';
import type { StagedTask, UserHelper } from '../../run-as/user-helper.js';
import type { Logger } from '../../logger.js';
import type { JobStatus } from '../job-end.js';
import {
  buildSacctArgs,
  buildSacctLookupArgs,
  buildSacctUsageArgs,
  parseSacct,
  parseSacctLookup,
  parseSacctUsage,
} from './sacct.js';
import {
  buildSqueueKnownArgs,
  buildSqueueLookupArgs,
  parseSqueueKnown,
  parseSqueueLookup,
  SQUEUE_NO_SUCH_JOB,
} from './squeue.js';
import { arrayJobName, arrayKey, buildArrayArgs, expandJobId, renderDispatcher } from './job-arrays.js';
import { jobNameFor, renderSbatchCommand, SLURM_BACKEND_PARAMETERS } from './sbatch-args.js';
import { PartitionDiskCache, SINFO_TMP_DISK_ARGS } from './sinfo.js';
import { SlurmCli, type SlurmCliOptions } from './slurm-cli.js';
import { confirmPreempted, SQUEUE_STATE_ARGS } from './slurm-states.js';

/** Failures that a later attempt may not meet: the controller was busy, down or slow. */
const TRANSIENT =
  /socket timed out|unable to contact slurm controller|connection refused|temporarily unavailable|try again|zero bytes were transmitted|transport endpoint|connection reset|slurmctld.*(down|not responding)|communication connection failure|munge|authentication failure|protocol authentication error/i;

/** What scancel says of a job that has already gone: cancelling it again is not an error. */
const ALREADY_GONE = /already completing or completed|invalid job id specified|job has already finished/i;

export function isTransientSlurmError(err: CommandError): boolean {
  return err.timedOut || err.exitCode === undefined || TRANSIENT.test(err.stderr);
}

export interface SlurmDriverOptions extends SlurmCliOptions {
  sacctChunkSize: number;
  /** Submissions with the same Slurm request arriving within this window share a job array; 0: never. */
  arrayWindowMs: number;
  maxArraySize: number;
  /** How long the partitions' TmpDisk figures from sinfo are used before sinfo is asked again. */
  tmpDiskRefreshMs?: number | undefined;
  /**
   * The Unix user the gateway submits as: look-ups by job name search only this user's jobs, so a
   * job of someone else that carries a task's name is never taken for the task's. Default: the user
   * this process runs as.
   */
  user?: string | undefined;
  /**
   * Set when tasks run as their owners (identity.runAs user): sbatch and scancel go through the helper
   * as the task's owner, and look-ups search the owner's jobs.
   */
  runAs?: UserHelper | undefined;
  logger?: Pick<Logger, 'warn'> | undefined;
}

/**
 * The attempt's submit marker (compute/submit-marker.ts), written just before sbatch runs; a task
 * submitted as part of an array records its array and index there, in the same write. Gateways before
 * that kept a file of its own, `array-element`, still read to find their jobs.
 */
const SUBMIT_MARKER = TASK_FILE.submitAttempted;
/** A task submitted alone gets its command here; an array's is `.arrays/<batch>.sbatch-command`. */
const SBATCH_COMMAND = TASK_FILE.sbatchCommand;
const OLDER_ARRAY_FILE = TASK_FILE.arrayElement;

interface PendingSubmit {
  request: LaunchRequest;
  resolve: (job: SubmittedJob) => void;
  reject: (err: unknown) => void;
}

export class SlurmDriver implements ComputeDriver {
  readonly kind = 'slurm' as const;
  readonly supportedBackendParameters = SLURM_BACKEND_PARAMETERS;
  readonly cli: SlurmCli;
  /** sacct calls by purpose: job states (reconciler), peak memory (finalization), job lookups. */
  readonly sacctCalls = { states: 0, usage: 0, lookups: 0 };
  private readonly bursts = new Map<string, PendingSubmit[]>();
  /** The burst of each key being handed over now (tasks run as their owners only). */
  private readonly flushing = new Map<string, Promise<void>>();
  /** The partitions' TmpDisk, read from sinfo when a disk request needs it (see sbatch-args.ts). */
  readonly partitionDisks: PartitionDiskCache;

  /** Whose jobs the look-ups by name search (SlurmDriverOptions.user). */
  readonly user: string;

  constructor(private readonly options: SlurmDriverOptions) {
    this.cli = new SlurmCli(options);
    this.user = options.user ?? userInfo().username;
    this.partitionDisks = new PartitionDiskCache({
      read: () => this.cli.run('sinfo', SINFO_TMP_DISK_ARGS, "failed to read the partitions' TmpDisk"),
      refreshMs: options.tmpDiskRefreshMs ?? 300_000,
      logger: options.logger ?? { warn: () => undefined },
    });
  }

  async findJob(
    taskId: string,
    since: Date,
    ledgerDir: string,
    user?: string,
  ): Promise<SubmittedJob | undefined> {
    const owner = user ?? this.user;
    const element = await readArrayElement(ledgerDir);
    if (element) {
      const base = await this.findByName(element.name, since, taskId, owner);
      return base ? { jobId: `${base}_${element.index}`, jobName: element.name } : undefined;
    }
    const jobName = jobNameFor(taskId);
    const jobId = await this.findByName(jobName, since, taskId, owner);
    return jobId ? { jobId, jobName } : undefined;
  }

  /** The job (or array) id of `user`'s job with this name, from the controller, else from accounting. */
  private async findByName(
    name: string,
    since: Date,
    taskId: string,
    user: string,
  ): Promise<string | undefined> {
    // The controller knows young jobs before accounting does; accounting remembers old ones.
    const what = `look up the job of task ${taskId}`;
    const fromQueue = parseSqueueLookup(
      await this.cli.run('squeue', buildSqueueLookupArgs(name, user), what),
    );
    if (fromQueue) return fromQueue;
    const minutes = Math.ceil((Date.now() - since.getTime()) / 60_000) + 2;
    this.sacctCalls.lookups++;
    return parseSacctLookup(await this.cli.run('sacct', buildSacctLookupArgs(name, minutes, user), what));
  }

  async submit(request: LaunchRequest): Promise<SubmittedJob> {
    if (this.options.arrayWindowMs <= 0) return this.submitOne(request);
    return new Promise((resolve, reject) => {
      // Only one user's tasks share an array: the array is a job of theirs.
      const key = `${request.user ?? ''}\n${arrayKey(request.args)}`;
      let burst = this.bursts.get(key);
      if (!burst) {
        burst = [];
        this.bursts.set(key, burst);
        const open = burst;
        setTimeout(() => void this.flushWhenFree(key, open, request.user), this.options.arrayWindowMs);
      }
      burst.push({ request, resolve, reject });
      if (burst.length >= this.options.maxArraySize) void this.flush(key, burst);
    });
  }

  /**
   * Tasks run as their owners cost one helper call per burst (a sudo session), whatever its size:
   * while one burst of a user's is being handed over, the next one keeps gathering tasks, and goes
   * when the first is done. Bursts so grow with the load instead of the calls.
   */
  private async flushWhenFree(key: string, burst: PendingSubmit[], user: string | undefined): Promise<void> {
    const running = user && this.options.runAs ? this.flushing.get(key) : undefined;
    if (running) await running;
    const flushed = this.flush(key, burst);
    if (!user || !this.options.runAs) return flushed;
    this.flushing.set(key, flushed);
    try {
      await flushed;
    } finally {
      if (this.flushing.get(key) === flushed) this.flushing.delete(key);
    }
  }

  private async submitOne(request: LaunchRequest): Promise<SubmittedJob> {
    const what = `task ${request.taskId}`;
    const jobName = jobNameFor(request.taskId);
    this.options.metrics?.submission(1);
    const helper = this.options.runAs;
    const user = request.user;
    await markAttempt(request);
    if (helper && user) {
      const [task] = stagedTasks(user, [request]);
      const out = await this.handedOver([task!], () => helper.submit(user, task!), what);
      return { jobId: parseJobId(out, request.args, what), jobName };
    }
    // What runs, for people reading the task directory.
    await writePrivateFile(join(request.workDir, SBATCH_COMMAND), renderSbatchCommand(request.args));
    return { jobId: parseJobId(await this.sbatch(request.args, what), request.args, what), jobName };
  }

  /** An array of one user's tasks, submitted as that user: the helper writes its dispatcher. */
  private async submitArrayAs(
    user: string,
    batchId: string,
    burst: PendingSubmit[],
    what: string,
  ): Promise<string> {
    const helper = this.options.runAs!;
    const tasks = stagedTasks(
      user,
      burst.map((p) => p.request),
    );
    const out = await this.handedOver(tasks, () => helper.submitArray(user, batchId, tasks), what);
    return parseJobId(out, burst[0]!.request.args, what);
  }

  /**
   * Submits through the helper, which makes the user's task directories from what was prepared; then
   * the stages go. After a submission they go in the background, off the path to the tasks' job ids (a
   * removal of a few hundred small folders takes a while on some filesystems); after a failure
   * before the call returns, so that a retry prepares its stage on clean ground.
   */
  private async handedOver(tasks: readonly StagedTask[], submit: () => Promise<string>, what: string) {
    let out: string;
    try {
      out = await this.rejectedOrNot(submit, what);
    } catch (err) {
      await dropStages(tasks);
      throw err;
    }
    void dropStages(tasks).catch((err: unknown) =>
      this.options.logger?.warn({ err, what }, 'could not remove the stages of submitted tasks'),
    );
    return out;
  }

  /** One sbatch for a burst: a single task goes alone, several go as one array. */
  private async flush(key: string, burst: PendingSubmit[]): Promise<void> {
    if (this.bursts.get(key) !== burst) return;
    this.bursts.delete(key);
    if (burst.length === 1) {
      const [one] = burst;
      await this.submitOne(one!.request).then(one!.resolve, one!.reject);
      return;
    }
    this.options.metrics?.submission(burst.length);
    try {
      const batchId = randomBytes(6).toString('hex');
      const name = arrayJobName(batchId);
      const user = burst[0]!.request.user;
      const asOwner = user !== undefined && this.options.runAs !== undefined;
      // Each task learns its place before sbatch runs, so a retry after a lost answer finds it. The
      // command of an earlier attempt that went alone goes: it is not what runs now.
      await Promise.all(
        burst.map(async (p, i) => {
          await markAttempt(p.request, renderArrayLine(name, i));
          // For people only: one left in place costs no task its array. Only an earlier attempt, which
          // may have gone alone, can have left one.
          if (!asOwner && p.request.retried)
            await unlink(join(p.request.workDir, SBATCH_COMMAND)).catch(() => undefined);
        }),
      );
      if (asOwner) {
        const what = `${burst.length} tasks of ${user} (array ${name})`;
        const base = await this.submitArrayAs(user, batchId, burst, what);
        burst.forEach((p, i) => p.resolve({ jobId: `${base}_${i}`, jobName: name }));
        return;
      }
      const arrayDir = arraysDirOf(burst[0]!.request.workDir);
      await mkdir(arrayDir, { recursive: true });
      const dispatcher = join(arrayDir, `${batchId}.sh`);
      await writeFile(
        dispatcher,
        renderDispatcher(
          batchId,
          burst.map((p) => p.request.workDir),
        ),
        { mode: 0o755 },
      );
      const args = buildArrayArgs(burst[0]!.request.args, batchId, burst.length, dispatcher, arrayDir);
      await writeFile(join(arrayDir, `${batchId}.${TASK_FILE.sbatchCommand}`), renderSbatchCommand(args));
      const what = `${burst.length} tasks (array ${name})`;
      const base = parseJobId(await this.sbatch(args, what), args, what);
      burst.forEach((p, i) => p.resolve({ jobId: `${base}_${i}`, jobName: name }));
    } catch (err) {
      // Refused, the array does not exist: its elements' markers must not steer a later look-up. After
      // a timeout it may exist, and the markers are how a retry finds it.
      if (err instanceof SubmissionRejectedError) {
        await Promise.all(burst.map((p) => dropArrayLine(join(p.request.ledgerDir, SUBMIT_MARKER))));
      }
      for (const p of burst) p.reject(err);
    }
  }

  private async sbatch(args: readonly string[], what: string): Promise<string> {
    return this.rejectedOrNot(() => this.cli.run('sbatch', args, `failed to submit ${what}`), what);
  }

  /** sbatch's answer; a refusal that a retry will not change (not a busy or silent controller) is final. */
  private async rejectedOrNot(submit: () => Promise<string>, what: string): Promise<string> {
    try {
      return await submit();
    } catch (err) {
      if (err instanceof CommandError && !isTransientSlurmError(err)) {
        throw new SubmissionRejectedError(
          `Slurm refused the job of ${what}: ${err.stderr.trim() || err.message}`,
        );
      }
      throw err;
    }
  }

  async poll(jobIds: readonly string[]): Promise<PollResult> {
    const jobs = new Map<string, JobStatus>();
    const errors: string[] = [];
    for (let i = 0; i < jobIds.length; i += this.options.sacctChunkSize) {
      const chunk = jobIds.slice(i, i + this.options.sacctChunkSize);
      // Pending array elements are listed only under their array's id, collapsed (`12_[3-9]`).
      const query = [...new Set(chunk.map((id) => id.split('_')[0]!))];
      this.sacctCalls.states++;
      const text = await this.cli.run('sacct', buildSacctArgs(query), 'failed to read job states');
      const parsed = parseSacct(text);
      for (const [id, s] of parsed.jobs) {
        for (const one of expandJobId(id)) jobs.set(one, { ...s, jobId: one });
      }
      errors.push(...parsed.errors);
    }
    await this.confirmPreemptions(jobs, errors);
    return { jobs, errors };
  }

  /**
   * Accounting shows a job preempted and requeued as PREEMPTED for a few seconds before its new
   * pending record: the controller tells whether it comes back. A job it still holds in a waiting or
   * started state is reported so; one it shows PREEMPTED, or has forgotten, is preempted for good.
   * When squeue fails, such jobs are left out of this poll (not decided yet) rather than ended.
   */
  private async confirmPreemptions(jobs: Map<string, JobStatus>, errors: string[]): Promise<void> {
    const preempted = [...jobs.values()].filter((s) => s.state === 'PREEMPTED');
    if (preempted.length === 0) return;
    let text: string;
    try {
      text = await this.cli.run(
        'squeue',
        [...SQUEUE_STATE_ARGS, `--jobs=${preempted.map((s) => s.jobId).join(',')}`],
        'failed to read the state of preempted jobs',
      );
    } catch (err) {
      if (err instanceof CommandError && SQUEUE_NO_SUCH_JOB.test(err.stderr)) return;
      for (const s of preempted) {
        jobs.delete(s.jobId);
        errors.push(
          `job ${s.jobId} is PREEMPTED; whether Slurm requeues it is not known yet: ${(err as Error).message}`,
        );
      }
      return;
    }
    for (const s of confirmPreempted(preempted, text)) jobs.set(s.jobId, s);
  }

  async usage(jobIds: readonly string[]): Promise<Map<string, number>> {
    if (jobIds.length === 0) return new Map();
    this.sacctCalls.usage++;
    const text = await this.cli.run('sacct', buildSacctUsageArgs(jobIds), 'failed to read job usage');
    return parseSacctUsage(text);
  }

  async known(jobIds: readonly string[]): Promise<Set<string>> {
    if (jobIds.length === 0) return new Set();
    try {
      return parseSqueueKnown(
        await this.cli.run('squeue', buildSqueueKnownArgs(jobIds), 'failed to list jobs'),
      );
    } catch (err) {
      if (err instanceof CommandError && SQUEUE_NO_SUCH_JOB.test(err.stderr)) return new Set();
      throw err;
    }
  }

  async cancel(jobs: readonly CancelRequest[]): Promise<void> {
    const own = [...new Set(jobs.filter((j) => !j.owner).map((j) => j.jobId))];
    const owners = [...new Map(jobs.filter((j) => j.owner).map((j) => [j.jobId, j.owner!])).entries()];
    const helper = this.options.runAs;
    if (owners.length > 0 && !helper) throw new Error('jobs of task owners to cancel, without the helper');
    await Promise.all([
      own.length > 0 &&
        goneIsDone(() => this.cli.run('scancel', own, `failed to cancel jobs ${own.join(',')}`)),
      // scancel of another user's job is refused to the gateway's account: each goes as its owner.
      ...owners.map(([jobId, owner]) => goneIsDone(() => helper!.cancel(owner.user, owner.workDir, jobId))),
    ]);
  }

  async close(): Promise<void> {}
}

/** The prepared task directories of one user's tasks, which the helper makes as it submits. */
function stagedTasks(user: string, requests: readonly LaunchRequest[]): StagedTask[] {
  return requests.map((r) => {
    if (!r.handover)
      throw new Error(`task ${r.taskId} runs as ${user} but was not prepared for it (no handover)`);
    return { taskDir: r.workDir, ledgerDir: r.ledgerDir, ...r.handover };
  });
}

/** The stages, once the helper has had them: the task directories are the user's now. */
async function dropStages(tasks: readonly StagedTask[]): Promise<void> {
  await Promise.all(
    tasks.flatMap((t) =>
      t.stageDir === undefined ? [] : [rm(t.stageDir, { recursive: true, force: true })],
    ),
  );
}

/** Cancelling a job that has already gone is not an error. */
async function goneIsDone(cancel: () => Promise<unknown>): Promise<void> {
  try {
    await cancel();
  } catch (err) {
    if (err instanceof CommandError && ALREADY_GONE.test(err.stderr)) return;
    throw err;
  }
}

function parseJobId(out: string, args: readonly string[], what: string): string {
  const jobId = out.trim().split(';')[0] ?? '';
  if (!/^\d+$/.test(jobId)) {
    throw new CommandError(
      'sbatch',
      args,
      0,
      `unexpected output: ${out.trim()}`,
      false,
      `failed to submit ${what}`,
    );
  }
  return jobId;
}

/** Marks the attempt (SUBMIT_MARKER), with the array line when the task goes in an array. */
async function markAttempt(request: LaunchRequest, arrayLine = ''): Promise<void> {
  await writePrivateFile(join(request.ledgerDir, SUBMIT_MARKER), request.marker + arrayLine);
}

/** The submit marker without its array line, when there is a marker. */
async function dropArrayLine(marker: string): Promise<void> {
  const text = await readFile(marker, 'utf8').catch(() => undefined);
  if (text !== undefined) await writePrivateFile(marker, withoutArray(text));
}

/**
 * The array a task was last submitted in, if its last submission was one: from the submit marker,
 * which each attempt writes anew, so an array line there is the last attempt's.
 */
async function readArrayElement(ledgerDir: string): Promise<{ name: string; index: number } | undefined> {
  const marker = await readFile(join(ledgerDir, SUBMIT_MARKER), 'utf8').catch(() => undefined);
  const array = marker === undefined ? undefined : parseSubmitMarker(marker).array;
  return array ?? readOlderArrayElement(ledgerDir);
}

/**
 * The same from the file an older gateway wrote after the submit marker of the same attempt. One
 * older than the submit marker is left from an earlier attempt (an array that failed, or a worker that
 * died before removing it) and is not trusted: the task's own name is looked up instead.
 */
async function readOlderArrayElement(
  ledgerDir: string,
): Promise<{ name: string; index: number } | undefined> {
  try {
    const path = join(ledgerDir, OLDER_ARRAY_FILE);
    const [element, attempt] = await Promise.all([
      stat(path),
      stat(join(ledgerDir, SUBMIT_MARKER)).catch(() => undefined),
    ]);
    if (attempt && element.mtimeMs < attempt.mtimeMs) return undefined;
    const [name, index] = (await readFile(path, 'utf8')).trim().split(' ');
    return name && index && /^\d+$/.test(index) ? { name, index: Number(index) } : undefined;
  } catch {
    return undefined;
  }
}
