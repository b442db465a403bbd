import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { TES_STATES, type TesState } from '../tes/state.js';
import { CollectCache } from './collect-cache.js';
import { UserLabels } from './user-labels.js';

/**
 * The gateway's Prometheus metrics: one registry per process, passed to whatever records into it
 * (nothing here is global, so each test and each process has its own). The narrow interfaces below
 * are what each part sees; docs/operations.md lists every metric.
 *
 * Gauges of shared state (tasks by state, queue depth) are read on scrape, from Redis's counters, at
 * most once per `cacheMs` whatever the scrape rate. Every other metric is recorded where it happens.
 */

export const METRIC_PREFIX = 'tes_gateway_';

/** Why a Slurm command failed: it ran and exited non-zero, it ran too long, or it did not start. */
export type SlurmErrorKind = 'exit' | 'timeout' | 'spawn';

export interface SlurmMetrics {
  slurmCall(command: string, seconds: number, error?: SlurmErrorKind): void;
  /** Tasks one sbatch submitted: 1 for a task alone, the array's size for a burst. */
  submission(tasks: number): void;
}

export interface ReconcilerMetrics {
  reconcilerCycle(seconds: number, activeJobs: number): void;
  /** Another process leads: this one polls nothing. */
  reconcilerIdle(): void;
}

export interface FinalizeMetrics {
  /** From the job's end (as accounting reports it) to the task's terminal state in Redis. */
  taskEnded(lagSeconds: number): void;
}

export interface ImageMetrics {
  imageLookup(result: 'hit' | 'miss'): void;
  imagePulled(bytes: number): void;
  imagePullFailed(permanent: boolean): void;
}

export interface StagingMetrics {
  staged(direction: 'in' | 'out', scheme: string, bytes: number): void;
}

/** One queue's jobs by status, and the age of its oldest waiting job (none when nothing waits). */
export interface QueueDepth {
  queue: string;
  counts: Record<string, number>;
  oldestWaitingMs?: number | undefined;
}

export interface MetricsSources {
  /** Tasks in each state, from the store's state indexes. */
  taskStates?: (() => Promise<Record<TesState, number>>) | undefined;
  queues?: (() => Promise<QueueDepth[]>) | undefined;
}

export interface GatewayMetricsOptions {
  sources?: MetricsSources | undefined;
  /** How long a scrape-time read is reused. */
  cacheMs?: number | undefined;
  /** Per-user labels (auth on): the most users named before the rest count as `other`; 0: none. */
  userLabels?: number | undefined;
  /** Node.js process metrics (memory, event loop lag, GC); on unless a test turns them off. */
  processMetrics?: boolean | undefined;
}

type HttpSeries = Histogram.Internal<'route' | 'method' | 'status'>;

const SECONDS_FAST = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const SECONDS_SLURM = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const SECONDS_LAG = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800];

