import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import pLimit from 'p-limit';
import { removeTaskDir, taskDirBytes } from './compute/remove-task-dir.js';
import type { Logger } from './logger.js';
import { JOB_KINDS, jobIdFor, type JobKind } from './queue/jobs.js';
import { RetentionStore, type ExpiredTask } from './store/retention.js';
import type { TesState } from './tes/state.js';
import { ARRAYS_DIR, HANDOVER_PREFIX, LEDGERS_DIR, ledgerDirOf, taskDirOf } from './tes/task-directory.js';
import type { UserHelper } from './run-as/user-helper.js';
import { userNameOf } from './run-as/user-names.js';
import { Keys } from './store/keys.js';
import { lstat, opendir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isTaskId } from './tes/task-id.js';

/**
 * Expiry of finished tasks: a terminal task whose end is older than the retention loses its task
 * directory, its queue jobs, then its record and index entries (one atomic script). The record goes
 * last, so that a removal cut short is found and finished by the next pass; nothing is left that no
 * record points to. A terminal task never changes state again, so what a pass read stays true while
 * it removes. The reconciler's leader runs it (`runFor`); `tes-gateway gc` runs whole sweeps.
 */

const DAY_MS = 24 * 3600 * 1000;

/** Task directories removed at once: file-system work, not Redis. */
const PARALLEL_REMOVALS = 16;

/**
 * How often the leader looks through the work root's folders (listings, and one Redis look-up per
 * old task directory): `.arrays/`, the files of job arrays submitted as the service account
 * (slurm-driver.ts), which belong to no one task; and task directories that no record points to.
 */
const FOLDERS_PRUNE_EVERY_MS = 3600_000;

/** Task records looked up at once (one pipeline of EXISTS) for directories found in the work root. */
const ORPHAN_LOOKUP_BATCH = 500;

/** The names the launcher gives them: `<batch>.sh`, `<batch>.sbatch-command`, `<batch>_<i>.out|err`. */
const ARRAY_FILE = /^[0-9a-f]{12}(\.sh|\.sbatch-command|_\d+\.(out|err))$/;

export interface TaskRetentionOptions {
  redis: Redis;
  prefix: string;
  /**
   * The queues whose jobs of an expired task are removed (TaskQueues). Absent for a survey, which
   * must not even make the queues' keys.
   */
  queues?: { queue(kind: JobKind): Queue } | undefined;
  workRoot: string;
  /**
   * Set when tasks run as their owners (identity.runAs user): a task directory is removed by the
   * helper as its owner, then the gateway's ledger of the task.
   */
  runAs?: UserHelper | undefined;
  /** retention.terminalTasksDays: 0 keeps finished tasks for ever. */
  terminalTasksDays: number;
  /** retention.batchSize: index entries read per pass. */
  batchSize: number;
  logger?: Logger | undefined;
  /** Told of each task whose removal failed (the command line prints them). */
  onFailure?: ((taskId: string, err: unknown) => void) | undefined;
}

/** What went, or would go. */
export interface ExpiryTally {
  count: number;
  byState: Partial<Record<TesState, number>>;
  oldestEndMs?: number;
  newestEndMs?: number;
  /** Bytes of task directories, when measured. */
  bytes: number;
  /** Tasks whose removal failed this time (they are tried again on the next sweep). */
  failed: number;
  /** Files of job arrays in `.arrays/` older than the retention, and their bytes. */
  arrayFiles: number;
  arrayBytes: number;
  /**
   * Task directories (and, run as owners, the gateway's ledgers of tasks) that no task record points
   * to, last changed before the cutoff, and their bytes.
   */
  orphanDirs: number;
  orphanBytes: number;
}

export interface PassReport {
  tally: ExpiryTally;
  examined: number;
  sweepDone: boolean;
}

export function emptyTally(): ExpiryTally {
  return {
    count: 0,
    byState: {},
    bytes: 0,
    failed: 0,
    arrayFiles: 0,
    arrayBytes: 0,
    orphanDirs: 0,
    orphanBytes: 0,
  };
}

function addTo(tally: ExpiryTally, task: ExpiredTask, bytes: number): void {
  tally.count++;
  tally.byState[task.state] = (tally.byState[task.state] ?? 0) + 1;
  tally.oldestEndMs = Math.min(tally.oldestEndMs ?? Infinity, task.endedMs);
  tally.newestEndMs = Math.max(tally.newestEndMs ?? -Infinity, task.endedMs);
  tally.bytes += bytes;
}

