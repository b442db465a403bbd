import { csvField, quote, quoteAll } from '../shell/quote.js';
import { EXECUTOR_FILE, executorDirName, TASK_FILE, type ExecutorFile } from '../tes/task-directory.js';
import {
  JOB_MADE_DIRS,
  PlanError,
  type Bind,
  type ContainerPlan,
  type ExecutorPlan,
  type StreamFile,
} from './container-plan.js';

/**
 * The job script of a task (pure; golden-tested). Both launchers run this very script: `sbatch` on a
 * cluster, a child process on the gateway host. It runs the executors in order, each in its own
 * container, and records for each `exec-<n>/start`, `exec-<n>/end` and `exec-<n>/exit_code` in the
 * task directory, where the reconciler reads them. Nothing on the compute node calls the gateway.
 *
 * The script runs with the rights of the job's user (the gateway's account, or with identity.runAs
 * user the task's owner: it then also checks the inputs named by path, `owned`), outside the
 * container, so it never follows a link the task made: every path it touches in a writable place after an executor ran (stdout and stderr
 * copies, a stdin the task could have written) is resolved first and must stay inside that place
 * and be a regular file; otherwise the script records `system-error` and stops (exit 121). Before
 * each executor, every input bound read-write in place from a writable root must still resolve
 * inside that root: other tasks write there, and a link one made since staging would otherwise carry
 * the bind elsewhere. (The runtime resolves the source again when it mounts it; the check narrows that
 * window to the moment before the executor starts, it cannot close it.)
 *
 * Every name the script writes in the task directory comes from tes/task-directory.ts, the same names
 * the gateway reads them by.
 */

const { jobEnd: JOB_END, systemError: SYSTEM_ERROR } = TASK_FILE;

/** The job script's exit code when it refuses a path the task made point elsewhere. */
export const REFUSED_PATH_EXIT = 121;

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
  /** The job has the user's login environment (slurm.loginEnvironment): its PATH is left as it is. */
  loginEnvironment?: boolean | undefined;
  /** The file the job leaves as it ends, to wake the reconciler (tes/task-directory.ts endMarkerOf). */
  endMarker?: string | undefined;
}

/** The PATH of a job that did not load a login environment: the system's programs only. */
export const JOB_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Environment variable prefix through which the runtime passes variables into the container. */
export function envPrefix(flavor: RuntimeFlavor): string {
  return flavor === 'singularity' ? 'SINGULARITYENV_' : 'APPTAINERENV_';
}

export function renderJobScript(input: JobScriptInput): string {
  const { plan, runtime } = input;
  const execDirs = plan.executors.map((e) => executorDirName(e.index)).join(' ');
  const lines = [
    '#!/bin/bash',
    '# Client values below are single-quoted on purpose: a `$` in them is text, never code.',
    '# shellcheck disable=SC2016',
    `# Job script of TES task ${input.taskId}, written by tes-gateway.`,
    '# Runs the executors one after another, each in a container, and records start time, end time',
    '# and exit code of each under exec-<n>/ in the task directory.',
    'set -u',
    "# What the job writes in the task directory is for the job's user only.",
    'umask 077',
    ...(input.loginEnvironment
      ? []
      : [
          "# The job started from a small fixed environment: the system's programs only.",
          `export PATH=${JOB_PATH}`,
        ]),
    `task_dir=${quote(input.workDir)}`,
    `runtime=${quote(runtime.executable)}`,
    'cd -- "$task_dir" || { echo "cannot enter the task directory $task_dir" >&2; exit 120; }',
    '',
    'stamp() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }',
    '# Write a result file whole: a reader never sees half of it.',
    'record() { printf \'%s\\n\' "$2" > "$1.tmp" && mv -f -- "$1.tmp" "$1"; }',
    '# A job Slurm requeued runs this script again: what an earlier run left must not pass for its results.',
    `rm -rf -- ${JOB_END} ${SYSTEM_ERROR} ${execDirs}`,
    ...(input.endMarker
      ? [
          '# The end of the script, however it ends: the reconciler, woken by the end marker, then looks',
          '# for the job in accounting.',
          `end_marker=${quote(input.endMarker)}`,
          `trap 'record ${JOB_END} "$(stamp)"; : 2> /dev/null > "$end_marker"' EXIT`,
        ]
      : [
          '# The end of the script, however it ends: the reconciler then looks for the job in accounting soon.',
          `trap 'record ${JOB_END} "$(stamp)"' EXIT`,
        ]),
    '',
    'if ! command -v -- "$runtime" > /dev/null 2>&1; then',
    `  record ${SYSTEM_ERROR} "the container runtime $runtime was not found on $(hostname); install it or set container.executable"`,
    '  exit 127',
    'fi',
    "# The container's /tmp and /var/tmp, and a folder for each executor's records: made here, where",
    '# the job runs, rather than by the gateway before it.',
    `mkdir -p -- ${quoteAll(JOB_MADE_DIRS)} ${execDirs}`,
    '',
    'mounts=(',
    ...plan.binds.map((b) => `  --mount ${quote(mountSpec(b))}`),
    ')',
    `options=(${quoteAll(execOptions(runtime, input.gpus))})`,
  ];
  const shared = plan.binds.filter((b) => b.shared);
  const owned = plan.binds.filter((b) => b.owned);
  const checks = plan.executors.some((ex) => ex.stdin?.place || ex.stdout || ex.stderr);
  if (checks || shared.length > 0 || owned.length > 0) lines.push('', ...RESOLVE);
  if (checks) lines.push(...INSIDE);
  if (shared.length > 0) lines.push(...IN_ROOT);
  if (owned.length > 0) {
    lines.push(...OWNED, '# The inputs named by path, checked as the user the job runs as.');
    for (const b of owned) lines.push(`owned ${quoteAll([b.owned!.field, b.src, b.owned!.root, b.kind])}`);
  }
  for (const ex of plan.executors) lines.push('', ...renderExecutor(ex, runtime.flavor, shared));
  lines.push('', 'exit 0', '');
  return lines.join('\n');
}

