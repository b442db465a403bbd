import type { ComputeDriver } from '../compute/driver.js';
import { firstExecutorStarted, jobScriptEnded } from '../compute/executor-results.js';
import pLimit from 'p-limit';
import { meaningfulReason, phaseOf, vanishedJob, type JobStatus } from '../compute/job-end.js';
import type { Logger } from '../logger.js';
import type { Enqueuer } from '../queue/jobs.js';
import type { TaskBrief, TaskStore } from '../store/task-store.js';
import { taskDirOf } from '../tes/task-directory.js';
import { withLog, withSystemLogs } from '../tes/task-logs.js';
import type { LeaderLock } from '../store/leader-lock.js';

export interface ReconcilerOptions {
  store: TaskStore;
  driver: ComputeDriver;
  queues: Enqueuer;
  lock: LeaderLock;
  logger: Logger;
  workRoot: string;
  pollIntervalMs: number;
  /** How long a job may be missing from accounting before the scheduler is asked whether it exists. */
  missingGraceMs: number;
}

/** How soon to look again after a job script was seen to end: accounting shows it within ~0.2 s. */
const FOLLOW_UP_MS = 300;

export interface CycleReport {
  active: number;
  ended: number;
  changed: number;
}

/**
 * The one loop that maps the cluster back to TES. Only the leader polls; each cycle is one batched
 * status query for every active job. A failed query changes nothing; a job absent from accounting is
 * not finished until the scheduler confirms it does not know it either. It reads tasks without their
 * requests (TaskBrief): a task's size costs the cycle nothing. States move forward (see
 * tes/state.ts), but for one named move back: a job that had started and is seen waiting again was
 * requeued by Slurm, and its task goes back to QUEUED with a note saying so (`requeue`).
 */
