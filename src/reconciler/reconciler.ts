import { watch, type FSWatcher } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import type { ComputeDriver } from '../compute/driver.js';
import { firstExecutorStarted } from '../compute/executor-results.js';
import pLimit from 'p-limit';
import { arrayJobName } from '../compute/slurm/job-arrays.js';
import { jobNameFor } from '../compute/slurm/sbatch-args.js';
import { heldAdvice, meaningfulReason, phaseOf, vanishedJob, type JobStatus } from '../compute/job-end.js';
import { parseSubmitMarker } from '../compute/submit-marker.js';
import type { Logger } from '../logger.js';
import type { Enqueuer } from '../queue/jobs.js';
import type { TaskBrief, TaskStore, TransitionOptions, TransitionOutcome } from '../store/task-store.js';
import type { TesState } from '../tes/state.js';
import {
  endMarkerOf,
  endsDirOf,
  ledgerDirOf,
  TASK_FILE,
  taskDirOf,
  taskFile,
  type DirOwner,
} from '../tes/task-directory.js';
import { withLog, withSystemLogs } from '../tes/task-logs.js';
import { LeaseLostError, type LeaderLock } from '../store/leader-lock.js';
import type { ReconcilerMetrics } from '../observability/metrics.js';

export interface ReconcilerOptions {
  store: TaskStore;
  driver: ComputeDriver;
  queues: Enqueuer;
  lock: LeaderLock;
  logger: Logger;
  workRoot: string;
  /**
   * Whose task directories are: with `user` (identity.runAs user) the gateway cannot read them, so a
   * started job is RUNNING without a look at its executors' files, and the gateway's own files of a
   * task are read from its ledger (tes/task-directory.ts).
   */
  dirOwner?: DirOwner | undefined;
  pollIntervalMs: number;
  /** How long a job may be missing from accounting before the scheduler is asked whether it exists. */
  missingGraceMs: number;
  /**
   * How long a task whose job ended may stay active before its finalization is queued again,
   * replacing a finished queue job (FINALIZE_AGAIN_MS by default).
   */
  finalizeAgainMs?: number | undefined;
  /**
   * Leader-only upkeep (expiring finished tasks), started from a leader's tick at most once per
   * housekeepingIntervalMs. It runs beside the cycles, never delaying them; stop() aborts it and
   * waits for it.
   */
  housekeeping?: ((signal: AbortSignal) => Promise<void>) | undefined;
  housekeepingIntervalMs?: number | undefined;
  /** Each cycle's duration and the jobs it polled. */
  metrics?: ReconcilerMetrics | undefined;
}

/** Tasks whose reads and writes a cycle runs at once. */
const CYCLE_PARALLEL = 32;

/** Tasks a cycle goes through between two turns of the event loop. */
const CYCLE_SLICE = 500;

/**
 * A quiet task (below) is still read at least once in this many cycles, a share of them in each: what
 * a cycle skips is never older than that, even after a Redis failover lost a write it relied on.
 */
const REREAD_CYCLES = 10;

/** Task ids read at once by the lost-submission sweep. */
const LOST_PAGE = 500;

/**
 * How soon to look after a job script was seen to end (its end marker): accounting shows the end
 * within ~0.2 s. The markers of jobs that end together in this time are answered by one cycle.
 */
const FOLLOW_UP_MS = 300;

/**
 * Cycles hastened by job ends start at least this far apart (or the poll interval, if shorter):
 * while jobs end one after another, accounting is asked about once a second, not after each end;
 * sacct is a request to slurmdbd, which the whole site shares.
 */
const HASTENED_GAP_MS = 1000;

/**
 * Age after which a task waiting without a job is queued for submission again by the sweep. Far
 * beyond the instant between storing a task and enqueueing it; the enqueue is idempotent anyway.
 */
const LOST_SUBMISSION_MS = 10_000;

/**
 * How long a task whose job ended may stay active before its finalization is queued again, replacing
 * a finished queue job: after a Redis failover a finalization can be on record as done while the
 * task's terminal write, made on the old master, was lost with it. Finalization is repeatable.
 */
