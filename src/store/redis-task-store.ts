import type { Redis } from 'ioredis';
import { newTaskId } from '../tes/task-id.js';
import { isTerminal, sourcesFor, TES_STATES, type TesState } from '../tes/state.js';
import type { RunInfo, TaskOwner, TaskRecord, TaskRequest, TesTaskLog } from '../tes/types.js';
import { BacklogFullError } from '../errors.js';
import { Keys } from './keys.js';
import { ReplicaAcks } from './replica-acks.js';
import { CREATE_TASK, LIST_PAGE, TRANSITION } from './scripts.js';
import type {
  CreateOptions,
  ListPage,
  ListQuery,
  TaskBrief,
  TaskStore,
  TransitionOptions,
  TransitionOutcome,
} from './task-store.js';

/** The most index entries one list call inspects, so one call never holds Redis for long. */
const LIST_SCAN_BUDGET = 20_000;

/** Ids read per pipeline by the batched reads. */
const CHUNK = 1000;

/** Entries of the jobs index asked for per HSCAN by activeJobs (a hint to Redis, not a limit). */
const ACTIVE_JOBS_SLICE = 1000;

interface ScriptedRedis extends Redis {
  tesCreate(...args: Array<string | number>): Promise<string>;
  tesTransition(...args: Array<string | number>): Promise<[TransitionOutcome, string]>;
  tesList(...args: Array<string | number>): Promise<string[]>;
}

export interface RedisTaskStoreOptions {
  prefix: string;
  /** Tasks waiting in QUEUED beyond which creation answers 429. */
  maxBacklog: number;
  /** Index entries one list call may inspect (tests make it small). */
  listScanBudget?: number | undefined;
  /** Replicas that must hold a write before awaitReplicas returns, and how long to wait for them. */
  replicas?: { count: number; timeoutMs: number } | undefined;
}

export class RedisTaskStore implements TaskStore {
  readonly keys: Keys;
  private readonly r: ScriptedRedis;
  private readonly acks: ReplicaAcks | undefined;

  constructor(
    readonly redis: Redis,
    private readonly options: RedisTaskStoreOptions,
  ) {
    this.keys = new Keys(options.prefix);
    redis.defineCommand('tesCreate', { lua: CREATE_TASK });
    redis.defineCommand('tesTransition', { lua: TRANSITION });
    redis.defineCommand('tesList', { lua: LIST_PAGE });
    this.r = redis as ScriptedRedis;
    const replicas = options.replicas;
    this.acks = replicas && new ReplicaAcks(redis, replicas.count, replicas.timeoutMs);
  }

  async create(request: TaskRequest, options: CreateOptions = {}): Promise<TaskRecord> {
    await this.acks?.ready();
    const id = newTaskId();
    const creationTime = new Date().toISOString();
    const tagKeys: string[] = [];
    for (const [key, value] of Object.entries(request.tags ?? {})) {
      tagKeys.push(this.keys.tagKey(key), this.keys.tagValue(key, value));
    }
    const owner = options.owner;
    if (owner) tagKeys.push(this.keys.owner(owner.user));
    const keys = [this.keys.task(id), this.keys.all, this.keys.state('QUEUED'), this.keys.names, ...tagKeys];
    const logs = options.logs && options.logs.length > 0 ? JSON.stringify(options.logs) : '';
    const images = [...new Set(request.executors.map((e) => e.image))];
    const result = await this.r.tesCreate(
      keys.length,
      ...keys,
      id,
      JSON.stringify(request),
      creationTime,
      request.name ?? '',
      this.options.maxBacklog,
      logs,
      JSON.stringify(images),
      owner?.user ?? '',
      owner?.groups && owner.groups.length > 0 ? JSON.stringify(owner.groups) : '',
    );
    if (result === 'full') throw new BacklogFullError(this.options.maxBacklog, 30);
    return {
      id,
      state: 'QUEUED',
      request,
      creationTime,
      ...(options.logs ? { logs: options.logs } : {}),
      ...(owner ? { owner } : {}),
    };
  }

  async awaitReplicas(): Promise<void> {
    await this.acks?.await();
  }

  async get(taskId: string): Promise<TaskRecord | undefined> {
    const fields = await this.redis.hmget(this.keys.task(taskId), ...RECORD_FIELDS);
    return toRecord(taskId, fields);
  }

  async getHead(taskId: string): Promise<{ state: TesState; owner?: string } | undefined> {
    const [state, owner] = await this.redis.hmget(this.keys.task(taskId), 'state', 'owner');
    if (!state) return undefined;
    return owner ? { state: state as TesState, owner } : { state: state as TesState };
  }

