import { TASK_FILE, taskFile } from '../../tes/task-directory.js';
import type { TaskRequest } from '../../tes/types.js';
import type { PartitionDisks } from './sinfo.js';
import { PermanentError } from '../../errors.js';
import { checkSlurmParameter } from '../../tes/backend-parameters.js';
import { quoteAll } from '../../shell/quote.js';

/**
 * The exact `sbatch` argument list for a task (pure; golden-tested). Every value is its own argv
 * element: no shell ever sees them.
 */

// Which backend parameters exist and what their values may hold is a rule on requests, checked by the
// API before any job is made (tes/backend-parameters.ts); sbatch's arguments follow the same rules.
export {
  checkSlurmParameter,
  SLURM_BACKEND_PARAMETERS,
  type SlurmBackendParameter,
} from '../../tes/backend-parameters.js';

/** A backend parameter (or a partition chosen from a zone) that sbatch must not see: never retried. */
export class BackendParameterError extends PermanentError {
  constructor(message: string) {
    super(message);
    this.name = 'BackendParameterError';
  }
}

export interface PartitionLimits {
  maxCpus?: number | undefined;
  maxMemoryMiB?: number | undefined;
}

export interface SbatchPolicy {
  defaultPartition?: string | undefined;
  shortPartition?: string | undefined;
  shortMaxMinutes: number;
  gpuPartition?: string | undefined;
  preemptiblePartition?: string | undefined;
  zonePartitions: boolean;
  limits: Readonly<Record<string, PartitionLimits>>;
  overLimit: 'clamp' | 'refuse';
  extraArgs: readonly string[];
  /** What becomes of resources.disk_gb (see planDiskRequest); `auto` when unset. */
  diskRequests?: DiskRequests | undefined;
  /** In `auto`, a disk request no node of the partition can satisfy: `drop` (when unset) or `refuse`. */
  unsatisfiableDisk?: 'drop' | 'refuse' | undefined;
  /** The account of a task that names none: its owner's default (identity.policy). */
  defaultAccount?: string | undefined;
  /** Whether slurmd loads the job user's login environment (see jobEnvironmentArg). */
  loginEnvironment?: boolean | undefined;
}

/**
 * Where a job's environment comes from. By default sbatch runs in the small clean environment that
 * SlurmCli (or the run-as-user helper) gives it, and exports exactly that: nothing of the gateway's
 * own environment, and no login shell. `--export=NONE` instead makes slurmd start a login shell
 * (`su - <user>`) before every job to read the user's environment: seconds per job with heavy
 * dotfiles, and a job whose login outlasts Slurm's limit is requeued and held. Only sites whose
 * container runtime comes from the login environment (a module) need it (slurm.loginEnvironment).
 */
export function jobEnvironmentArg(loginEnvironment: boolean | undefined): string {
  return loginEnvironment ? '--export=NONE' : '--export=ALL';
}

export type DiskRequests = 'auto' | 'tmp' | 'ignore';

export interface SbatchPlan {
  args: string[];
  partition?: string;
  /** Warnings for the task's system logs (resources clamped to a partition's limits). */
  warnings: string[];
  gpus: boolean;
}

export class ResourceLimitError extends PermanentError {
  constructor(message: string) {
    super(message);
    this.name = 'ResourceLimitError';
  }
}

/** Slurm's job name marks the job as the task's: it is how a retry finds a job already submitted. */
export function jobNameFor(taskId: string): string {
  return `tes_${taskId}`;
}

/** Task names are free text; Slurm's comment field gets a tame version, for people reading squeue. */
export function sanitizeComment(name: string | undefined): string {
  return (name ?? '')
    .replace(/[^\w.@+-]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, 120);
}

/** `90`, `1:30:00`, `2-00:00:00` to minutes, for routing to the short partition. */
export function timeLimitMinutes(value: string): number | undefined {
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  const m = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(v);
  if (!m) return undefined;
  const [, d, a, b, c] = m;
  const days = Number(d ?? 0);
  if (c !== undefined) return days * 1440 + Number(a) * 60 + Number(b) + Number(c) / 60;
  if (d !== undefined) return days * 1440 + Number(a) * 60 + Number(b ?? 0);
  return Number(a) + Number(b ?? 0) / 60;
}

