import type { Redis } from 'ioredis';
import { TERMINAL_STATES, type TesState } from '../tes/state.js';
import { newTaskId } from '../tes/task-id.js';
import type { TaskRequest, TesTaskLog } from '../tes/types.js';
import { Keys } from './keys.js';
import { EXPIRE_TASK } from './scripts.js';

/**
 * The Redis side of retention: which finished tasks are past it, and their atomic removal.
 *
 * Finding them is bounded. Ids sort by creation time and a task ends after it was created, so a task
 * that ended before the cutoff was created before it too: each terminal state's index is walked
 * oldest first and stops at the first id created after the cutoff, and one call reads at most
 * `limit` index entries. Tasks created before the cutoff that ended after it are stepped over (a
 * cursor per state), so that long-running tasks never hold the walk at the same place.
 *
 * A task's end is its `ended` field (written by the TRANSITION script). Tasks that ended before that
 * field existed fall back to the end_time of their last log, else their creation time.
 */

/** A finished task past the retention, with what its removal needs. */
export interface ExpiredTask {
  taskId: string;
  state: TesState;
  endedMs: number;
  /** Where the end was read: the `ended` field, or for older tasks their logs or creation time. */
  endSource: 'ended' | 'logs' | 'created';
  /** The sets that hold the task besides all, name and state: its owner's and its tags'. */
  indexKeys: string[];
  /** The task's owner, if it has one (whose task directory it is when tasks run as their owners). */
  owner?: string | undefined;
}

export interface ExpiryBatch {
  expired: ExpiredTask[];
  /** Index entries this call read (at most its limit). */
  examined: number;
  /** Every terminal state's walk reached the cutoff since the sweep began; the next call starts over. */
  sweepDone: boolean;
}

/** What the removal script found: only `expired` changed anything. */
export type ExpireOutcome = 'expired' | 'missing' | 'active' | 'young';

interface ScriptedRedis extends Redis {
  tesExpire(...args: Array<string | number>): Promise<ExpireOutcome>;
}

/** The first ten characters of every task id created at `ms`: ids below it were created earlier. */
export function creationPrefixAt(ms: number): string {
  return newTaskId(ms).slice(0, 10);
}

/**
 * When a task ended, from its hash fields: `ended` (epoch ms), else its last log's end_time, else its
 * creation time. Undefined when none of them can be read.
 */
export function endOf(fields: {
  ended?: string | null | undefined;
  logs?: string | null | undefined;
  created?: string | null | undefined;
}): { endedMs: number; endSource: ExpiredTask['endSource'] } | undefined {
  const ended = fields.ended ? Number(fields.ended) : NaN;
  if (Number.isFinite(ended)) return { endedMs: ended, endSource: 'ended' };
  if (fields.logs) {
    try {
      const logs = JSON.parse(fields.logs) as TesTaskLog[];
      const end = Date.parse(logs.at(-1)?.end_time ?? '');
      if (Number.isFinite(end)) return { endedMs: end, endSource: 'logs' };
    } catch {
      // Unreadable logs: the creation time is the next best end.
    }
  }
  const created = Date.parse(fields.created ?? '');
  return Number.isFinite(created) ? { endedMs: created, endSource: 'created' } : undefined;
}

export class RetentionStore {
  readonly keys: Keys;
  private readonly r: ScriptedRedis;
  /** Where each state's walk resumes: the last id read (exclusive). */
  private readonly cursors = new Map<TesState, string>();
  /** States whose walk reached the cutoff in the current sweep. */
  private readonly walked = new Set<TesState>();

  constructor(redis: Redis, prefix: string) {
    this.keys = new Keys(prefix);
    redis.defineCommand('tesExpire', { lua: EXPIRE_TASK });
    this.r = redis as ScriptedRedis;
  }

