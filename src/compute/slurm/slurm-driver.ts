import { CommandError, SubmissionRejectedError } from '../../errors.js';
import type { ComputeDriver, LaunchRequest, PollResult } from '../driver.js';
import type { JobStatus } from '../job-status.js';
import { buildSacctArgs, buildSacctUsageArgs, parseSacct, parseSacctUsage } from './sacct.js';
import { jobNameFor, SLURM_BACKEND_PARAMETERS } from './sbatch-args.js';
import { SlurmCli, type SlurmCliOptions } from './slurm-cli.js';

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
}

export class SlurmDriver implements ComputeDriver {
  readonly kind = 'slurm' as const;
  readonly supportedBackendParameters = SLURM_BACKEND_PARAMETERS;
  readonly cli: SlurmCli;
  /** sacct calls by purpose: job states (reconciler), peak memory (finalization), job lookups. */
  readonly sacctCalls = { states: 0, usage: 0, lookups: 0 };

  constructor(private readonly options: SlurmDriverOptions) {
    this.cli = new SlurmCli(options);
  }

  async findJob(taskId: string, since: Date): Promise<string | undefined> {
    const name = jobNameFor(taskId);
    // The controller knows young jobs before accounting does; accounting remembers old ones.
    const queued = await this.cli.run(
      'squeue',
      ['-h', '-t', 'all', `--name=${name}`, '-o', '%i'],
      `look up the job of task ${taskId}`,
    );
    const fromQueue = firstJobId(queued);
    if (fromQueue) return fromQueue;
    // A relative start time avoids any question of the controller's time zone.
    const minutes = Math.ceil((Date.now() - since.getTime()) / 60_000) + 2;
    this.sacctCalls.lookups++;
    const accounted = await this.cli.run(
      'sacct',
      ['-n', '-X', '-P', '-S', `now-${minutes}minutes`, `--name=${name}`, '--format=JobID'],
      `look up the job of task ${taskId}`,
    );
    return firstJobId(accounted);
  }

  async submit(request: LaunchRequest): Promise<string> {
    let out: string;
    try {
      out = await this.cli.run('sbatch', request.args, `failed to submit task ${request.taskId}`);
    } catch (err) {
      if (err instanceof CommandError && !isTransientSlurmError(err)) {
        throw new SubmissionRejectedError(
          `Slurm refused the job of task ${request.taskId}: ${err.stderr.trim() || err.message}`,
        );
      }
      throw err;
    }
    const jobId = out.trim().split(';')[0] ?? '';
    if (!/^\d+(_\d+)?$/.test(jobId)) {
      throw new CommandError(
        'sbatch',
        request.args,
        0,
        `unexpected output: ${out.trim()}`,
        false,
        `failed to submit task ${request.taskId}`,
      );
    }
    return jobId;
  }

  async poll(jobIds: readonly string[]): Promise<PollResult> {
    const jobs = new Map<string, JobStatus>();
    const errors: string[] = [];
    for (let i = 0; i < jobIds.length; i += this.options.sacctChunkSize) {
      const chunk = jobIds.slice(i, i + this.options.sacctChunkSize);
      this.sacctCalls.states++;
      const text = await this.cli.run('sacct', buildSacctArgs(chunk), 'failed to read job states');
      const parsed = parseSacct(text);
      for (const [id, s] of parsed.jobs) jobs.set(id, s);
      errors.push(...parsed.errors);
    }
    return { jobs, errors };
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
      const text = await this.cli.run(
        'squeue',
        ['-h', '-t', 'all', `--jobs=${jobIds.join(',')}`, '-o', '%i'],
        'failed to list jobs',
      );
      return new Set(
        text
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean),
      );
    } catch (err) {
      if (err instanceof CommandError && /invalid job id/i.test(err.stderr)) return new Set();
      throw err;
    }
  }

  async cancel(jobIds: readonly string[]): Promise<void> {
    if (jobIds.length === 0) return;
    try {
      await this.cli.run('scancel', [...jobIds], `failed to cancel jobs ${jobIds.join(',')}`);
    } catch (err) {
      if (err instanceof CommandError && ALREADY_GONE.test(err.stderr)) return;
      throw err;
    }
  }

  async close(): Promise<void> {}
}

function firstJobId(text: string): string | undefined {
  for (const line of text.split('\n')) {
    const id = line.trim();
    if (/^\d+(_\d+)?$/.test(id)) return id;
  }
  return undefined;
}