/** `2`, `0.5`, `1.33`: a GiB figure as a person would write it. */
function formatGiB(gib: number): string {
  return String(Number.isInteger(gib) ? gib : Number(gib.toPrecision(3)));
}

/** Does this task's sbatch request depend on the partitions' TmpDisk (so sinfo must be read)? */
export function needsPartitionDisks(task: TaskRequest, policy: SbatchPolicy): boolean {
  const disk = task.resources?.disk_gb;
  return (policy.diskRequests ?? 'auto') === 'auto' && disk !== undefined && disk > 0;
}

export interface DiskPlan {
  /** `--tmp=<MiB>M`, when the request goes to Slurm. */
  arg?: string;
  /** Why it does not, for the task's system logs. */
  note?: string;
}

/**
 * Whether `resources.disk_gb` becomes `sbatch --tmp`. Slurm refuses at submission a job whose --tmp no
 * node of its partition advertises, and many sites leave every node's TmpDisk at 0: a disk request
 * must not make an otherwise runnable task unrunnable.
 *
 * | slurm.diskRequests | what happens                                                                |
 * |--------------------|-----------------------------------------------------------------------------|
 * | tmp                | always --tmp (Slurm refuses what no node offers: SYSTEM_ERROR)             |
 * | ignore             | never --tmp; a note says the request was dropped                            |
 * | auto (default)     | --tmp when some node of the partition advertises enough TmpDisk; otherwise |
 * |                    | dropped with a note, or refused (SYSTEM_ERROR) with unsatisfiableDisk refuse |
 *
 * `auto` compares with the most TmpDisk any node of the partition advertises, which is exactly when
 * Slurm accepts the job: it then places it on a node that has the space. Until sinfo has answered (or
 * when it does not list the partition), `drop` drops the request with a note rather than risk a
 * refusal, and `refuse` passes it on for Slurm to judge.
 */
export function planDiskRequest(
  diskGb: number | undefined,
  partition: string | undefined,
  policy: SbatchPolicy,
  disks: PartitionDisks | undefined,
): DiskPlan {
  if (diskGb === undefined || !(diskGb > 0)) return {};
  const mib = Math.ceil(diskGb * 1024);
  const arg = `--tmp=${mib}M`;
  const what = `resources.disk_gb: ${formatGiB(diskGb)} GiB`;
  const mode = policy.diskRequests ?? 'auto';
  switch (mode) {
    case 'tmp':
      return { arg };
    case 'ignore':
      return { note: `${what} not requested from Slurm (slurm.diskRequests is ignore)` };
    case 'auto': {
      const refuse = policy.unsatisfiableDisk === 'refuse';
      const target = partition ?? disks?.defaultPartition;
      const tmp = target ? disks?.partitions.get(target) : undefined;
      if (!tmp) {
        if (refuse) return { arg };
        const unknown = !disks
          ? "the partitions' TmpDisk is not known yet (sinfo has not answered)"
          : target
            ? `sinfo lists no partition ${target}`
            : 'sinfo names no default partition';
        return { note: `${what} not requested from Slurm: ${unknown}` };
      }
      if (mib <= tmp.maxMB) return { arg };
      const most = tmp.minMB === tmp.maxMB ? '' : 'at most ';
      const why = `nodes of partition ${target} advertise ${most}${tmp.maxMB} MB of TmpDisk`;
      if (refuse) throw new ResourceLimitError(`${what} cannot be requested from Slurm: ${why}`);
      return { note: `${what} not requested from Slurm: ${why}` };
    }
    default: {
      const never: never = mode;
      throw new Error(`unknown slurm.diskRequests ${String(never)}`);
    }
  }
}

/**
 * `disks` is what sinfo last said of the partitions' TmpDisk (undefined: not known), which decides
 * whether `resources.disk_gb` becomes --tmp in `auto` mode; everything else comes from the task and
 * the policy.
 */