export class Reconciler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private ticks = 0;
  /** Set by a cycle that saw a job script end while Slurm still ran the job: look again soon. */
  private endingSoon = false;
  /** Cycles run as leader with active jobs (for the benchmark). */
  readonly stats = { cycles: 0 };
  /** Last pending reason written per task, so the logs are not rewritten each cycle. */
  private readonly reasons = new Map<string, string>();

  constructor(private readonly o: ReconcilerOptions) {}

  start(): void {
    const tick = (): void => {
      if (this.stopped) return;
      // Cycles start one interval apart, however long each takes: a job's end is seen within one
      // interval of reaching accounting.
      const started = Date.now();
      this.running = this.tick().finally(() => {
        this.running = undefined;
        const next = this.endingSoon ? Math.min(FOLLOW_UP_MS, this.o.pollIntervalMs) : this.o.pollIntervalMs;
        const wait = Math.max(0, next - (Date.now() - started));
        if (!this.stopped) this.timer = setTimeout(tick, wait);
      });
    };
    tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    await this.o.lock.release().catch(() => undefined);
  }

  private async tick(): Promise<void> {
    try {
      if (!(await this.o.lock.acquire())) return;
      await this.cycle();
      if (++this.ticks % 10 === 0) await this.requeueLostSubmissions();
    } catch (err) {
      this.o.logger.error({ err }, 'reconciler cycle failed; no task state was changed by it');
    }
  }

  /** One pass over every active job. Public so tests and the benchmark can drive it. */
  async cycle(): Promise<CycleReport> {
    const { store, driver } = this.o;
    const active = await store.activeJobs();
    this.endingSoon = false;
    if (active.size === 0) return { active: 0, ended: 0, changed: 0 };
    this.stats.cycles++;
    const poll = await driver.poll([...new Set(active.values())]);
    for (const e of poll.errors) this.o.logger.warn({ record: e }, 'unreadable accounting record skipped');

    const ended: Array<{ record: TaskBrief; status: JobStatus }> = [];
    const started: TaskBrief[] = [];
    const missing: TaskBrief[] = [];
    let changed = 0;
    const records = await store.getBriefs([...active.keys()]);
    for (const [taskId, jobId] of active) {
      const record = records.get(taskId);
      if (!record) continue;
      const status = poll.jobs.get(jobId);
      if (!status) {
        missing.push(record);
        continue;
      }
      switch (phaseOf(status.state)) {
        case 'waiting':
          changed += await this.onWaiting(record, status);
          break;
        case 'started':
          changed += await this.onStarted(record, status);
          started.push(record);
          break;
        case 'ended':
          ended.push({ record, status });
          break;
      }
    }

    for (const { record, status } of ended) {
      await this.o.queues.enqueue('finalize', { taskId: record.id, status });
      this.reasons.delete(record.id);
    }
    if (missing.length > 0) await this.onMissing(missing);
    this.endingSoon = await this.anyScriptEnded(started);
    return { active: active.size, ended: ended.length, changed };
  }

  /** Jobs Slurm still reports as started whose script already ended: accounting will show it soon. */
  private async anyScriptEnded(started: readonly TaskBrief[]): Promise<boolean> {
    const limiter = pLimit(32);
    const ended = await Promise.all(
      started.map((r) => limiter(() => jobScriptEnded(r.run?.workDir ?? taskDirOf(this.o.workRoot, r.id)))),
    );
    return ended.includes(true);
  }

  /**
   * A waiting job: its task is QUEUED, or goes back to QUEUED if it had started (a requeue). Slurm's
   * pending reason goes to the system logs when there is one and it changes; "no reason" (`None`) is
   * not worth a line.
   */
  private async onWaiting(record: TaskBrief, status: JobStatus): Promise<number> {
    if (record.state === 'CANCELING') return 0;
    const reason = meaningfulReason(status.reason);
    const note = reason ? `Slurm job ${status.jobId} is ${status.rawState}: ${reason}` : '';
    if (record.state === 'INITIALIZING' || record.state === 'RUNNING') {
      const requeued = await this.requeue(record, status, reason);
      // The requeue's note already says why it waits: the same reason is not written again.
      if (requeued) this.reasons.set(record.id, note);
      return requeued ? 1 : 0;
    }
    // Written when the reason changes, not every cycle; the map spares a look at the logs.
    const fresh =
      note !== '' && this.reasons.get(record.id) !== note && record.logs?.[0]?.system_logs?.at(-1) !== note;
    this.reasons.set(record.id, note);
    if (!fresh) return 0;
    // A change to the same state writes the logs, unless the state changed meanwhile.
    await this.o.store.transition(record.id, record.state, {
      from: [record.state],
      logs: withSystemLogs(record.logs, [note]),
    });
    return 0;
  }

  /**
   * The one move back (tes/state.ts): Slurm put a job that had started back in its queue (REQUEUED,
   * REQUEUE_HOLD, pending again after a start, preempted and requeued). The task waits again, QUEUED,
   * and says why; it moves forward again when the job restarts.
   */
  private async requeue(record: TaskBrief, status: JobStatus, reason: string | undefined): Promise<boolean> {
    const note = `Slurm requeued job ${status.jobId}: now ${status.rawState}${reason ? ` (${reason})` : ''}`;
    const t = await this.o.store.transition(record.id, 'QUEUED', {
      path: 'requeue',
      from: [record.state],
      logs: withSystemLogs(record.logs, [note]),
    });
    if (t.outcome === 'ok') this.o.logger.info({ taskId: record.id, jobId: status.jobId }, note);
    return t.outcome === 'ok';
  }

  private async onStarted(record: TaskBrief, status: JobStatus): Promise<number> {
    if (record.state === 'CANCELING' || record.state === 'RUNNING') return 0;
    const workDir = record.run?.workDir ?? taskDirOf(this.o.workRoot, record.id);
    const to = (await firstExecutorStarted(workDir)) ? 'RUNNING' : 'INITIALIZING';
    if (to === record.state) return 0;
    const start = status.startTime
      ? new Date(status.startTime * 1000).toISOString()
      : new Date().toISOString();
    const logs = withLog(record.logs, { start_time: record.logs?.[0]?.start_time ?? start });
    const withNode = status.node
      ? withLog(logs, { metadata: { ...(logs[0]?.metadata ?? {}), node: status.node } })
      : logs;
    const t = await this.o.store.transition(record.id, to, { logs: withNode });
    return t.outcome === 'ok' ? 1 : 0;
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
      this.reasons.delete(r.id);
      await this.o.queues.enqueue('finalize', { taskId: r.id, status: vanishedJob(jobId) });
    }
  }

  /**
   * A task stored but never handed to the queue (the API process died in between) is queued again.
   * Enqueueing is idempotent by job id, and the submit processor skips tasks that have a job. Runs
   * every tenth cycle; public so tests can drive it.
   */
  async requeueLostSubmissions(): Promise<void> {
    const ids = await this.o.store.idsInState('QUEUED', 1000);
    const cutoff = Date.now() - 60_000;
    for (const record of (await this.o.store.getBriefs(ids)).values()) {
      if (record.run?.jobId || Date.parse(record.creationTime) > cutoff) continue;
      await this.o.queues.enqueue('submit', { taskId: record.id });
    }
  }
}
