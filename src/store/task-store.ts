import type { TesState, TransitionPath } from '../tes/state.js';
import type { RunInfo, TaskOwner, TaskRecord, TaskRequest, TesTaskLog, TesView } from '../tes/types.js';

/**
 * A task without its request: what the reconciler and the periodic sweeps read, so that the size of
 * a task's request (up to the body limit) costs them nothing.
 */
export type TaskBrief = Omit<TaskRecord, 'request'>;

export interface ListQuery {
  namePrefix?: string | undefined;
  /** Only this user's tasks. */
  owner?: string | undefined;
  state?: TesState | undefined;
  /** [key, value] pairs; an undefined or empty value matches any value of the key. */
  tags: Array<[string, string | undefined]>;
  pageSize: number;
  /** Exclusive upper bound: the walk continues below this task id. */
  cursor?: string | undefined;
  view: TesView;
  /**
   * Stored bytes (request and logs) a BASIC or FULL page stops at: the page ends early with a cursor.
   * A page holds at least one task.
   */
  maxBytes?: number | undefined;
}

export interface ListPage {
  records: TaskRecord[];
  /** Where the next page starts, when there may be one. */
  nextCursor?: string;
}

export type TransitionOutcome = 'ok' | 'same' | 'illegal' | 'missing' | 'fenced';

/**
 * A lease in Redis (store/leader-lock.ts, store/task-lease.ts) and its holder: a change fenced by it
 * is made only while the holder still has the lease, checked in the same atomic step as the change.
 * A holder paused for longer than its lease (a stalled event loop, a slow sbatch) then cannot write
 * after another process took the lease over.
 */
export interface Fence {
  key: string;
  owner: string;
}

export interface TransitionOptions {
  /**
   * Narrower legal sources than the state machine's (e.g. only from CANCELING), or `to` itself for a
   * write that keeps the state. A source that can never reach `to` throws IllegalTransitionError
   * (tes/state.ts sourcesFor).
   */
  from?: readonly TesState[];
  /**
   * Legal only while no cluster job is recorded for the task: a cancel that read "no job yet" must
   * not end a task whose submission recorded one meanwhile.
   */
  onlyWithoutJob?: boolean;
  /**
   * Legal only while this cluster job is the one recorded for the task: a change decided from what a
   * job did must not land on a task whose record of that job is gone (a Redis failover took the
   * submission back) or was replaced. Not with `job`.
   */
  withJob?: string | undefined;
  /** `requeue` for the reconciler's one move back to QUEUED (tes/state.ts); `forward` otherwise. */
  path?: TransitionPath;
  logs?: TesTaskLog[];
  run?: RunInfo;
  /**
   * The cluster job just submitted: recorded for the reconciler in the same atomic change, and only
   * if the change is made (a task cancelled meanwhile gets no job to poll).
   */
  job?: string;
  /** Made only while this lease is its holder's; outcome `fenced`, with nothing written, otherwise. */
  fence?: Fence | undefined;
  /**
   * With `fence`: the lease is freed in the same change when its fields are written (outcome `ok`, or
   * `same` to a state that is not terminal), sparing the holder a round trip to free it after.
   */
  releaseFence?: boolean;
}

export interface CreateOptions {
  logs?: TesTaskLog[];
  /** Who the task belongs to (absent when the gateway does not authenticate). */
  owner?: TaskOwner | undefined;
}

export interface TaskStore {
  create(request: TaskRequest, options?: CreateOptions): Promise<TaskRecord>;
  /**
   * Returns once every write this process has sent so far is held by as many Redis replicas as the
   * configuration asks (redis.sentinel.acceptReplicas), so a failover cannot take it back; at once
   * when none are asked for. StoreUnavailableError when they did not all acknowledge in time
   * (`create` itself refuses first when too few replicas are in sync).
   */
  awaitReplicas(): Promise<void>;
  get(taskId: string): Promise<TaskRecord | undefined>;
  /** Only the state, without parsing the task. */
  getState(taskId: string): Promise<TesState | undefined>;
  /** The state and the owner: what a MINIMAL read needs, in one round trip. */
  getHead(taskId: string): Promise<{ state: TesState; owner?: string } | undefined>;
  /** Several tasks in one round trip; absent ones are left out. */
  getMany(taskIds: readonly string[]): Promise<Map<string, TaskRecord>>;
  /** Several tasks without their requests, in one round trip; absent ones are left out. */
  getBriefs(taskIds: readonly string[]): Promise<Map<string, TaskBrief>>;
  /** The executor images of these tasks, without reading their requests. */
  imagesOf(taskIds: readonly string[]): Promise<Set<string>>;
  list(query: ListQuery): Promise<ListPage>;
  transition(
    taskId: string,
    to: TesState,
    options?: TransitionOptions,
  ): Promise<{ outcome: TransitionOutcome; previous?: TesState }>;
  setLogs(taskId: string, logs: TesTaskLog[]): Promise<void>;
  setRun(taskId: string, run: RunInfo): Promise<void>;
  /** Records the cluster job of a task; active jobs are what the reconciler polls. */
  setJob(taskId: string, jobId: string, run: RunInfo): Promise<void>;
  /** Forgets the job of a task that ended without the reconciler (cancelled during submission). */
  clearJob(taskId: string): Promise<void>;
  /** taskId -> job id for every non-terminal task that has a job. */
  activeJobs(): Promise<Map<string, string>>;
  /** Those of `taskIds` that are not among activeJobs: without a job, or no longer active. */
  withoutJobs(taskIds: readonly string[]): Promise<string[]>;
  countInState(state: TesState): Promise<number>;
  /** Up to `limit` ids of tasks in `state`, oldest first; with `after`, those after that id (a page's last). */
  idsInState(state: TesState, limit: number, after?: string): Promise<string[]>;
}