  async getState(taskId: string): Promise<TesState | undefined> {
    const state = await this.redis.hget(this.keys.task(taskId), 'state');
    return state ? (state as TesState) : undefined;
  }

  async getMany(taskIds: readonly string[]): Promise<Map<string, TaskRecord>> {
    const out = new Map<string, TaskRecord>();
    await this.readFields(taskIds, RECORD_FIELDS, (id, fields) => {
      const record = toRecord(id, fields);
      if (record) out.set(id, record);
    });
    return out;
  }

  async getBriefs(taskIds: readonly string[]): Promise<Map<string, TaskBrief>> {
    const out = new Map<string, TaskBrief>();
    await this.readFields(taskIds, ['state', 'created', 'logs', 'run', 'owner', 'groups'], (id, fields) => {
      const [state, created, logs, run, owner, groups] = fields;
      if (!state || !created) return;
      const brief: TaskBrief = { id, state: state as TesState, creationTime: created };
      if (logs) brief.logs = JSON.parse(logs) as TesTaskLog[];
      if (run) brief.run = JSON.parse(run) as RunInfo;
      if (owner) brief.owner = ownerOf(owner, groups);
      out.set(id, brief);
    });
    return out;
  }

  async imagesOf(taskIds: readonly string[]): Promise<Set<string>> {
    const images = new Set<string>();
    const older: string[] = [];
    await this.readFields(taskIds, ['images'], (id, [list]) => {
      if (list) for (const image of JSON.parse(list) as string[]) images.add(image);
      else older.push(id);
    });
    // Tasks stored before the images field existed: their requests, once.
    for (const record of (await this.getMany(older)).values()) {
      for (const e of record.request.executors) images.add(e.image);
    }
    return images;
  }

  /** HMGET of the same fields for many tasks, a pipeline per chunk of ids. */
  private async readFields(
    taskIds: readonly string[],
    fields: readonly string[],
    each: (id: string, values: Array<string | null>) => void,
  ): Promise<void> {
    for (let i = 0; i < taskIds.length; i += CHUNK) {
      const chunk = taskIds.slice(i, i + CHUNK);
      const pipeline = this.redis.pipeline();
      for (const id of chunk) pipeline.hmget(this.keys.task(id), ...fields);
      const replies = (await pipeline.exec()) ?? [];
      chunk.forEach((id, j) => {
        const [err, values] = replies[j] ?? [];
        if (err) throw err;
        each(id, values as Array<string | null>);
      });
    }
  }

  async list(query: ListQuery): Promise<ListPage> {
    const sets: string[] = [];
    if (query.state) sets.push(this.keys.state(query.state));
    if (query.owner !== undefined) sets.push(this.keys.owner(query.owner));
    for (const [key, value] of query.tags) {
      sets.push(value === undefined || value === '' ? this.keys.tagKey(key) : this.keys.tagValue(key, value));
    }
    const keys = [this.keys.names, this.keys.all, ...sets];
    const withDocs = query.view !== 'MINIMAL';
    const reply = await this.r.tesList(
      keys.length,
      ...keys,
      query.cursor ?? '',
      query.pageSize,
      query.namePrefix ?? '',
      this.keys.taskPrefix,
      withDocs ? '1' : '0',
      this.options.listScanBudget ?? LIST_SCAN_BUDGET,
      query.maxBytes ?? 0,
    );
    const records: TaskRecord[] = [];
    for (let i = 1; i + 5 < reply.length; i += 6) {
      const id = reply[i]!;
      const state = reply[i + 1]!;
      if (withDocs) {
        // A task deleted between walk and read is left out rather than failing the page.
        const record = toRecord(id, [
          state,
          reply[i + 2]!,
          reply[i + 3]!,
          reply[i + 4]!,
          null,
          reply[i + 5]!,
        ]);
        if (record) records.push(record);
      } else {
        records.push({ id, state: state as TesState, request: { executors: [] }, creationTime: '' });
      }
    }
    const next = reply[0];
    return next ? { records, nextCursor: next } : { records };
  }