export class GatewayMetrics
  implements SlurmMetrics, ReconcilerMetrics, FinalizeMetrics, ImageMetrics, StagingMetrics
{
  readonly registry = new Registry();
  private readonly users: UserLabels | undefined;
  private readonly httpDuration: Histogram<'route' | 'method' | 'status'>;
  private readonly httpSeries = new Map<string, Map<string, Map<number, HttpSeries>>>();
  private readonly slurmCalls: Counter<'command'>;
  private readonly slurmDuration: Histogram<'command'>;
  private readonly slurmErrors: Counter<'command' | 'kind'>;
  private readonly submissionSize: Histogram;
  private readonly cycleDuration: Histogram;
  private readonly activeJobs: Gauge;
  private readonly endLag: Histogram;
  private readonly imageLookups: Counter<'result'>;
  private readonly pulledBytes: Counter;
  private readonly pullFailures: Counter<'kind'>;
  private readonly stagedBytes: Counter<'direction' | 'scheme'>;
  private readonly createdByUser: Counter<'user'> | undefined;
  private readonly collectErrors: Counter<'source'>;

  constructor(options: GatewayMetricsOptions = {}) {
    const registers = [this.registry];
    const cacheMs = options.cacheMs ?? 5000;
    if (options.processMetrics ?? true)
      collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });

    this.httpDuration = new Histogram({
      name: `${METRIC_PREFIX}http_request_duration_seconds`,
      help: 'Time to answer a TES API request, by route template, method and status (_count: requests)',
      labelNames: ['route', 'method', 'status'],
      buckets: SECONDS_FAST,
      registers,
    });
    this.slurmCalls = new Counter({
      name: `${METRIC_PREFIX}slurm_calls_total`,
      help: 'Slurm commands run (sbatch, sacct, squeue, scancel, sinfo, scontrol)',
      labelNames: ['command'],
      registers,
    });
    this.slurmDuration = new Histogram({
      name: `${METRIC_PREFIX}slurm_call_duration_seconds`,
      help: 'Time a Slurm command took, from start to exit (waiting for a free call slot excluded)',
      labelNames: ['command'],
      buckets: SECONDS_SLURM,
      registers,
    });
    this.slurmErrors = new Counter({
      name: `${METRIC_PREFIX}slurm_call_errors_total`,
      help: 'Slurm commands that failed, by kind: exit (non-zero), timeout, spawn (did not start)',
      labelNames: ['command', 'kind'],
      registers,
    });
    this.submissionSize = new Histogram({
      name: `${METRIC_PREFIX}slurm_submission_tasks`,
      help: 'Tasks submitted by one sbatch: 1 alone, the array size for a burst packed into a job array',
      buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000],
      registers,
    });
    this.cycleDuration = new Histogram({
      name: `${METRIC_PREFIX}reconciler_cycle_duration_seconds`,
      help: "Time of one reconciler cycle (the leader's batched status query and the changes it makes)",
      buckets: SECONDS_SLURM,
      registers,
    });
    this.activeJobs = new Gauge({
      name: `${METRIC_PREFIX}reconciler_active_jobs`,
      help: 'Cluster jobs the reconciler polled in its last cycle (0 in a process that does not lead)',
      registers,
    });
    this.endLag = new Histogram({
      name: `${METRIC_PREFIX}task_end_lag_seconds`,
      help: "Time from a job's end, as accounting reports it, to its task's terminal state",
      buckets: SECONDS_LAG,
      registers,
    });
    this.imageLookups = new Counter({
      name: `${METRIC_PREFIX}image_cache_lookups_total`,
      help: 'Images asked of the shared image cache: hit (already cached) or miss (pulled by this process)',
      labelNames: ['result'],
      registers,
    });
    this.pulledBytes = new Counter({
      name: `${METRIC_PREFIX}image_pulled_bytes_total`,
      help: 'Bytes of images pulled into the shared image cache (the size of each new .sif)',
      registers,
    });
    this.pullFailures = new Counter({
      name: `${METRIC_PREFIX}image_pull_failures_total`,
      help: 'Image pulls that failed after their retries, by kind: permanent or transient',
      labelNames: ['kind'],
      registers,
    });
    this.stagedBytes = new Counter({
      name: `${METRIC_PREFIX}staged_bytes_total`,
      help: 'Bytes staged for tasks: in (downloaded or written inputs) and out (delivered outputs), by scheme',
      labelNames: ['direction', 'scheme'],
      registers,
    });
    this.collectErrors = new Counter({
      name: `${METRIC_PREFIX}metrics_collect_errors_total`,
      help: 'Scrape-time reads that failed (their gauges are left out of that scrape; counted from the next), by source',
      labelNames: ['source'],
      registers,
    });
    const cap = options.userLabels ?? 0;
    if (cap > 0) {
      this.users = new UserLabels(cap);
      this.createdByUser = new Counter({
        name: `${METRIC_PREFIX}user_tasks_created_total`,
        help: `Tasks created, by owner: the first ${cap} users seen by this process, the others as "other"`,
        labelNames: ['user'],
        registers,
      });
    }
    this.watchTaskStates(options.sources?.taskStates, cacheMs);
    this.watchQueues(options.sources?.queues, cacheMs);
  }

  /** The Prometheus text exposition of every metric. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  httpRequest(route: string, method: string, status: number, seconds: number): void {
    // The series of each route, method and status, found again without building a key: this runs
    // for every request.
    let byMethod = this.httpSeries.get(route);
    if (!byMethod) this.httpSeries.set(route, (byMethod = new Map<string, Map<number, HttpSeries>>()));
    let byStatus = byMethod.get(method);
    if (!byStatus) byMethod.set(method, (byStatus = new Map<number, HttpSeries>()));
    let series = byStatus.get(status);
    if (!series) byStatus.set(status, (series = this.httpDuration.labels(route, method, String(status))));
    series.observe(seconds);
  }

  slurmCall(command: string, seconds: number, error?: SlurmErrorKind): void {
    this.slurmCalls.labels(command).inc();
    this.slurmDuration.labels(command).observe(seconds);
    if (error) this.slurmErrors.labels(command, error).inc();
  }

  submission(tasks: number): void {
    this.submissionSize.observe(tasks);
  }

  reconcilerCycle(seconds: number, activeJobs: number): void {
    this.cycleDuration.observe(seconds);
    this.activeJobs.set(activeJobs);
  }

  reconcilerIdle(): void {
    this.activeJobs.set(0);
  }

  taskEnded(lagSeconds: number): void {
    this.endLag.observe(Math.max(0, lagSeconds));
  }

  imageLookup(result: 'hit' | 'miss'): void {
    this.imageLookups.labels(result).inc();
  }

  imagePulled(bytes: number): void {
    this.pulledBytes.inc(bytes);
  }

  imagePullFailed(permanent: boolean): void {
    this.pullFailures.labels(permanent ? 'permanent' : 'transient').inc();
  }

  staged(direction: 'in' | 'out', scheme: string, bytes: number): void {
    this.stagedBytes.labels(direction, scheme).inc(bytes);
  }

  /** A task created by `user` (only counted with per-user labels on). */
  taskCreated(user: string): void {
    if (this.users && this.createdByUser) this.createdByUser.labels(this.users.labelOf(user)).inc();
  }

  private watchTaskStates(read: MetricsSources['taskStates'], cacheMs: number): void {
    if (!read) return;
    const cache = new CollectCache(read, cacheMs);
    const errors = this.collectErrors;
    new Gauge({
      name: `${METRIC_PREFIX}tasks`,
      help: "Tasks in each TES state, from the store's state indexes (the same in every process)",
      labelNames: ['state'],
      registers: [this.registry],
      async collect() {
        this.reset();
        try {
          const counts = await cache.get();
          for (const state of TES_STATES) this.labels(state).set(counts[state]);
        } catch {
          errors.labels('tasks').inc();
        }
      },
    });
  }

  private watchQueues(read: MetricsSources['queues'], cacheMs: number): void {
    if (!read) return;
    const cache = new CollectCache(read, cacheMs);
    const errors = this.collectErrors;
    const registers = [this.registry];
    // Both gauges read through one cache: one Redis read per interval serves them together.
    new Gauge({
      name: `${METRIC_PREFIX}queue_jobs`,
      help: 'Jobs in each work queue (submit, finalize, cancel) by status: waiting, active, delayed, failed',
      labelNames: ['queue', 'status'],
      registers,
      async collect() {
        this.reset();
        try {
          for (const q of await cache.get()) {
            for (const [status, n] of Object.entries(q.counts)) this.labels(q.queue, status).set(n);
          }
        } catch {
          errors.labels('queues').inc();
        }
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}queue_oldest_waiting_age_seconds`,
      help: 'Age of the oldest job waiting in each work queue (0 when none waits)',
      labelNames: ['queue'],
      registers,
      async collect() {
        this.reset();
        try {
          const now = Date.now();
          for (const q of await cache.get()) {
            const ageMs = q.oldestWaitingMs === undefined ? 0 : Math.max(0, now - q.oldestWaitingMs);
            this.labels(q.queue).set(ageMs / 1000);
          }
        } catch {
          // counted once, by the depth gauge
        }
      },
    });
  }
}