const FINALIZE_AGAIN_MS = 30_000;

export interface CycleReport {
  active: number;
  ended: number;
  changed: number;
  /** Tasks the cycle did not read: quiet, and their jobs' accounting lines unchanged. */
  skipped: number;
}

/**
 * What handling a task's job did: moved its state, wrote or tried to write without a move, or found
 * nothing to do (quiet) in a way that holds for as long as the job's accounting line stays the same.
 */
type Handled = 'moved' | 'wrote' | 'quiet';

/** What of a job's accounting line the handling of a waiting or started job depends on. */
function lineOf(status: JobStatus): string {
  return [status.jobId, status.rawState, status.reason, status.jobName, status.node, status.startTime].join(
    '\n',
  );
}

/**
 * The one loop that maps the cluster back to TES. Only the leader polls; each cycle is one batched
 * status query for every active job. A failed query changes nothing; a job absent from accounting is
 * not finished until the scheduler confirms it does not know it either. It reads tasks without their
 * requests (TaskBrief): a task's size costs the cycle nothing. States move forward (see
 * tes/state.ts), but for one named move back: a job that had started and is seen waiting again was
 * requeued by Slurm, and its task goes back to QUEUED with a note saying so (`requeue`).
 *
 * Two leaders never write at once: a cycle runs holding the leader lease, which is renewed while it
 * runs however slow sacct is, and the cycle stops before its next write once the lease may have gone
 * (LeaderLock.lost). Every change is a compare-and-set on the state the cycle read, so a write made
 * from a read that another writer has since overtaken does nothing.
 *
 * An accounting record is taken for a task's job only when its job name is the task's (or, for an
 * array element, the task's array's): after losing its state the controller gives out ids again, and
 * a new job with a running job's id must not end or move another task. Such a task's job is gone
 * (vanishedJob).
 */
export class Reconciler {
  private timer: NodeJS.Timeout | undefined;
  /** When the timer's cycle starts (epoch ms). */
  private dueAt = Infinity;
  /** When the last cycle started (epoch ms). */
  private lastStart = 0;
  private running: Promise<void> | undefined;
  private stopped = false;
  private ticks = 0;
  /** Set by a cycle that saw a job script end while Slurm still ran the job: look again soon. */
  private endingSoon = false;
  /** Set by an end marker that came while a cycle ran: the next one follows soon. */
  private woken = false;
  /**
   * The work root's end markers (tes/task-directory.ts ENDS_DIR), left by job scripts run by the
   * service account; undefined when tasks run as their owners, whose jobs cannot write there.
   */
  private readonly endsDir: string | undefined;
  private watcher: FSWatcher | undefined;
  /** Cycles run as leader with active jobs (for the benchmark). */
  readonly stats = { cycles: 0 };
  /** Last pending reason written per task, so the logs are not rewritten each cycle. */
  private readonly reasons = new Map<string, string>();
  /**
   * Job id and accounting name seen to be the task's own, by task: the array marker is read once per
   * job, and a record under another name (the id given out again later) is checked afresh.
   */
  private readonly ownJobs = new Map<string, string>();
  /** When each task's job was last sent to finalization, to send again one that stays active. */
  private readonly finalizing = new Map<string, number>();
  /**
   * Tasks whose last handling was quiet, with the accounting line it answered. While the line stays
   * the same, nothing else can give the reconciler work on them: it alone moves a task to
   * INITIALIZING or RUNNING or back to QUEUED, a cancel (CANCELING) is for the workers, and a new
   * submission changes the job id. So a cycle skips reading them, but for a share of them each time
   * (REREAD_CYCLES). Forgotten when the lease was taken afresh: another process may have led since.
   */
  private readonly quiet = new Map<string, string>();
  /** The lease's fresh takes when `quiet` was last known to hold (LeaderLock.takes). */
  private quietTakes = -1;
  private housekeepingRun: Promise<void> | undefined;
  private housekeepingStartedAt = -Infinity;
  private readonly housekeepingAbort = new AbortController();

