import { csvField, quote, quoteAll } from '../shell/quote.js';
import type { Bind, ContainerPlan, ExecutorPlan } from './container-plan.js';

/**
 * The job script of a task (pure; golden-tested). Both launchers run this very script: `sbatch` on a
 * cluster, a child process on the gateway host. It runs the executors in order, each in its own
 * container, and records for each `exec-<n>/start`, `exec-<n>/end` and `exec-<n>/exit_code` in the
 * task directory, where the reconciler reads them. Nothing on the compute node calls the gateway.
 */

export type RuntimeFlavor = 'apptainer' | 'singularity' | 'bwrap-host';

export interface ContainerRuntime {
  flavor: RuntimeFlavor;
  /** The runtime's executable: a name on PATH or an absolute path. */
  executable: string;
  extraArgs: readonly string[];
}

export interface JobScriptInput {
  taskId: string;
  workDir: string;
  runtime: ContainerRuntime;
  plan: ContainerPlan;
  gpus: boolean;
}

/** Environment variable prefix through which the runtime passes variables into the container. */
export function envPrefix(flavor: RuntimeFlavor): string {
  return flavor === 'singularity' ? 'SINGULARITYENV_' : 'APPTAINERENV_';
}

export function renderJobScript(input: JobScriptInput): string {
  const { plan, runtime } = input;
  const lines = [
    '#!/bin/bash',
    '# Client values below are single-quoted on purpose: a `$` in them is text, never code.',
    '# shellcheck disable=SC2016',
    `# Job script of TES task ${input.taskId}, written by tes-gateway.`,
    '# Runs the executors one after another, each in a container, and records start time, end time',
    '# and exit code of each under exec-<n>/ in the task directory.',
    'set -u',
    `task_dir=${quote(input.workDir)}`,
    `runtime=${quote(runtime.executable)}`,
    'cd -- "$task_dir" || { echo "cannot enter the task directory $task_dir" >&2; exit 120; }',
    '',
    'stamp() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }',
    '# Write a result file whole: a reader never sees half of it.',
    'record() { printf \'%s\\n\' "$2" > "$1.tmp" && mv -f -- "$1.tmp" "$1"; }',
    '# The end of the script, however it ends: the reconciler then looks for the job in accounting soon.',
    'trap \'record job-end "$(stamp)"\' EXIT',
    '',
    'if ! command -v -- "$runtime" > /dev/null 2>&1; then',
    '  record system-error "the container runtime $runtime was not found on $(hostname); install it or set container.executable"',
    '  exit 127',
    'fi',
    `mkdir -p -- ${plan.executors.map((e) => `exec-${e.index}`).join(' ')}`,
    '',
    'mounts=(',
    ...plan.binds.map((b) => `  --mount ${quote(mountSpec(b))}`),
    ')',
    `options=(${quoteAll(execOptions(runtime, input.gpus))})`,
  ];
  for (const ex of plan.executors) lines.push('', ...renderExecutor(ex, runtime.flavor));
  lines.push('', 'exit 0', '');
  return lines.join('\n');
}

function execOptions(runtime: ContainerRuntime, gpus: boolean): string[] {
  const opts = ['exec', '--containall', '--cleanenv'];
  if (gpus) opts.push('--nv');
  return [...opts, ...runtime.extraArgs];
}

/** `--mount` value as Apptainer parses it: one CSV record, fields quoted when they need it. */
export function mountSpec(b: Bind): string {
  const fields = ['type=bind', csvField(`src=${b.src}`), csvField(`dst=${b.dst}`)];
  if (b.readOnly) fields.push('ro');
  return fields.join(',');
}

function renderExecutor(ex: ExecutorPlan, flavor: RuntimeFlavor): string[] {
  const dir = `exec-${ex.index}`;
  const prefix = envPrefix(flavor);
  const env = Object.entries(ex.env).map(([k, v]) => `${prefix}${k}=${quote(v)} `);
  const pwd = ex.workdir ? ` --pwd ${quote(ex.workdir)}` : '';
  const stdin = ex.stdinHost ? quote(ex.stdinHost) : '/dev/null';
  const lines = [
    `# executor ${ex.index}`,
    `record ${dir}/start "$(stamp)"`,
    `${env.join('')}"$runtime" "\${options[@]}"${pwd} "\${mounts[@]}" ${quote(ex.image)} ${quoteAll(ex.command)} \\`,
    `  < ${stdin} > ${dir}/stdout 2> ${dir}/stderr`,
    'rc=$?',
    `record ${dir}/end "$(stamp)"`,
    `record ${dir}/exit_code "$rc"`,
  ];
  if (ex.stdoutHost) lines.push(`cp -- ${dir}/stdout ${quote(ex.stdoutHost)}`);
  if (ex.stderrHost) lines.push(`cp -- ${dir}/stderr ${quote(ex.stderrHost)}`);
  if (!ex.ignoreError) lines.push('[ "$rc" -eq 0 ] || exit "$rc"');
  return lines;
}