/**
 * Bash functions for paths the job touches in the task's writable places once an executor has ended.
 * By then nothing of the task runs any more (the container had its own PID namespace), so what is
 * checked stays as it was checked.
 */
const RESOLVE = [
  '# Record why the job stops, and stop it.',
  `refuse() { record ${SYSTEM_ERROR} "$1"; printf '%s\\n' "$1" >&2; exit ${REFUSED_PATH_EXIT}; }`,
  '# realpath of $2 (mode $1: -e must exist, -m may be missing) into $resolved, keeping a trailing newline.',
  'resolve() { resolved=$(realpath "$1" -- "$2" && printf x) && resolved=${resolved%$\'\\n\'x}; }',
];

const INSIDE = [
  '# inside FIELD PATH HOST_PATH PLACE PLACE_HOST_DIR: HOST_PATH lies in a writable place of the task,',
  '# where the task may have made links. Its real path, left in $resolved, must lie inside the place',
  '# and, if it exists, be a regular file.',
  'inside() {',
  '  local place',
  '  resolve -e "$5" || refuse "$1: the writable place $4 is missing on $(hostname)"',
  '  place=$resolved',
  '  resolve -m "$3" || refuse "$1: $2 cannot be resolved (a loop of symbolic links?); the gateway does not follow links a task makes"',
  '  case $resolved in',
  '  "$place"/*) ;;',
  '  *) refuse "$1: $2 resolves to $resolved, outside the task\'s writable place $4; the gateway does not follow links a task makes" ;;',
  '  esac',
  '  if [ -e "$resolved" ] && [ ! -f "$resolved" ]; then refuse "$1: $2 is not a regular file"; fi',
  '}',
];

const IN_ROOT = [
  '# in_root FIELD SOURCE ROOT dir|file: an input bound read-write in place still resolves inside its',
  '# writable root, and is still a directory or a regular file.',
  'in_root() {',
  '  local root',
  '  resolve -e "$3" || refuse "$1: the writable root $3 is missing on $(hostname)"',
  '  root=$resolved',
  '  resolve -e "$2" || refuse "$1: $2 is missing on $(hostname), or a loop of symbolic links"',
  '  case $resolved in',
  '  "$root" | "$root"/*) ;;',
  '  *) refuse "$1: $2 resolves to $resolved, outside the writable root $3; the gateway does not follow links a task makes" ;;',
  '  esac',
  '  if [ "$4" = dir ]; then',
  '    [ -d "$resolved" ] || refuse "$1: $2 is not a directory any more"',
  '  elif [ ! -f "$resolved" ]; then',
  '    refuse "$1: $2 is not a regular file any more"',
  '  fi',
  '}',
];

