import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { expandJobId } from '../../src/compute/slurm/job-arrays.js';
import { parseSubmitMarker } from '../../src/compute/submit-marker.js';
import { jobNameFor } from '../../src/compute/slurm/sbatch-args.js';
import { ledgerDirOf, TASK_FILE, taskFile, type DirOwner } from '../../src/tes/task-directory.js';

/**
 * What every fault test does around its fault: a steady burst of short tasks created through
 * whichever gateway answers, the wait until each accepted task has ended, and the two checks of
 * issue 12's fault tests, counted on the real cluster rather than taken from the gateway: every
 * accepted task ends COMPLETE, and each has exactly one Slurm job or array element.
 */

/** A task that runs about a second, so that jobs are running when the fault strikes. */
export function shortTask(image: string, name: string): unknown {
  return { name, executors: [{ image, command: ['sh', '-c', 'sleep 1; echo done'] }] };
}

export interface Burst {
  /** The ids of the tasks a gateway accepted (200 with an id), in order. */
  readonly ids: string[];
  /** The creation number `n` (as given to `body` and `headers`) an accepted task was made with. */
  numberOf(id: string): number | undefined;
  /** Creations refused or unanswered (a gateway down, Redis down): never counted as accepted. */
  refused(): number;
  /** Stops creating; resolves once the creations in flight have been answered. */
  stop(): Promise<void>;
}

/**
 * Creates tasks through the first of `bases()` that accepts each, `inFlight` creators each pausing
 * `pauseMs` between creations, until stopped. The default pace (about three tasks a second) keeps
 * the shared cluster's queue short while still forming job arrays. A refusal (any status but 200, a
 * reset connection) is waited out briefly and the creation tried again as a new task: only accepted
 * tasks count. `headers` adds request headers to creation n (a user's bearer token).
 */
export function startBurst(
  bases: () => string[],
  body: (n: number) => unknown,
  {
    inFlight = 2,
    pauseMs = 600,
    headers = () => ({}),
  }: { inFlight?: number; pauseMs?: number; headers?: (n: number) => Record<string, string> } = {},
): Burst {
  const ids: string[] = [];
  const numbers = new Map<string, number>();
  let refused = 0;
  let running = true;
  let n = 0;
  const creator = async (): Promise<void> => {
    while (running) {
      const k = n++;
      const id = await createThroughAny(bases(), body(k), headers(k));
      if (id) {
        ids.push(id);
        numbers.set(id, k);
      } else {
        refused++;
        await sleep(200);
      }
      await sleep(pauseMs);
    }
  };
  const creators = Array.from({ length: inFlight }, () => creator());
  return {
    ids,
    numberOf: (id) => numbers.get(id),
    refused: () => refused,
    async stop() {
      running = false;
      await Promise.all(creators);
    },
  };
}

