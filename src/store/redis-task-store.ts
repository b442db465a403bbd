import type { Redis } from 'ioredis';
import { newTaskId } from '../tes/task-id.js';
import { isTerminal, legalSources, type TesState } from '../tes/state.js';
import type { TaskRequest, TesTaskLog } from '../tes/types.js';
import { BacklogFullError } from '../errors.js';
import { Keys } from './keys.js';
import { CREATE_TASK, LIST_PAGE, TRANSITION } from './scripts.js';
import type {
  ListPage,
  ListQuery,
  RunInfo,
  TaskRecord,
  TaskStore,
  TransitionOptions,
  TransitionOutcome,
} from './task-store.js';

/** The most index entries one list call inspects, so one call never holds Redis for long. */
const LIST_SCAN_BUDGET = 20_000;

interface ScriptedRedis extends Redis {
  tesCreate(...args: Array<string | number>): Promise<string>;
  tesTransition(...args: Array<string | number>): Promise<[TransitionOutcome, string]>;
  tesList(...args: Array<string | number>): Promise<string[]>;
}

export interface RedisTaskStoreOptions {
  prefix: string;
  /** Tasks waiting in QUEUED beyond which creation answers 429. */
  maxBacklog: number;
}

export class RedisTaskStore implements TaskStore {
  readonly keys: Keys;
  private readonly r: ScriptedRedis;

  constructor(
    readonly redis: Redis,
    private readonly options: RedisTaskStoreOptions,
  ) {
    this.keys = new Keys(options.prefix);
    redis.defineCommand('tesCreate', { lua: CREATE_TASK });
    redis.defineCommand('tesTransition', { lua: TRANSITION, numberOfKeys: 2 });
    redis.defineCommand('tesList', { lua: LIST_PAGE });
    this.r = redis as ScriptedRedis;
  }

  async create(request: TaskRequest, options: { logs?: TesTaskLog[] } = {}): Promise<TaskRecord> {
    const id = newTaskId();
    const creationTime = new Date().toISOString();
    const tagKeys: string[] = [];
    for (const [key, value] of Object.entries(request.tags ?? {})) {
      tagKeys.push(this.keys.tagKey(key), this.keys.tagValue(key, value));
    }
    const keys = [this.keys.task(id), this.keys.all, this.keys.state('QUEUED'), this.keys.names, ...tagKeys];
    const logs = options.logs && options.logs.length > 0 ? JSON.stringify(options.logs) : '';
    const result = await this.r.tesCreate(
      keys.length,
      ...keys,
      id,
      JSON.stringify(request),
      creationTime,
      request.name ?? '',
      this.options.maxBacklog,
      logs,
    );
    if (result === 'full') throw new BacklogFullError(this.options.maxBacklog, 30);
    return { id, state: 'QUEUED', request, creationTime, ...(options.logs ? { logs: options.logs } : {}) };
  }

  async get(taskId: string): Promise<TaskRecord | undefined> {
    const [state, req, created, logs, run] = await this.redis.hmget(
      this.keys.task(taskId),
      'state',
      'req',
      'created',
      'logs',
      'run',
    );
    if (!state || !req || !created) return undefined;
    return toRecord(taskId, state, req, created, logs, run);
  }

  async getState(taskId: string): Promise<TesState | undefined> {
    const state = await this.redis.hget(this.keys.task(taskId), 'state');
    return state ? (state as TesState) : undefined;
  }

  async getMany(taskIds: readonly string[]): Promise<Map<string, TaskRecord>> {
    const out = new Map<string, TaskRecord>();
    for (let i = 0; i < taskIds.length; i += 1000) {
      const chunk = taskIds.slice(i, i + 1000);
      const pipeline = this.redis.pipeline();
      for (const id of chunk) pipeline.hmget(this.keys.task(id), 'state', 'req', 'created', 'logs', 'run');
      const replies = (await pipeline.exec()) ?? [];
      chunk.forEach((id, j) => {
        const [err, fields] = replies[j] ?? [];
        if (err) throw err;
        const [state, req, created, logs, run] = fields as Array<string | null>;
        if (state && req && created) out.set(id, toRecord(id, state, req, created, logs, run));
      });
    }
    return out;
  }

  async list(query: ListQuery): Promise<ListPage> {
    const sets: string[] = [];
    if (query.state) sets.push(this.keys.state(query.state));
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
      LIST_SCAN_BUDGET,
    );
    const records: TaskRecord[] = [];
    for (let i = 1; i + 4 < reply.length; i += 5) {
      const id = reply[i]!;
      const state = reply[i + 1]!;
      if (withDocs) {
        const req = reply[i + 2]!;
        // A task deleted between walk and read: skip it rather than fail the page.
        if (!req) continue;
        records.push(toRecord(id, state, req, reply[i + 3]!, reply[i + 4] || null, null));
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
    const from = options.from ?? legalSources(to);
    const fields: string[] = [];
    if (options.logs) fields.push('logs', JSON.stringify(options.logs));
    if (options.run) fields.push('run', JSON.stringify(options.run));
    const [outcome, previous] = await this.r.tesTransition(
      this.keys.task(taskId),
      this.keys.jobs,
      taskId,
      to,
      from.join(','),
      this.keys.statePrefix,
      isTerminal(to) ? '1' : '0',
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
    const all = await this.redis.hgetall(this.keys.jobs);
    return new Map(Object.entries(all));
  }

  async countInState(state: TesState): Promise<number> {
    return this.redis.zcard(this.keys.state(state));
  }

  async idsInState(state: TesState, limit: number): Promise<string[]> {
    return this.redis.zrangebylex(this.keys.state(state), '-', '+', 'LIMIT', 0, limit);
  }
}

function toRecord(
  id: string,
  state: string,
  req: string,
  created: string,
  logs: string | null | undefined,
  run: string | null | undefined,
): TaskRecord {
  const record: TaskRecord = {
    id,
    state: state as TesState,
    request: JSON.parse(req) as TaskRequest,
    creationTime: created,
  };
  if (logs) record.logs = JSON.parse(logs) as TesTaskLog[];
  if (run) record.run = JSON.parse(run) as RunInfo;
  return record;
}