  /**
   * The next tasks past the cutoff (ended before `cutoffMs`), reading at most `limit` index entries.
   * Each call goes on where the last one stopped; after a sweep is done the next starts at the oldest.
   */
  async nextBatch(cutoffMs: number, limit: number): Promise<ExpiryBatch> {
    const below = `(${creationPrefixAt(cutoffMs)}`;
    const read: Array<{ taskId: string; state: TesState }> = [];
    for (const state of TERMINAL_STATES) {
      const room = limit - read.length;
      if (room <= 0) break;
      if (this.walked.has(state)) continue;
      const cursor = this.cursors.get(state);
      const ids = await this.r.zrangebylex(
        this.keys.state(state),
        cursor === undefined ? '-' : `(${cursor}`,
        below,
        'LIMIT',
        0,
        room,
      );
      for (const taskId of ids) read.push({ taskId, state });
      if (ids.length < room) {
        this.walked.add(state);
        this.cursors.delete(state);
      } else {
        this.cursors.set(state, ids.at(-1)!);
      }
    }
    const sweepDone = this.walked.size === TERMINAL_STATES.length;
    if (sweepDone) this.walked.clear();
    return { expired: await this.pastCutoff(read, cutoffMs), examined: read.length, sweepDone };
  }

  /** Those of the tasks that are terminal and ended before the cutoff, with their index keys. */
  private async pastCutoff(
    read: ReadonlyArray<{ taskId: string; state: TesState }>,
    cutoffMs: number,
  ): Promise<ExpiredTask[]> {
    if (read.length === 0) return [];
    const heads = await this.pipelined(read, (p, { taskId }) =>
      p.hmget(this.keys.task(taskId), 'state', 'ended', 'created', 'owner'),
    );
    // Logs are read only for tasks that ended before `ended` was recorded.
    const older = read.filter((_, i) => !(heads[i] as Array<string | null>)[1]);
    const olderLogs = new Map(
      (await this.pipelined(older, (p, { taskId }) => p.hget(this.keys.task(taskId), 'logs'))).map(
        (logs, i) => [older[i]!.taskId, logs as string | null],
      ),
    );
    const past: Array<Omit<ExpiredTask, 'indexKeys' | 'owner'> & { owner: string | null }> = [];
    read.forEach(({ taskId }, i) => {
      const [state, ended, created, owner] = heads[i] as Array<string | null>;
      if (!state || !TERMINAL_STATES.includes(state as TesState)) return;
      const end = endOf({ ended, created, logs: olderLogs.get(taskId) });
      if (end === undefined || end.endedMs >= cutoffMs) return;
      past.push({ taskId, state: state as TesState, ...end, owner: owner ?? null });
    });
    // The request, only of the tasks that go: its tags name the tag sets that hold the task.
    const requests = await this.pipelined(past, (p, { taskId }) => p.hget(this.keys.task(taskId), 'req'));
    return past.map(({ owner, ...task }, i) => ({
      ...task,
      ...(owner ? { owner } : {}),
      indexKeys: [
        ...(owner ? [this.keys.owner(owner)] : []),
        ...this.tagKeysOf(requests[i] as string | null),
      ],
    }));
  }

  /** The tag sets a task was added to at creation (RedisTaskStore.create), from its stored request. */
  private tagKeysOf(req: string | null): string[] {
    if (!req) return [];
    let tags: TaskRequest['tags'];
    try {
      tags = (JSON.parse(req) as TaskRequest).tags;
    } catch {
      return [];
    }
    return Object.entries(tags ?? {}).flatMap(([key, value]) => [
      this.keys.tagKey(key),
      this.keys.tagValue(key, value),
    ]);
  }

  /**
   * Removes the task and every index entry, atomically, if it is still terminal and ended before the
   * cutoff (the script checks again).
   */
  async expire(task: ExpiredTask, cutoffMs: number): Promise<ExpireOutcome> {
    const keys = [
      this.keys.task(task.taskId),
      this.keys.all,
      this.keys.names,
      this.keys.jobs,
      ...task.indexKeys,
    ];
    return this.r.tesExpire(
      keys.length,
      ...keys,
      task.taskId,
      this.keys.statePrefix,
      TERMINAL_STATES.join(','),
      Math.floor(cutoffMs),
      task.endSource === 'ended' ? '' : Math.floor(task.endedMs),
    );
  }

  /** One command per item in one pipeline; a failed command fails the call. */
  private async pipelined<T>(
    items: readonly T[],
    add: (pipeline: ReturnType<Redis['pipeline']>, item: T) => void,
  ): Promise<unknown[]> {
    if (items.length === 0) return [];
    const pipeline = this.r.pipeline();
    for (const item of items) add(pipeline, item);
    const replies = (await pipeline.exec()) ?? [];
    return replies.map(([err, value]) => {
      if (err) throw err;
      return value;
    });
  }
}