async function createThroughAny(
  bases: string[],
  body: unknown,
  headers: Record<string, string>,
): Promise<string | undefined> {
  for (const base of bases) {
    try {
      const res = await fetch(`${base}/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
      });
      const json = (await res.json().catch(() => ({}))) as { id?: string };
      if (res.status === 200 && json.id) return json.id;
    } catch {
      // Refused, reset or timed out: that gateway (or its Redis) is down; try the next.
    }
  }
  return undefined;
}

export interface EndedTask {
  id: string;
  state: string;
  jobId: string | undefined;
  systemLogs: string[];
}

/**
 * Polls each task through `base()` until all are terminal or `timeoutMs` passes, then reads each in
 * full. Unanswered reads (a gateway or Redis restarting) are tried again on the next round.
 * `headersOf` adds request headers to the reads of a task (its owner's bearer token).
 */
export async function waitAllEnded(
  base: () => string,
  ids: readonly string[],
  timeoutMs: number,
  headersOf: (id: string) => Record<string, string> = () => ({}),
): Promise<EndedTask[]> {
  const terminal = new Set(['COMPLETE', 'EXECUTOR_ERROR', 'SYSTEM_ERROR', 'CANCELED', 'PREEMPTED']);
  const ended = new Set<string>();
  const deadline = Date.now() + timeoutMs;
  while (ended.size < ids.length && Date.now() < deadline) {
    for (const id of ids) {
      if (ended.has(id)) continue;
      const task = await readTask(base(), id, 'MINIMAL', headersOf(id));
      if (task && terminal.has(task.state)) ended.add(id);
    }
    if (ended.size < ids.length) await sleep(1_000);
  }
  const out: EndedTask[] = [];
  for (const id of ids) {
    const task = await readTask(base(), id, 'FULL', headersOf(id));
    out.push({
      id,
      state: task?.state ?? 'UNREADABLE',
      jobId: task?.logs?.[0]?.metadata?.job_id,
      systemLogs: task?.logs?.flatMap((l) => l.system_logs ?? []) ?? [],
    });
  }
  return out;
}

interface TaskView {
  state: string;
  logs?: Array<{ metadata?: { job_id?: string }; system_logs?: string[] }>;
}

async function readTask(
  base: string,
  id: string,
  view: string,
  headers: Record<string, string>,
): Promise<TaskView | undefined> {
  try {
    const res = await fetch(`${base}/tasks/${id}?view=${view}`, {
      headers,
      signal: AbortSignal.timeout(10_000),
    });
    return res.status === 200 ? ((await res.json()) as TaskView) : undefined;
  } catch {
    return undefined;
  }
}

/** One line per task that did not end COMPLETE, with its state and system logs, for the assertion. */
export function notComplete(tasks: readonly EndedTask[]): string[] {
  return tasks
    .filter((t) => t.state !== 'COMPLETE')
    .map((t) => `${t.id}: ${t.state} ${JSON.stringify(t.systemLogs)}`);
}

interface JobRow {
  jobId: string;
  name: string;
}

/**
 * One line per task that has not exactly one Slurm job or array element, or whose one job is not the
 * one the gateway reports. A task's jobs are those named after it (`tes_<task id>`) and, when its
 * submit marker names an array (`array <array name> <index>`), the elements with that index
 * of every array of that name: an array submitted twice shows as two elements. Jobs are counted in
 * accounting (with duplicates: a job id the controller gave out twice counts twice) and in the
 * controller (jobs accounting has not recorded yet), all users' jobs in both. The controller must be
 * up. `dirOwner` says where the ledger is: the task directory (`service`), or the gateway's ledger
 * beside the owner's task directory (`user`, identity.runAs user).
 */
export async function wrongJobCounts(
  tasks: readonly EndedTask[],
  workRoot: string,
  sinceMinutes: number,
  dirOwner: DirOwner = 'service',
): Promise<string[]> {
  const rows = await clusterJobs(sinceMinutes);
  const wrong: string[] = [];
  for (const task of tasks) {
    const marker = readMarker(workRoot, task.id, dirOwner);
    const own = rows.filter(
      (r) =>
        r.name === jobNameFor(task.id) ||
        (marker !== undefined && r.name === marker.name && r.jobId.endsWith(`_${marker.index}`)),
    );
    const ids = own.map((r) => r.jobId);
    if (ids.length !== 1 || ids[0] !== task.jobId) {
      wrong.push(`${task.id}: jobs [${ids.join(', ')}], the gateway reports ${task.jobId ?? 'none'}`);
    }
  }
  return wrong;
}

async function clusterJobs(sinceMinutes: number): Promise<JobRow[]> {
  const accounted = parseRows(
    await run('sacct', [
      '-X',
      '-D',
      '-n',
      '-P',
      '-a',
      `--starttime=now-${sinceMinutes}minutes`,
      '--format=JobID,JobName',
    ]),
  );
  const known = new Set(accounted.map((r) => r.jobId));
  const controller = parseRows(await run('squeue', ['-h', '-t', 'all', '-o', '%i|%j']));
  return [...accounted, ...controller.filter((r) => !known.has(r.jobId))];
}

/** `id|name` lines; the elements of an array not yet started come collapsed (`12_[3-9]`) and are expanded. */
function parseRows(text: string): JobRow[] {
  return text
    .split('\n')
    .filter(Boolean)
    .flatMap((line) => {
      const [jobId = '', name = ''] = line.split('|');
      return expandJobId(jobId.trim()).map((id) => ({ jobId: id, name: name.trim() }));
    });
}

function readMarker(
  workRoot: string,
  taskId: string,
  dirOwner: DirOwner,
): { name: string; index: string } | undefined {
  try {
    const ledger = ledgerDirOf(workRoot, taskId, dirOwner);
    const array = parseSubmitMarker(readFileSync(taskFile(ledger, TASK_FILE.submitAttempted), 'utf8')).array;
    return array && { name: array.name, index: String(array.index) };
  } catch {
    return undefined;
  }
}

/**
 * Cancels every job still queued or running that belongs to these tasks (by name, or by the array
 * their markers name), so a failed test leaves nothing behind on the shared cluster. Best effort;
 * whoever's jobs they are (the test runs as root). `dirOwner` as for wrongJobCounts.
 */
export async function cancelJobsOf(
  taskIds: readonly string[],
  workRoot: string,
  dirOwner: DirOwner = 'service',
): Promise<void> {
  const names = new Set(taskIds.map(jobNameFor));
  for (const id of taskIds) {
    const marker = readMarker(workRoot, id, dirOwner);
    if (marker) names.add(marker.name);
  }
  try {
    const live = parseRows(await run('squeue', ['-h', '-o', '%A|%j']));
    const jobIds = [...new Set(live.filter((r) => names.has(r.name)).map((r) => r.jobId))];
    if (jobIds.length > 0) await run('scancel', jobIds);
  } catch {
    // The controller is down: afterAll of the test that stopped it starts it first.
  }
}

/**
 * The user accounting records each of these jobs (or array elements) under, one entry per record
 * (a job id given out twice has two); a job accounting has not recorded is missing.
 */
export async function jobUsers(jobIds: readonly string[]): Promise<Map<string, string[]>> {
  const users = new Map<string, string[]>();
  if (jobIds.length === 0) return users;
  const text = await run('sacct', [
    '-X',
    '-D',
    '-n',
    '-P',
    '-a',
    '--format=JobID,User',
    '-j',
    jobIds.join(','),
  ]);
  // `id|user` lines, read like `id|name` ones.
  for (const row of parseRows(text)) users.set(row.jobId, [...(users.get(row.jobId) ?? []), row.name]);
  return users;
}

function run(tool: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      tool,
      args,
      { timeout: 30_000, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) =>
        err
          ? reject(new Error(`${tool} ${args.join(' ')}: ${stderr.trim() || err.message}`))
          : resolve(stdout),
    ),
  );
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
