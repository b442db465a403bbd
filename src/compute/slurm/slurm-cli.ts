import { execa } from 'execa';
import { join } from 'node:path';
import { userInfo } from 'node:os';
import { CommandError } from '../../errors.js';
import pLimit, { type LimitFunction } from 'p-limit';

/**
 * The only place that runs Slurm's programs. Every call has a timeout, keeps stderr for the error,
 * and controller-facing calls share one concurrency cap.
 */
export type SlurmTool = 'sbatch' | 'sacct' | 'squeue' | 'scancel' | 'sinfo';

export interface SlurmCliOptions {
  binDir?: string | undefined;
  timeoutMs: number;
  maxConcurrentCalls: number;
}

export interface SlurmCallCounts {
  sbatch: number;
  sacct: number;
  squeue: number;
  scancel: number;
  sinfo: number;
}

/**
 * The whole environment sbatch runs in, and so (with `--export=ALL`) the whole environment of the job:
 * nothing of the gateway's own (no credentials, no SLURM_* of a gateway that itself runs in a job, no
 * SBATCH_* defaults). PATH finds sbatch as the gateway does; the job script sets its own.
 */
export function submitEnvironment(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const me = userInfo();
  const clean: Record<string, string> = {
    PATH: env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    LANG: 'C.UTF-8',
    HOME: me.homedir,
    USER: me.username,
    LOGNAME: me.username,
  };
  // Where the site keeps slurm.conf, when not in the default place.
  if (env.SLURM_CONF) clean.SLURM_CONF = env.SLURM_CONF;
  return clean;
}

export class SlurmCli {
  private readonly limiter: LimitFunction;
  readonly calls: SlurmCallCounts = { sbatch: 0, sacct: 0, squeue: 0, scancel: 0, sinfo: 0 };

  private readonly submitEnv = submitEnvironment();

  constructor(private readonly options: SlurmCliOptions) {
    this.limiter = pLimit(options.maxConcurrentCalls);
  }

  async run(tool: SlurmTool, args: readonly string[], what: string): Promise<string> {
    const file = this.options.binDir ? join(this.options.binDir, tool) : tool;
    this.calls[tool]++;
    return this.limiter(async () => {
      const result = await execa(file, args, {
        timeout: this.options.timeoutMs,
        reject: false,
        stdin: 'ignore',
        ...(tool === 'sbatch'
          ? { env: this.submitEnv, extendEnv: false }
          : { env: { SLURM_TIME_FORMAT: '%s' } }),
        maxBuffer: 256 * 1024 * 1024,
      });
      if (result.failed) {
        const exitCode = typeof result.exitCode === 'number' ? result.exitCode : undefined;
        const stderr =
          String(result.stderr ?? '') || (result.timedOut ? '' : String(result.shortMessage ?? ''));
        throw new CommandError(tool, args, exitCode, stderr, Boolean(result.timedOut), what);
      }
      return String(result.stdout);
    });
  }
}