const OWNED = [
  '# owned FIELD SOURCE ROOT dir|file: an input of a task run as its owner. The gateway did not look at',
  '# it; the job, running as the owner, checks that the owner may reach it, that it lies inside its',
  '# allowed root, is of its kind, and may be read, before any executor runs.',
  'owned() {',
  '  local root',
  '  resolve -e "$3" || refuse "$1: the allowed root $3 does not exist on $(hostname), or $(id -un) may not reach it"',
  '  root=$resolved',
  '  resolve -e "$2" || refuse "$1: $2 does not exist, or $(id -un) may not reach it (the job runs as $(id -un), with its permissions)"',
  '  case $resolved in',
  '  "$root" | "$root"/*) ;;',
  '  *) refuse "$1: $2 resolves to $resolved, outside the allowed root $3" ;;',
  '  esac',
  '  if [ "$4" = dir ]; then',
  '    [ -d "$resolved" ] || refuse "$1: $2 is not a directory"',
  '    { [ -r "$resolved" ] && [ -x "$resolved" ]; } || refuse "$1: $(id -un) may not read the directory $2"',
  '  else',
  '    [ -f "$resolved" ] || refuse "$1: $2 is not a regular file (set type DIRECTORY for a folder)"',
  '    [ -r "$resolved" ] || refuse "$1: $(id -un) may not read $2"',
  '  fi',
  '}',
];

function execOptions(runtime: ContainerRuntime, gpus: boolean): string[] {
  const opts = ['exec', '--containall', '--cleanenv'];
  if (gpus) opts.push('--nv');
  return [...opts, ...runtime.extraArgs];
}

/**
 * An env name goes into the script unquoted (`APPTAINERENV_<name>=...`), so it is checked again here,
 * whatever validation ran before: a name that is not a plain variable name would be shell code.
 */
function checkEnvName(index: number, name: string): string {
  if (!ENV_NAME.test(name)) {
    throw new PlanError(
      `executors[${index}].env.${name}`,
      'must be a variable name of letters, digits and _, not starting with a digit',
    );
  }
  if (name === 'HOME') {
    throw new PlanError(`executors[${index}].env.HOME`, 'cannot be set: the container runtime manages HOME');
  }
  return name;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `--mount` value as Apptainer parses it: one CSV record, fields quoted when they need it. */
export function mountSpec(b: Bind): string {
  const fields = ['type=bind', csvField(`src=${b.src}`), csvField(`dst=${b.dst}`)];
  if (b.readOnly) fields.push('ro');
  return fields.join(',');
}

function renderExecutor(ex: ExecutorPlan, flavor: RuntimeFlavor, shared: readonly Bind[]): string[] {
  const dir = executorDirName(ex.index);
  const file = (name: ExecutorFile): string => `${dir}/${name}`;
  const prefix = envPrefix(flavor);
  const env = Object.entries(ex.env).map(([k, v]) => `${prefix}${checkEnvName(ex.index, k)}=${quote(v)} `);
  const pwd = ex.workdir ? ` --pwd ${quote(ex.workdir)}` : '';
  const lines = [`# executor ${ex.index}`];
  // Just before the executor: an earlier one, or another task, may have made a link there. (Before
  // the stdin check, which leaves its path in $resolved.)
  for (const b of shared) lines.push(`in_root ${quoteAll([b.shared!.field, b.src, b.shared!.root, b.kind])}`);
  let stdin = '/dev/null';
  if (ex.stdin?.place) {
    // An earlier executor may have left a link here.
    lines.push(checkInside(ex.index, 'stdin', ex.stdin));
    stdin = '"$resolved"';
  } else if (ex.stdin) stdin = quote(ex.stdin.host);
  lines.push(
    `record ${file(EXECUTOR_FILE.start)} "$(stamp)"`,
    `${env.join('')}"$runtime" "\${options[@]}"${pwd} "\${mounts[@]}" ${quote(ex.image)} ${quoteAll(ex.command)} \\`,
    `  < ${stdin} > ${file(EXECUTOR_FILE.stdout)} 2> ${file(EXECUTOR_FILE.stderr)}`,
    'rc=$?',
    `record ${file(EXECUTOR_FILE.end)} "$(stamp)"`,
    `record ${file(EXECUTOR_FILE.exitCode)} "$rc"`,
  );
  for (const stream of ['stdout', 'stderr'] as const) {
    const target = ex[stream];
    if (target)
      lines.push(checkInside(ex.index, stream, target), `cp -- ${file(EXECUTOR_FILE[stream])} "$resolved"`);
  }
  if (!ex.ignoreError) lines.push('[ "$rc" -eq 0 ] || exit "$rc"');
  return lines;
}

function checkInside(index: number, stream: string, file: StreamFile): string {
  // The planner gives every stdout and stderr a place; one without would be a bug, not a task's doing.
  if (!file.place) throw new Error(`executors[${index}].${stream}: ${file.path} has no writable place`);
  return `inside ${quoteAll([`executors[${index}].${stream}`, file.path, file.host, file.place.dst, file.place.src])}`;
}
