import { join } from 'node:path';
import { userInfo } from 'node:os';
import { CommandError } from '../../errors.js';
import pLimit, { type LimitFunction } from 'p-limit';
import { commandThread, type CommandThread } from '../../exec/command-thread.js';
import type { SlurmErrorKind, SlurmMetrics } from '../../observability/metrics.js';

/**
 * The only place that runs Slurm's programs. Every call has a timeout, keeps stderr for the error,
 * and controller-facing calls share one concurrency cap (all but the readiness probe's `scontrol
 * ping`, which must answer while the cap is taken). Every call is counted and timed here.
 */
export type SlurmTool = 'sbatch' | 'sacct' | 'squeue' | 'scancel' | 'sinfo' | 'scontrol';

export interface SlurmCliOptions {
  binDir?: string | undefined;
  timeoutMs: number;
  maxConcurrentCalls: number;
  metrics?: SlurmMetrics | undefined;
}

export interface SlurmCallCounts {
  sbatch: number;
  sacct: number;
  squeue: number;
  scancel: number;
  sinfo: number;
  scontrol: number;
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
  readonly calls: SlurmCallCounts = { sbatch: 0, sacct: 0, squeue: 0, scancel: 0, sinfo: 0, scontrol: 0 };

  private readonly submitEnv = submitEnvironment();

  constructor(
    private readonly options: SlurmCliOptions,
    private readonly thread: CommandThread = commandThread,
  ) {
    this.limiter = pLimit(options.maxConcurrentCalls);
  }

  async run(tool: SlurmTool, args: readonly string[], what: string): Promise<string> {
    const file = this.options.binDir ? join(this.options.binDir, tool) : tool;
    this.calls[tool]++;
    const call = async (): Promise<string> => {
      const started = performance.now();
      // Started off the event loop (exec/command-thread.ts); stdin is /dev/null.
      const result = await this.thread.run({
        file,
        args,
        env: tool === 'sbatch' ? this.submitEnv : { ...definedOnly(process.env), SLURM_TIME_FORMAT: '%s' },
        timeoutMs: this.options.timeoutMs,
        maxBuffer: 256 * 1024 * 1024,
      });
      this.options.metrics?.slurmCall(tool, (performance.now() - started) / 1000, errorKindOf(result));
      if (result.failed) {
        const exitCode = typeof result.exitCode === 'number' ? result.exitCode : undefined;
        const stderr =
          String(result.stderr ?? '') || (result.timedOut ? '' : String(result.shortMessage ?? ''));
        throw new CommandError(tool, args, exitCode, stderr, Boolean(result.timedOut), what);
      }
      return String(result.stdout);
    };
    return tool === 'scontrol' ? call() : this.limiter(call);
  }

  /**
   * Whether the controller answers (`scontrol ping`): resolves when it is UP, throws naming the
   * controller that is not.
   */
  async ping(): Promise<void> {
    const out = await this.run('scontrol', ['ping'], 'failed to ping the Slurm controller');
    const problem = controllerProblem(out);
    if (problem) throw new Error(problem);
  }
}

/**
 * What `scontrol ping` says is wrong, if anything: the cluster answers while one controller (of a
 * primary and its backups) is UP.
 */
export function controllerProblem(pingOutput: string): string | undefined {
  const lines = pingOutput
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
  if (lines.some((line) => /\bUP\b/.test(line))) return undefined;
  return `no Slurm controller is up: ${lines.join('; ') || 'scontrol ping printed nothing'}`;
}

function definedOnly(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
}

/** What kind of failure a finished command was, if any. */
function errorKindOf(result: {
  failed: boolean;
  timedOut?: boolean;
  exitCode?: number | undefined;
}): SlurmErrorKind | undefined {
  if (!result.failed) return undefined;
  if (result.timedOut) return 'timeout';
  return typeof result.exitCode === 'number' ? 'exit' : 'spawn';
}