export function buildSbatchArgs(
  taskId: string,
  task: TaskRequest,
  workDir: string,
  policy: SbatchPolicy,
  disks?: PartitionDisks,
): SbatchPlan {
  const warnings: string[] = [];
  const r = task.resources ?? {};
  const bp = r.backend_parameters ?? {};
  const gpus = Boolean(bp.gpus || (bp.gres && /gpu/.test(bp.gres)));

  // Checked at creation too; a task stored before a rule existed meets it here.
  for (const [key, value] of Object.entries(bp)) {
    const problem = typeof value === 'string' ? checkSlurmParameter(key, value) : undefined;
    if (problem) throw new BackendParameterError(`resources.backend_parameters.${key}: ${problem}`);
  }
  let partition = bp.partition;
  if (!partition && policy.zonePartitions && r.zones && r.zones.length > 0) {
    partition = r.zones[0];
    const problem = partition ? checkSlurmParameter('partition', partition) : undefined;
    if (problem) throw new BackendParameterError(`resources.zones[0] (the partition): ${problem}`);
  }
  if (!partition && gpus) partition = policy.gpuPartition;
  if (!partition && r.preemptible === true) partition = policy.preemptiblePartition;
  if (!partition && policy.shortPartition && bp.time_limit) {
    const minutes = timeLimitMinutes(bp.time_limit);
    if (minutes !== undefined && minutes <= policy.shortMaxMinutes) partition = policy.shortPartition;
  }
  partition ??= policy.defaultPartition;

  let cpus = Math.max(1, Math.ceil(r.cpu_cores ?? 1));
  let memoryMiB = r.ram_gb !== undefined ? Math.ceil(r.ram_gb * 1024) : undefined;
  const limits = partition ? policy.limits[partition] : undefined;
  if (limits?.maxCpus !== undefined && cpus > limits.maxCpus) {
    const msg = `resources.cpu_cores asks for ${cpus} CPUs; partition ${partition} allows at most ${limits.maxCpus}`;
    if (policy.overLimit === 'refuse') throw new ResourceLimitError(msg);
    warnings.push(`${msg}: clamped to ${limits.maxCpus}`);
    cpus = limits.maxCpus;
  }
  if (limits?.maxMemoryMiB !== undefined && memoryMiB !== undefined && memoryMiB > limits.maxMemoryMiB) {
    const msg = `resources.ram_gb asks for ${memoryMiB} MiB; partition ${partition} allows at most ${limits.maxMemoryMiB} MiB`;
    if (policy.overLimit === 'refuse') throw new ResourceLimitError(msg);
    warnings.push(`${msg}: clamped to ${limits.maxMemoryMiB} MiB`);
    memoryMiB = limits.maxMemoryMiB;
  }

  const args = [
    '--parsable',
    `--job-name=${jobNameFor(taskId)}`,
    `--comment=${sanitizeComment(task.name) || 'tes-task'}`,
    jobEnvironmentArg(policy.loginEnvironment),
    `--chdir=${workDir}`,
    `--output=${taskFile(workDir, TASK_FILE.slurmOut)}`,
    `--error=${taskFile(workDir, TASK_FILE.slurmErr)}`,
    '--nodes=1',
    '--ntasks=1',
    `--cpus-per-task=${cpus}`,
  ];
  if (memoryMiB !== undefined) args.push(`--mem=${memoryMiB}M`);
  const disk = planDiskRequest(r.disk_gb, partition, policy, disks);
  if (disk.arg) args.push(disk.arg);
  if (disk.note) warnings.push(disk.note);
  if (partition) args.push(`--partition=${partition}`);
  const account = bp.account ?? policy.defaultAccount;
  if (account) args.push(`--account=${account}`);
  if (bp.qos) args.push(`--qos=${bp.qos}`);
  if (bp.time_limit) args.push(`--time=${bp.time_limit}`);
  if (bp.constraint) args.push(`--constraint=${bp.constraint}`);
  if (bp.gpus) args.push(`--gpus=${bp.gpus}`);
  if (bp.gres) args.push(`--gres=${bp.gres}`);
  if (bp.nodelist) args.push(`--nodelist=${bp.nodelist}`);
  if (bp.exclude) args.push(`--exclude=${bp.exclude}`);
  if (bp.reservation) args.push(`--reservation=${bp.reservation}`);
  args.push(...policy.extraArgs, taskFile(workDir, TASK_FILE.jobScript));
  return partition ? { args, partition, warnings, gpus } : { args, warnings, gpus };
}

/**
 * The `sbatch-command` file of a submission (pure): the command, quoted so that it runs as written
 * whatever a path or value holds; a task's own or an array's (tes/task-directory.ts).
 */
export function renderSbatchCommand(args: readonly string[]): string {
  return `sbatch ${quoteAll(args)}\n`;
}