function merge(into: ExpiryTally, from: ExpiryTally): void {
  into.count += from.count;
  for (const [state, n] of Object.entries(from.byState) as Array<[TesState, number]>) {
    into.byState[state] = (into.byState[state] ?? 0) + n;
  }
  if (from.oldestEndMs !== undefined)
    into.oldestEndMs = Math.min(into.oldestEndMs ?? Infinity, from.oldestEndMs);
  if (from.newestEndMs !== undefined)
    into.newestEndMs = Math.max(into.newestEndMs ?? -Infinity, from.newestEndMs);
  into.bytes += from.bytes;
  into.failed += from.failed;
  into.arrayFiles += from.arrayFiles;
  into.arrayBytes += from.arrayBytes;
  into.orphanDirs += from.orphanDirs;
  into.orphanBytes += from.orphanBytes;
}

/** A folder of the work root named as a task, and who it belongs to. */
interface FoundDir {
  taskId: string;
  path: string;
  /** A ledger of the gateway's (`.gateway/<id>`), as opposed to the task directory itself. */
  ledger: boolean;
  uid: number;
}

export class TaskRetention {
  /** The leader's walk: its cursors carry over from one run to the next. */
  private readonly store: RetentionStore;
  private lastFoldersPruneMs = -Infinity;

  constructor(private readonly o: TaskRetentionOptions) {
    this.store = new RetentionStore(o.redis, o.prefix);
  }

  /** Whether anything ever expires (retention.terminalTasksDays > 0). */
  get enabled(): boolean {
    return this.o.terminalTasksDays > 0;
  }

  /** Tasks that ended before this moment are past the retention. */
  cutoffAt(nowMs: number): number {
    return nowMs - this.o.terminalTasksDays * DAY_MS;
  }

  /** One bounded pass: at most batchSize index entries read, and the expired ones among them removed. */
  async pass(nowMs = Date.now(), options: { measure?: boolean } = {}): Promise<PassReport> {
    if (!this.enabled) return { tally: emptyTally(), examined: 0, sweepDone: true };
    const cutoffMs = this.cutoffAt(nowMs);
    const batch = await this.store.nextBatch(cutoffMs, this.o.batchSize);
    const jobs = await this.queueJobsOf(batch.expired);
    const tally = emptyTally();
    const limit = pLimit(PARALLEL_REMOVALS);
    await Promise.all(
      batch.expired.map((task) =>
        limit(async () => {
          try {
            const bytes = await this.expireOne(
              task,
              jobs.get(task.taskId) ?? [],
              cutoffMs,
              options.measure === true,
            );
            if (bytes !== undefined) addTo(tally, task, bytes);
          } catch (err) {
            tally.failed++;
            this.o.onFailure?.(task.taskId, err);
            this.o.logger?.warn(
              { err, taskId: task.taskId },
              'could not expire a finished task; the next sweep tries again',
            );
          }
        }),
      ),
    );
    return { tally, examined: batch.examined, sweepDone: batch.sweepDone };
  }

  /**
   * The kinds of queue job each task still has, in one round trip: most finished tasks have none
   * left (the queues drop completed jobs after an hour), and a removal costs a script per job.
   */
  private async queueJobsOf(tasks: readonly ExpiredTask[]): Promise<Map<string, JobKind[]>> {
    const { queues } = this.o;
    const out = new Map<string, JobKind[]>();
    if (!queues || tasks.length === 0) return out;
    const pipeline = this.o.redis.pipeline();
    for (const task of tasks) {
      for (const kind of JOB_KINDS) pipeline.exists(queues.queue(kind).toKey(jobIdFor(kind, task.taskId)));
    }
    const replies = (await pipeline.exec()) ?? [];
    tasks.forEach((task, i) => {
      const kinds = JOB_KINDS.filter((_, k) => replies[i * JOB_KINDS.length + k]?.[1] === 1);
      if (kinds.length > 0) out.set(task.taskId, kinds);
    });
    return out;
  }

  /** Directory, queue jobs, then the record: returns the directory's bytes if the task went. */
  private async expireOne(
    task: ExpiredTask,
    jobKinds: readonly JobKind[],
    cutoffMs: number,
    measure: boolean,
  ): Promise<number | undefined> {
    const { queues } = this.o;
    if (!queues) throw new Error(`task ${task.taskId} not expired: this retention was given no queues`);
    // An index entry that is not a task id names no directory of the work root.
    const dir = isTaskId(task.taskId) ? taskDirOf(this.o.workRoot, task.taskId) : undefined;
    const bytes = measure && dir ? await taskDirBytes(dir) : 0;
    if (dir) await this.removeDirs(task, dir);
    // A job that a queue refuses to remove (one running now) fails the task's expiry, which the next
    // sweep tries again.
    const removed = await Promise.all(
      jobKinds.map((kind) => queues.queue(kind).remove(jobIdFor(kind, task.taskId))),
    );
    const stuck = jobKinds.filter((_, i) => removed[i] !== 1);
    if (stuck.length > 0) {
      throw new Error(`the ${stuck.join(', ')} job of task ${task.taskId} could not be removed (running?)`);
    }
    const outcome = await this.store.expire(task, cutoffMs);
    return outcome === 'expired' ? bytes : undefined;
  }