  async transition(
    taskId: string,
    to: TesState,
    options: TransitionOptions = {},
  ): Promise<{ outcome: TransitionOutcome; previous?: TesState }> {
    // A caller may narrow the legal sources, never widen them: the state machine has the last word.
    const from = sourcesFor(taskId, to, options.from, options.path);
    if (options.job !== undefined && options.withJob !== undefined) {
      throw new Error(
        `transition of task ${taskId}: a job to record and a job to require exclude each other`,
      );
    }
    const fields: string[] = [];
    if (options.logs) fields.push('logs', JSON.stringify(options.logs));
    if (options.run) fields.push('run', JSON.stringify(options.run));
    const fence = options.fence;
    const keys = [this.keys.task(taskId), this.keys.jobs, ...(fence ? [fence.key] : [])];
    const [outcome, previous] = await this.r.tesTransition(
      keys.length,
      ...keys,
      taskId,
      to,
      from.join(','),
      this.keys.statePrefix,
      [
        isTerminal(to) ? 't' : '',
        options.onlyWithoutJob ? 'n' : '',
        options.withJob !== undefined ? 'j' : '',
        options.releaseFence ? 'r' : '',
      ].join(''),
      options.job ?? options.withJob ?? '',
      fence?.owner ?? '',
      ...fields,
    );
    return previous ? { outcome, previous: previous as TesState } : { outcome };
  }

  async setLogs(taskId: string, logs: TesTaskLog[]): Promise<void> {
    await this.redis.hset(this.keys.task(taskId), 'logs', JSON.stringify(logs));
  }

  async setRun(taskId: string, run: RunInfo): Promise<void> {
    await this.redis.hset(this.keys.task(taskId), 'run', JSON.stringify(run));
  }

  async setJob(taskId: string, jobId: string, run: RunInfo): Promise<void> {
    await this.redis
      .multi()
      .hset(this.keys.task(taskId), 'run', JSON.stringify({ ...run, jobId }))
      .hset(this.keys.jobs, taskId, jobId)
      .exec();
  }

  async clearJob(taskId: string): Promise<void> {
    await this.redis.hdel(this.keys.jobs, taskId);
  }

  async activeJobs(): Promise<Map<string, string>> {
    // In slices, not one HGETALL: at 10,000 active tasks one reply took the event loop for 20-40 ms,
    // and requests waited behind it. An entry changed meanwhile is in the map or not, as it would be
    // in a read made a moment earlier or later.
    const jobs = new Map<string, string>();
    let cursor = '0';
    do {
      const [next, flat] = await this.redis.hscan(this.keys.jobs, cursor, 'COUNT', ACTIVE_JOBS_SLICE);
      for (let i = 0; i + 1 < flat.length; i += 2) jobs.set(flat[i]!, flat[i + 1]!);
      cursor = next;
    } while (cursor !== '0');
    return jobs;
  }

  async withoutJobs(taskIds: readonly string[]): Promise<string[]> {
    if (taskIds.length === 0) return [];
    const jobs = await this.redis.hmget(this.keys.jobs, ...taskIds);
    return taskIds.filter((_, i) => jobs[i] === null);
  }

  async countInState(state: TesState): Promise<number> {
    return this.redis.zcard(this.keys.state(state));
  }

  /** Tasks in every state: one ZCARD of each state index, in one pipeline. */
  async countByState(): Promise<Record<TesState, number>> {
    const pipeline = this.redis.pipeline();
    for (const state of TES_STATES) pipeline.zcard(this.keys.state(state));
    const replies = (await pipeline.exec()) ?? [];
    const counts = {} as Record<TesState, number>;
    TES_STATES.forEach((state, i) => {
      const [err, n] = replies[i] ?? [new Error('no reply')];
      if (err) throw err;
      counts[state] = Number(n);
    });
    return counts;
  }

  async idsInState(state: TesState, limit: number, after?: string): Promise<string[]> {
    const from = after === undefined ? '-' : `(${after}`;
    return this.redis.zrangebylex(this.keys.state(state), from, '+', 'LIMIT', 0, limit);
  }
}

/** The hash fields a whole record is read from, in the order toRecord takes them. */
const RECORD_FIELDS = ['state', 'req', 'created', 'logs', 'run', 'owner', 'groups'] as const;

/** A record from its hash fields (RECORD_FIELDS order; missing trailing ones are absent). */
function toRecord(id: string, fields: ReadonlyArray<string | null | undefined>): TaskRecord | undefined {
  const [state, req, created, logs, run, owner, groups] = fields;
  if (!state || !req || !created) return undefined;
  const record: TaskRecord = {
    id,
    state: state as TesState,
    request: JSON.parse(req) as TaskRequest,
    creationTime: created,
  };
  if (logs) record.logs = JSON.parse(logs) as TesTaskLog[];
  if (run) record.run = JSON.parse(run) as RunInfo;
  if (owner) record.owner = ownerOf(owner, groups);
  return record;
}

function ownerOf(user: string, groups: string | null | undefined): TaskOwner {
  return groups ? { user, groups: JSON.parse(groups) as string[] } : { user };
}