  constructor(private readonly o: ReconcilerOptions) {
    this.endsDir = o.dirOwner === 'user' ? undefined : endsDirOf(o.workRoot);
  }

  start(): void {
    this.runTick();
    void this.watchEnds();
  }

  /** Runs the next cycle in `delayMs`, or keeps the one already due sooner. */
  private schedule(delayMs: number): void {
    if (this.stopped) return;
    const at = Date.now() + delayMs;
    if (this.timer) {
      if (this.dueAt <= at) return;
      clearTimeout(this.timer);
    }
    this.dueAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.runTick();
    }, delayMs);
  }

  private runTick(): void {
    if (this.stopped || this.running) return;
    // Cycles start one interval apart, however long each takes: a job's end is seen within one
    // interval of reaching accounting, and sooner when its end marker wakes a cycle.
    const started = Date.now();
    this.lastStart = started;
    this.woken = false;
    this.running = this.tick().finally(() => {
      this.running = undefined;
      if (this.endingSoon || this.woken) this.hasten();
      else this.schedule(Math.max(0, this.o.pollIntervalMs - (Date.now() - started)));
    });
  }

  /** A job has ended, or is about to be seen ending: the next cycle comes soon (HASTENED_GAP_MS). */
  private hasten(): void {
    const gap = Math.min(HASTENED_GAP_MS, this.o.pollIntervalMs);
    this.schedule(Math.max(FOLLOW_UP_MS, this.lastStart + gap - Date.now()));
  }

  /**
   * Watches the end markers' folder: a job script's end starts a cycle FOLLOW_UP_MS later (with
   * every other end in that time), and no sooner than HASTENED_GAP_MS after the last began. Where
   * the folder cannot be watched (its filesystem sends no events, or the host's inotify watches ran
   * out), each cycle still reads it (pass).
   */
  private async watchEnds(): Promise<void> {
    const dir = this.endsDir;
    if (!dir) return;
    const unwatched = (err: unknown): void =>
      this.o.logger.warn(
        { err, dir },
        'job ends are not watched: each is seen at the next poll of accounting, up to ' +
          `${this.o.pollIntervalMs} ms later`,
      );
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      if (this.stopped) return;
      this.watcher = watch(dir, { persistent: false }, () => this.onEndMarker());
      this.watcher.on('error', (err) => {
        unwatched(err);
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch (err) {
      unwatched(err);
    }
  }

  private onEndMarker(): void {
    if (this.running) this.woken = true;
    else this.hasten();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
    this.housekeepingAbort.abort();
    await this.running;
    await this.housekeepingRun;
    await this.o.lock.release().catch(() => undefined);
  }

  private async tick(): Promise<void> {
    try {
      if (!(await this.o.lock.acquire())) {
        this.o.metrics?.reconcilerIdle();
        return;
      }
      this.startHousekeeping();
      const started = performance.now();
      // cycle() renews the lease just taken: one more short script, and the benchmark can time it.
      const report = await this.cycle();
      this.o.metrics?.reconcilerCycle((performance.now() - started) / 1000, report.active);
      if (++this.ticks % 10 === 0) await this.requeueLostSubmissions();
    } catch (err) {
      if (err instanceof LeaseLostError) {
        this.o.logger.warn(
          { err },
          'reconciler cycle stopped: the leader lease may have gone to another gateway',
        );
      } else {
        this.o.logger.error({ err }, 'reconciler cycle failed; no task state was changed by it');
      }
    }
  }

  /** Starts the housekeeping when it is due and not already running. */
  private startHousekeeping(): void {
    const { housekeeping, housekeepingIntervalMs = 60_000 } = this.o;
    if (!housekeeping || this.housekeepingRun || this.stopped) return;
    if (Date.now() - this.housekeepingStartedAt < housekeepingIntervalMs) return;
    this.housekeepingStartedAt = Date.now();
    this.housekeepingRun = housekeeping(this.housekeepingAbort.signal)
      .catch((err: unknown) =>
        this.o.logger.error({ err }, 'housekeeping failed; it runs again next interval'),
      )
      .finally(() => (this.housekeepingRun = undefined));
  }

  /** Before each write: a cycle that may no longer lead stops, leaving the rest to the new leader. */
  private assertLeader(): void {
    if (this.o.lock.lost) throw new LeaseLostError('reconciler');
  }

  /**
   * A state change fenced by the leader's lease: made only if this process still leads when Redis
   * makes it. A leader paused past its lease (assertLeader passed just before the pause) thus never
   * writes over a new leader's work; its cycle stops instead.
   */
  private async write(
    record: TaskBrief,
    status: JobStatus,
    to: TesState,
    options: TransitionOptions,
  ): Promise<{ outcome: TransitionOutcome }> {
    const t = await this.o.store.transition(record.id, to, {
      ...options,
      fence: this.o.lock.fence,
      // Only while the task still has the job this change was decided from (the one polled, from the
      // jobs hash; not the record's, read later). After a Redis failover that lost the task's
      // submission, a cycle that read the old master and writes to the new one would otherwise move
      // a task that has no job to follow (it would stay RUNNING for good); left as the new master
      // has it, its submission is made again, adopting the job (queue/processors/submit.ts).
      withJob: status.jobId,
    });
    if (t.outcome === 'fenced') throw new LeaseLostError('reconciler');
    return t;
  }

  /**
   * One cycle as the leader, taking (or renewing) the lease first, as each tick does. Public so tests
   * and the benchmark can drive it; fails with LeaseLostError when another process leads.
   */
  async cycle(): Promise<CycleReport> {
    if (!(await this.o.lock.acquire())) throw new LeaseLostError('reconciler');
    return this.o.lock.hold(() => this.pass());
  }

  /** One pass over every active job, holding the lease. */
  private async pass(): Promise<CycleReport> {
    const { store, driver } = this.o;
    const passStarted = Date.now();
    const active = await store.activeJobs();
    this.endingSoon = false;
    if (active.size === 0) return { active: 0, ended: 0, changed: 0, skipped: 0 };
    const cycle = ++this.stats.cycles;
    if (this.o.lock.takes !== this.quietTakes) {
      this.quiet.clear();
      this.quietTakes = this.o.lock.takes;
    }
    const poll = await driver.poll([...new Set(active.values())]);
    for (const e of poll.errors) this.o.logger.warn({ record: e }, 'unreadable accounting record skipped');

    const startedIds = new Set<string>();
    const missing: TaskBrief[] = [];
    const reused: TaskBrief[] = [];
    let changed = 0;
    let ended = 0;
    const now = Date.now();
    for (const id of this.finalizing.keys()) if (!active.has(id)) this.finalizing.delete(id);
    for (const id of this.quiet.keys()) if (!active.has(id)) this.quiet.delete(id);
    // Each task's phase, decided once; the tasks to read are those not quiet since their line came.
    const seen = [...active].map(([taskId, jobId]) => {
      const status = poll.jobs.get(jobId);
      return { taskId, status, phase: status && phaseOf(status.state) };
    });
    const toRead: string[] = [];
    for (const { taskId, status, phase } of seen) {
      if (phase === 'started') startedIds.add(taskId);
      const skip =
        status !== undefined &&
        this.quiet.get(taskId) === lineOf(status) &&
        (cycle + taskId.charCodeAt(taskId.length - 1)) % REREAD_CYCLES !== 0;
      if (!skip) toRead.push(taskId);
    }
    const records = await store.getBriefs(toRead);
    // Each task's reads and writes are its own: they run beside the others', a few at a time, ended
    // jobs first, so that a job's end goes to finalization without waiting for the cycle's other work.
    const order = { ended: 0, started: 1, waiting: 2 } as const;
    const work = seen
      .flatMap(({ taskId, status, phase }) => {
        const record = records.get(taskId);
        return record ? [{ record, status, phase, rank: phase ? order[phase] : 3 }] : [];
      })
      .sort((a, b) => a.rank - b.rank);
    const limiter = pLimit(CYCLE_PARALLEL);
    const handle = async ({ record, status, phase }: (typeof work)[number]): Promise<void> => {
      if (!status || !phase) {
        missing.push(record);
        return;
      }
      if (!(await this.isOwnJob(record, status))) {
        reused.push(record);
        return;
      }
      let handled: Handled = 'wrote';
      switch (phase) {
        case 'waiting':
          handled = await this.onWaiting(record, status);
          break;
        case 'started':
          handled = await this.onStarted(record, status);
          break;
        case 'ended':
          ended++;
          await this.onEnded(record, status, now);
          return;
      }
      if (handled === 'moved') changed++;
      if (handled === 'quiet') this.quiet.set(record.id, lineOf(status));
      else this.quiet.delete(record.id);
    };
    // Most tasks need no I/O in a cycle (a job still waiting, nothing new to say), and promise chains
    // never give the event loop back: in slices, requests get answered between them.
    const outcomes: PromiseSettledResult<void>[] = [];
    for (let i = 0; i < work.length; i += CYCLE_SLICE) {
      if (i > 0) await new Promise((resolve) => setImmediate(resolve));
      const slice = work.slice(i, i + CYCLE_SLICE);
      outcomes.push(...(await Promise.allSettled(slice.map((w) => limiter(() => handle(w))))));
      if (outcomes.some((o) => o.status === 'rejected')) break;
    }
    // The first failure (a lost lease, Redis away) ends the cycle, once every task's work has settled.
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed) throw failed.reason;
    for (const record of reused) await this.onReused(record, active.get(record.id)!, poll.jobs);
    if (missing.length > 0) await this.onMissing(missing);
    this.endingSoon = await this.anyScriptEnded(startedIds, active, passStarted);
    return { active: active.size, ended, changed, skipped: active.size - toRead.length };
  }

  /**
   * An ended job: its task goes to finalization. One whose finalization was queued long ago and which
   * is still active is queued again, replacing the finished queue job (FINALIZE_AGAIN_MS).
   */
  private async onEnded(record: TaskBrief, status: JobStatus, now: number): Promise<void> {
    this.assertLeader();
    const since = this.finalizing.get(record.id);
    const again = since !== undefined && now - since > (this.o.finalizeAgainMs ?? FINALIZE_AGAIN_MS);
    const replaced = await this.o.queues.enqueue(
      'finalize',
      { taskId: record.id, status },
      { replaceFinished: again },
    );
    if (replaced) {
      this.o.logger.warn(
        { taskId: record.id, jobId: status.jobId },
        'a task whose job ended stayed active after its finalization ended (it failed every attempt, ' +
          'or its terminal write was lost in a Redis failover); it is finalized again',
      );
    }
    if (since === undefined || again) this.finalizing.set(record.id, now);
    this.forget(record.id);
  }

  private forget(taskId: string): void {
    this.quiet.delete(taskId);
    this.reasons.delete(taskId);
    this.ownJobs.delete(taskId);
  }

  /**
   * Whether an accounting record is the task's own job: its name is the one recorded with the task's
   * run at submission (the task's job name, or for an array element its array's). A task an older
   * gateway submitted has no name recorded: its submit marker tells its array
   * (compute/submit-marker.ts), read once per job. A launcher that reports no names (the local one)
   * gives out no id twice.
   */
  private async isOwnJob(record: TaskBrief, status: JobStatus): Promise<boolean> {
    const name = status.jobName;
    if (name === undefined) return true;
    // A burst's tasks all come new to a cycle: this answers each without a file read.
    if (record.run?.jobName !== undefined) return name === record.run.jobName;
    const seen = `${status.jobId} ${name}`;
    if (this.ownJobs.get(record.id) === seen) return true;
    let own = name === jobNameFor(record.id);
    if (!own && status.jobId.includes('_') && name.startsWith(arrayJobName(''))) {
      const ledgerDir = ledgerDirOf(this.o.workRoot, record.id, this.o.dirOwner ?? 'service');
      const marker = await readFile(taskFile(ledgerDir, TASK_FILE.submitAttempted), 'utf8').catch(
        () => undefined,
      );
      const array = marker === undefined ? undefined : parseSubmitMarker(marker).array;
      // Without the array line the array cannot be told; an array of this gateway's is taken as the task's.
      own = array === undefined || array.name === name;
    }
    if (own) this.ownJobs.set(record.id, seen);
    return own;
  }

  /**
   * Accounting shows the task's job id on another job: the controller lost its state and gave the id
   * out again, so the task's own job is gone. It ends as a vanished job (from its executors' files
   * when they finished).
   */
  private async onReused(
    record: TaskBrief,
    jobId: string,
    jobs: ReadonlyMap<string, JobStatus>,
  ): Promise<void> {
    this.assertLeader();
    this.o.logger.warn(
      { taskId: record.id, jobId, jobName: jobs.get(jobId)?.jobName },
      "the task's Slurm job id now names another job; its own job is gone",
    );
    await this.o.queues.enqueue('finalize', { taskId: record.id, status: vanishedJob(jobId, true) });
    this.forget(record.id);
  }

  /**
   * Whether a job Slurm still reports as started left its end marker: accounting will show the end
   * soon. One listing of the markers' folder, whatever the number of jobs. The markers of tasks not
   * active when the pass began (finalized, or gone) are removed, but for those made since: a task
   * submitted during the pass may have ended during it too.
   */
  private async anyScriptEnded(
    startedIds: ReadonlySet<string>,
    active: ReadonlyMap<string, string>,
    passStarted: number,
  ): Promise<boolean> {
    if (!this.endsDir) return false;
    const names = await readdir(this.endsDir).catch(() => [] as string[]);
    let soon = false;
    for (const name of names) {
      if (startedIds.has(name)) soon = true;
      if (active.has(name)) continue;
      const marker = endMarkerOf(this.o.workRoot, name);
      const made = await lstat(marker).then(
        (st) => st.mtimeMs,
        () => Infinity,
      );
      if (made < passStarted) await rm(marker, { force: true }).catch(() => undefined);
    }
    return soon;
  }

  /**
   * A waiting job: its task is QUEUED, or goes back to QUEUED if it had started (a requeue). Slurm's
   * pending reason goes to the system logs when there is one and it changes; "no reason" (`None`) is
   * not worth a line.
   */
  private async onWaiting(record: TaskBrief, status: JobStatus): Promise<Handled> {
    if (record.state === 'CANCELING') return 'quiet';
    const reason = meaningfulReason(status.reason);
    const advice = heldAdvice(reason, status.jobId);
    const note = reason
      ? `Slurm job ${status.jobId} is ${status.rawState}: ${reason}${advice ? `; ${advice}` : ''}`
      : '';
    if (record.state === 'INITIALIZING' || record.state === 'RUNNING') {
      const requeued = await this.requeue(record, status, reason);
      // The requeue's note already says why it waits: the same reason is not written again.
      if (requeued) this.reasons.set(record.id, note);
      return requeued ? 'moved' : 'wrote';
    }
    // Written when the reason changes, not every cycle; the map spares a look at the logs.
    const fresh =
      note !== '' && this.reasons.get(record.id) !== note && record.logs?.[0]?.system_logs?.at(-1) !== note;
    this.reasons.set(record.id, note);
    if (!fresh) return 'quiet';
    // A change to the same state writes the logs, unless the state changed meanwhile.
    this.assertLeader();
    await this.write(record, status, record.state, {
      from: [record.state],
      logs: withSystemLogs(record.logs, [note]),
    });
    return 'wrote';
  }

  /**
   * The one move back (tes/state.ts): Slurm put a job that had started back in its queue (REQUEUED,
   * REQUEUE_HOLD, pending again after a start, preempted and requeued). The task waits again, QUEUED,
   * and says why; it moves forward again when the job restarts.
   */
  private async requeue(record: TaskBrief, status: JobStatus, reason: string | undefined): Promise<boolean> {
    const advice = heldAdvice(reason, status.jobId);
    const note =
      `Slurm requeued job ${status.jobId}: now ${status.rawState}${reason ? ` (${reason})` : ''}` +
      (advice ? `; ${advice}` : '');
    this.assertLeader();
    const t = await this.write(record, status, 'QUEUED', {
      path: 'requeue',
      from: [record.state],
      logs: withSystemLogs(record.logs, [note]),
    });
    if (t.outcome === 'ok') this.o.logger.info({ taskId: record.id, jobId: status.jobId }, note);
    return t.outcome === 'ok';
  }

  private async onStarted(record: TaskBrief, status: JobStatus): Promise<Handled> {
    if (record.state === 'CANCELING' || record.state === 'RUNNING') return 'quiet';
    const workDir = record.run?.workDir ?? taskDirOf(this.o.workRoot, record.id);
    const to =
      this.o.dirOwner === 'user' || (await firstExecutorStarted(workDir)) ? 'RUNNING' : 'INITIALIZING';
    // Its executors' files, not accounting, will move it: it is looked at again next cycle.
    if (to === record.state) return 'wrote';
    const start = status.startTime
      ? new Date(status.startTime * 1000).toISOString()
      : new Date().toISOString();
    const logs = withLog(record.logs, { start_time: record.logs?.[0]?.start_time ?? start });
    const withNode = status.node
      ? withLog(logs, { metadata: { ...(logs[0]?.metadata ?? {}), node: status.node } })
      : logs;
    this.assertLeader();
    // Only from the state read: a move made meanwhile (a requeue, a cancel) is not overwritten.
    const t = await this.write(record, status, to, { from: [record.state], logs: withNode });
    return t.outcome === 'ok' ? 'moved' : 'wrote';
  }

  /** Jobs absent from accounting: young ones are just not recorded yet; old ones are checked. */
  private async onMissing(records: TaskBrief[]): Promise<void> {
    const now = Date.now();
    const old = records.filter(
      (r) => now - Date.parse(r.run?.submittedAt ?? r.creationTime) > this.o.missingGraceMs,
    );
    if (old.length === 0) return;
    const known = await this.o.driver.known(old.map((r) => r.run!.jobId!));
    for (const r of old) {
      const jobId = r.run!.jobId!;
      if (known.has(jobId)) continue;
      this.assertLeader();
      this.forget(r.id);
      await this.o.queues.enqueue('finalize', { taskId: r.id, status: vanishedJob(jobId) });
    }
  }

  /**
   * A task waiting without a job, LOST_SUBMISSION_MS after its creation, is queued for submission
   * again: the API process died between storing and enqueueing it, a worker died mid-staging often
   * enough that its queue job failed as stalled, or a Redis failover kept the finished queue job but
   * lost the write that recorded the job. QUEUED and INITIALIZING (a submission an older gateway began) are both
   * walked whole, in pages of LOST_PAGE ids. Enqueueing is idempotent while a submission is queued or
   * running, and a finished one is replaced; the submit processor skips tasks that have a job and
   * holds the task's lease while it submits. Runs every tenth cycle; public so tests can drive it.
   */
  async requeueLostSubmissions(): Promise<void> {
    const cutoff = Date.now() - LOST_SUBMISSION_MS;
    for (const state of ['QUEUED', 'INITIALIZING'] as const) {
      let after: string | undefined;
      for (;;) {
        const ids = await this.o.store.idsInState(state, LOST_PAGE, after);
        // Only the tasks without a job are read: at 10,000 queued tasks this sweep read them all.
        const jobless = await this.o.store.withoutJobs(ids);
        for (const record of (await this.o.store.getBriefs(jobless)).values()) {
          if (record.run?.jobId || Date.parse(record.creationTime) > cutoff) continue;
          await this.o.queues.enqueue('submit', { taskId: record.id }, { replaceFinished: true });
        }
        if (ids.length < LOST_PAGE) break;
        after = ids.at(-1);
      }
    }
  }
}
