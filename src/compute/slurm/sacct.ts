import { meaningfulReason, parseExitCode, parseSlurmState, type JobStatus } from '../job-end.js';

/**
 * The `sacct` query the reconciler runs once per cycle, and its parser, side by side. Output is
 * `--parsable2` text (sacct's JSON reports exit code 0 for failed jobs in 22.05) with epoch times.
 * Without `--duplicates`, sacct shows only the newest job of an id that the controller gave out twice
 * (after losing its state); the JobName field is how the reconciler tells whether that job is the
 * task's own.
 */

export const SACCT_FIELDS = [
  'JobID',
  'JobName',
  'State',
  'ExitCode',
  'Reason',
  'NodeList',
  'ElapsedRaw',
  'Start',
  'End',
  'TotalCPU',
] as const;

/**
 * `--allusers`: jobs run as their owners (identity.runAs user) are other users' jobs to the gateway's
 * account; where slurm.conf has `PrivateData=jobs`, that account needs an operator or coordinator
 * level to see them (docs/security.md).
 */
export function buildSacctArgs(jobIds: readonly string[]): string[] {
  return [
    '--allusers',
    '--parsable2',
    '--noheader',
    '-X',
    `--format=${SACCT_FIELDS.join(',')}`,
    `--jobs=${jobIds.join(',')}`,
  ];
}

/** Per-step memory of ended jobs (MaxRSS lives on the `.batch` step row). */
export const SACCT_USAGE_FIELDS = ['JobID', 'MaxRSS'] as const;

export function buildSacctUsageArgs(jobIds: readonly string[]): string[] {
  return [
    '--allusers',
    '--parsable2',
    '--noheader',
    '--noconvert',
    `--format=${SACCT_USAGE_FIELDS.join(',')}`,
    `--jobs=${jobIds.join(',')}`,
  ];
}

/**
 * The job of `user` with this name that started less than `minutes` ago, from accounting (`-X`: one
 * row per job or array element). A relative start time avoids any question of the controller's time
 * zone; `--user` keeps out other users' jobs (root's sacct shows everyone's).
 */
export function buildSacctLookupArgs(name: string, minutes: number, user: string): string[] {
  return [
    '-n',
    '-X',
    '-P',
    '-S',
    `now-${minutes}minutes`,
    `--user=${user}`,
    `--name=${name}`,
    '--format=JobIDRaw,JobID',
  ];
}

/**
 * The job id from a look-up's rows (`JobIDRaw|JobID`). An array's rows name its elements
 * (`5067_0`), each with its own raw id: the array's own id is the part of JobID before `_`.
 */
export function parseSacctLookup(text: string): string | undefined {
  for (const line of text.split('\n')) {
    const [, id] = line.trim().split('|');
    const base = id?.split('_')[0];
    if (base && /^\d+$/.test(base)) return base;
  }
  return undefined;
}

/**
 * The name accounting shows for a job whose own record has not reached it yet (seen for a few
 * seconds after submission, in a pending row). Such a row is not yet the job's record: its name and
 * state are Slurm's stand-ins, so the job is left out as not recorded yet.
 */
const UNRECORDED_NAME = 'allocation';

export interface SacctParse {
  jobs: Map<string, JobStatus>;
  /** Lines that could not be read; each fails only itself. */
  errors: string[];
}

export function parseSacct(text: string): SacctParse {
  const jobs = new Map<string, JobStatus>();
  const errors: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const f = line.split('|');
    if (f.length !== SACCT_FIELDS.length) {
      errors.push(`expected ${SACCT_FIELDS.length} fields, got ${f.length}: ${line}`);
      continue;
    }
    const [jobId, name, rawState, exit, reason, node, elapsed, start, end, totalCpu] = f as [
      string,
      ...string[],
    ];
    if (jobId.includes('.')) continue; // a step row
    if (name === UNRECORDED_NAME) continue;
    const state = parseSlurmState(rawState!);
    if (!state) {
      errors.push(`unknown job state ${JSON.stringify(rawState)} for job ${jobId}`);
      continue;
    }
    const status: JobStatus = { jobId, state, rawState: rawState!.trim(), exitCode: parseExitCode(exit!) };
    // What tells this task's job from another given the same id after the controller lost its state.
    if (name) status.jobName = name;
    const why = meaningfulReason(reason);
    if (why) status.reason = why;
    if (node && node !== 'None assigned' && node !== '(null)') status.node = node;
    if (elapsed && /^\d+$/.test(elapsed)) status.elapsedSeconds = Number(elapsed);
    if (start && /^\d+$/.test(start)) status.startTime = Number(start);
    if (end && /^\d+$/.test(end)) status.endTime = Number(end);
    const cpu = parseDuration(totalCpu ?? '');
    if (cpu !== undefined) status.cpuTimeSeconds = cpu;
    // Requeued jobs have several records: the last one is the current.
    jobs.set(jobId, status);
  }
  return { jobs, errors };
}

/** MaxRSS in bytes per job id, from the step rows (`123.batch`). */
export function parseSacctUsage(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [id, rss] = line.split('|');
    if (!id || !rss) continue;
    const jobId = id.split('.')[0]!;
    const bytes = parseBytes(rss);
    if (bytes !== undefined) out.set(jobId, Math.max(out.get(jobId) ?? 0, bytes));
  }
  return out;
}

/** `[DD-][HH:]MM:SS[.mmm]` to seconds. */
export function parseDuration(raw: string): number | undefined {
  const m = /^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$/.exec(raw.trim());
  if (!m) return undefined;
  return Number(m[1] ?? 0) * 86400 + Number(m[2] ?? 0) * 3600 + Number(m[3]) * 60 + Number(m[4]);
}

function parseBytes(raw: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)$/.exec(raw.trim());
  if (!m) return undefined;
  const unit = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[
    m[2] as '' | 'K' | 'M' | 'G' | 'T'
  ];
  return Math.round(Number(m[1]) * unit);
}
