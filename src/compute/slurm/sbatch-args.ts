import { join } from 'node:path';
import type { TaskRequest } from '../../tes/types.js';

/**
 * The exact `sbatch` argument list for a task (pure; golden-tested). Every value is its own argv
 * element: no shell ever sees them.
 */

export const SLURM_BACKEND_PARAMETERS = [
  'partition',
  'account',
  'qos',
  'time_limit',
  'constraint',
  'gpus',
  'gres',
  'nodelist',
  'exclude',
  'reservation',
] as const;

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
}

export interface SbatchPlan {
  args: string[];
  partition?: string;
  /** Warnings for the task's system logs (resources clamped to a partition's limits). */
  warnings: string[];
  gpus: boolean;
}

export class ResourceLimitError extends Error {
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

export function buildSbatchArgs(
  taskId: string,
  task: TaskRequest,
  workDir: string,
  policy: SbatchPolicy,
): SbatchPlan {
  const warnings: string[] = [];
  const r = task.resources ?? {};
  const bp = r.backend_parameters ?? {};
  const gpus = Boolean(bp.gpus || (bp.gres && /gpu/.test(bp.gres)));

  let partition = bp.partition;
  if (!partition && policy.zonePartitions && r.zones && r.zones.length > 0) partition = r.zones[0];
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
    '--export=NONE',
    `--chdir=${workDir}`,
    `--output=${join(workDir, 'slurm.out')}`,
    `--error=${join(workDir, 'slurm.err')}`,
    '--nodes=1',
    '--ntasks=1',
    `--cpus-per-task=${cpus}`,
  ];
  if (memoryMiB !== undefined) args.push(`--mem=${memoryMiB}M`);
  if (r.disk_gb !== undefined && r.disk_gb > 0) args.push(`--tmp=${Math.ceil(r.disk_gb * 1024)}M`);
  if (partition) args.push(`--partition=${partition}`);
  if (bp.account) args.push(`--account=${bp.account}`);
  if (bp.qos) args.push(`--qos=${bp.qos}`);
  if (bp.time_limit) args.push(`--time=${bp.time_limit}`);
  if (bp.constraint) args.push(`--constraint=${bp.constraint}`);
  if (bp.gpus) args.push(`--gpus=${bp.gpus}`);
  if (bp.gres) args.push(`--gres=${bp.gres}`);
  if (bp.nodelist) args.push(`--nodelist=${bp.nodelist}`);
  if (bp.exclude) args.push(`--exclude=${bp.exclude}`);
  if (bp.reservation) args.push(`--reservation=${bp.reservation}`);
  args.push(...policy.extraArgs, join(workDir, 'job.sh'));
  return partition ? { args, partition, warnings, gpus } : { args, warnings, gpus };
}