  private async removeDirs(task: ExpiredTask, dir: string): Promise<void> {
    const helper = this.o.runAs;
    if (!helper) {
      await removeTaskDir(dir);
      return;
    }
    // A task that never reached the helper has no directory of its owner's (and one without an owner
    // never ran as one).
    if (task.owner && (await exists(dir))) await helper.remove(task.owner, dir);
    await removeTaskDir(ledgerDirOf(this.o.workRoot, task.taskId, 'user'));
  }

  /**
   * Passes one after another until the sweep is done (every expired task found has gone), `budgetMs`
   * has passed, or the signal aborts: the leader's housekeeping. Each pass is bounded on its own.
   */
  async runFor(budgetMs: number, signal?: AbortSignal): Promise<ExpiryTally> {
    const total = emptyTally();
    const started = Date.now();
    while (this.enabled && !signal?.aborted) {
      const report = await this.pass();
      merge(total, report.tally);
      if (report.sweepDone || Date.now() - started >= budgetMs) break;
    }
    const now = Date.now();
    if (this.enabled && !signal?.aborted && now - this.lastFoldersPruneMs >= FOLDERS_PRUNE_EVERY_MS) {
      this.lastFoldersPruneMs = now;
      await this.pruneArrays(now, total, false, signal);
      await this.pruneOrphans(now, total, false, signal);
    }
    if (total.count > 0 || total.failed > 0 || total.arrayFiles > 0 || total.orphanDirs > 0) {
      this.o.logger?.info(
        {
          expired: total.count,
          byState: total.byState,
          failed: total.failed,
          arrayFiles: total.arrayFiles,
          orphanDirs: total.orphanDirs,
        },
        'finished tasks past retention.terminalTasksDays expired',
      );
    }
    return total;
  }

  /** Whole sweeps until nothing past the cutoff is left: `tes-gateway gc`. */
  async sweep(nowMs = Date.now()): Promise<ExpiryTally> {
    const total = emptyTally();
    for (;;) {
      const report = await this.pass(nowMs, { measure: true });
      merge(total, report.tally);
      if (report.sweepDone) break;
    }
    if (this.enabled) {
      await this.pruneArrays(nowMs, total, false);
      await this.pruneOrphans(nowMs, total, false);
    }
    return total;
  }

  /**
   * Removes (or, for a survey, counts) the files in `.arrays/` last changed before the cutoff. None
   * is needed by a job any more, even by an element still pending: Slurm keeps its own copy of a
   * submitted script, and writes an element's output file anew when it starts.
   */
  private async pruneArrays(
    nowMs: number,
    tally: ExpiryTally,
    dryRun: boolean,
    signal?: AbortSignal,
  ): Promise<void> {
    const dir = join(this.o.workRoot, ARRAYS_DIR);
    for await (const file of oldFiles(dir, (name) => ARRAY_FILE.test(name), this.cutoffAt(nowMs), signal)) {
      if (!dryRun) await rm(file.path, { force: true });
      tally.arrayFiles++;
      tally.arrayBytes += file.bytes;
    }
  }

  /** What a sweep would remove, changing nothing: `tes-gateway gc --dry-run`. */
  async survey(nowMs = Date.now()): Promise<ExpiryTally> {
    const total = emptyTally();
    if (!this.enabled) return total;
    // A walk of its own, so that the leader's cursors are not moved.
    const store = new RetentionStore(this.o.redis, this.o.prefix);
    const cutoffMs = this.cutoffAt(nowMs);
    for (;;) {
      const batch = await store.nextBatch(cutoffMs, this.o.batchSize);
      for (const task of batch.expired) {
        const dir = isTaskId(task.taskId) ? taskDirOf(this.o.workRoot, task.taskId) : undefined;
        addTo(total, task, dir ? await taskDirBytes(dir) : 0);
      }
      if (batch.sweepDone) break;
    }
    await this.pruneArrays(nowMs, total, true);
    await this.pruneOrphans(nowMs, total, true);
    return total;
  }

