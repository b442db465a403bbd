import { quote } from '../../shell/quote.js';
import { TASK_FILE } from '../../tes/task-directory.js';

/**
 * Bursts of tasks with the same Slurm request become one job array: one `sbatch` (one controller
 * RPC) for many tasks, as Slurm's high-throughput guide advises. Each array element runs a small
 * dispatcher that enters its task's directory and runs that task's own job script, exactly as a
 * single job would. Task i of array 123 is job `123_i`.
 */

/** Arguments that differ per task; everything else must match for tasks to share an array. */
const PER_TASK = /^--(job-name|comment|chdir|output|error)=/;

/** The part of an sbatch argument list that tasks sharing an array must have in common. */
export function arrayKey(args: readonly string[]): string {
  return JSON.stringify(args.slice(0, -1).filter((a) => !PER_TASK.test(a)));
}

export function arrayJobName(batchId: string): string {
  return `tes_array_${batchId}`;
}

/** sbatch arguments of an array of `count` tasks whose shared arguments are those of `args`. */
export function buildArrayArgs(
  args: readonly string[],
  batchId: string,
  count: number,
  dispatcher: string,
  logDir: string,
): string[] {
  return [
    ...args.slice(0, -1).filter((a) => !PER_TASK.test(a)),
    `--job-name=${arrayJobName(batchId)}`,
    '--comment=tes-array',
    `--array=0-${count - 1}`,
    `--chdir=${logDir}`,
    `--output=${logDir}/${batchId}_%a.out`,
    `--error=${logDir}/${batchId}_%a.err`,
    dispatcher,
  ];
}

/** The dispatcher script (pure): element i runs the job script of the i-th task directory. */
export function renderDispatcher(batchId: string, workDirs: readonly string[]): string {
  return [
    '#!/bin/bash',
    `# Job array ${batchId} of tes-gateway: element i runs the job script of the i-th task.`,
    'dirs=(',
    ...workDirs.map((d) => `  ${quote(d)}`),
    ')',
    'dir=${dirs[${SLURM_ARRAY_TASK_ID:?not run as an array element}]}',
    'cd -- "$dir" || exit 120',
    `exec bash ./${TASK_FILE.jobScript} > ${TASK_FILE.slurmOut} 2> ${TASK_FILE.slurmErr}`,
    '',
  ].join('\n');
}

/**
 * Job ids as sacct and squeue print array elements: `123_4`, or a collapsed run of pending elements
 * such as `123_[0-3,7,9-11%4]` (the `%4` is a limit on running elements, not an index).
 */
export function expandJobId(raw: string): string[] {
  const m = /^(\d+)_\[([^\]]+)\]$/.exec(raw);
  if (!m) return [raw];
  const [, base, spec] = m;
  const out: string[] = [];
  for (const part of spec!.split('%')[0]!.split(',')) {
    const range = /^(\d+)(?:-(\d+))?(?::(\d+))?$/.exec(part);
    if (!range) continue;
    const from = Number(range[1]);
    const to = range[2] === undefined ? from : Number(range[2]);
    const step = range[3] === undefined ? 1 : Number(range[3]);
    for (let i = from; i <= to && out.length < 100_000; i += step) out.push(`${base}_${i}`);
  }
  return out;
}