  /**
   * Removes (or, for a survey, counts) the task directories of the work root that no task record
   * points to and that were last changed before the cutoff: left by a task whose record was lost (a
   * Redis failover or restore, a record deleted by hand). A record is always stored before its task's
   * directory is made, and expiry removes the directory before the record, so a directory without a
   * record is no task's. Run as owners, the gateway's ledgers of such tasks go too, and an owner's
   * task directory is removed by the helper as the user who owns it. The work root must be this
   * gateway's alone (one Redis prefix): another's task directories have no record here.
   */
  private async pruneOrphans(
    nowMs: number,
    tally: ExpiryTally,
    dryRun: boolean,
    signal?: AbortSignal,
  ): Promise<void> {
    const cutoffMs = this.cutoffAt(nowMs);
    const found = await this.oldTaskDirs(this.o.workRoot, false, cutoffMs, signal);
    if (this.o.runAs) {
      const ledgers = join(this.o.workRoot, LEDGERS_DIR);
      found.push(...(await this.oldTaskDirs(ledgers, true, cutoffMs, signal)));
      if (!dryRun) await dropOldHandovers(ledgers, cutoffMs, signal);
    }
    const keys = new Keys(this.o.prefix);
    for (let i = 0; i < found.length && !signal?.aborted; i += ORPHAN_LOOKUP_BATCH) {
      const batch = found.slice(i, i + ORPHAN_LOOKUP_BATCH);
      const pipeline = this.o.redis.pipeline();
      for (const dir of batch) pipeline.exists(keys.task(dir.taskId));
      const replies = (await pipeline.exec()) ?? [];
      for (const [k, dir] of batch.entries()) {
        const [err, exists] = replies[k] ?? [new Error('no reply'), undefined];
        if (err) throw err;
        if (exists !== 0) continue;
        try {
          const bytes = await taskDirBytes(dir.path);
          if (!dryRun) await this.removeOrphan(dir);
          tally.orphanDirs++;
          tally.orphanBytes += bytes;
        } catch (e) {
          tally.failed++;
          this.o.onFailure?.(dir.taskId, e);
          this.o.logger?.warn(
            { err: e, taskId: dir.taskId, path: dir.path },
            'could not remove a task directory that no task record points to; the next sweep tries again',
          );
        }
      }
    }
  }

  /** The folders in `parent` named as tasks and last changed before the cutoff. */
  private async oldTaskDirs(
    parent: string,
    ledger: boolean,
    cutoffMs: number,
    signal?: AbortSignal,
  ): Promise<FoundDir[]> {
    let listing;
    try {
      listing = await opendir(parent);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const found: FoundDir[] = [];
    for await (const entry of listing) {
      // A shutdown stops the walk; the next one starts over.
      if (signal?.aborted) break;
      if (!isTaskId(entry.name)) continue;
      const path = join(parent, entry.name);
      const st = await lstat(path).catch(() => undefined);
      if (!st || st.mtimeMs >= cutoffMs) continue;
      found.push({ taskId: entry.name, path, ledger, uid: st.uid });
    }
    return found;
  }

  private async removeOrphan(dir: FoundDir): Promise<void> {
    const helper = this.o.runAs;
    if (!helper || dir.ledger || dir.uid === process.getuid?.()) {
      await removeTaskDir(dir.path);
      return;
    }
    const user = await userNameOf(dir.uid);
    if (!user) throw new Error(`${dir.path} belongs to uid ${dir.uid}, which has no user entry`);
    await helper.remove(user, dir.path);
  }
}

/** Archives for the helper that a crash left behind (tes/task-directory.ts, HANDOVER_PREFIX). */
async function dropOldHandovers(ledgers: string, cutoffMs: number, signal?: AbortSignal): Promise<void> {
  const isHandover = (name: string): boolean => name.startsWith(HANDOVER_PREFIX);
  for await (const file of oldFiles(ledgers, isHandover, cutoffMs, signal))
    await rm(file.path, { force: true });
}

/** The regular files of `dir` whose names `matches` takes, last changed before the cutoff. */
async function* oldFiles(
  dir: string,
  matches: (name: string) => boolean,
  cutoffMs: number,
  signal?: AbortSignal,
): AsyncGenerator<{ path: string; bytes: number }> {
  let listing;
  try {
    listing = await opendir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for await (const entry of listing) {
    // A shutdown stops the walk; the next one starts over.
    if (signal?.aborted) break;
    if (!entry.isFile() || !matches(entry.name)) continue;
    const path = join(dir, entry.name);
    const st = await lstat(path).catch(() => undefined);
    if (st && st.mtimeMs < cutoffMs) yield { path, bytes: st.size };
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
