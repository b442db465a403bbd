import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { CREATE_TASK } from '../../src/store/scripts.js';
import { isTerminal, type TesState } from '../../src/tes/state.js';
import { taskDirOf } from '../../src/tes/task-directory.js';
import { newTaskId } from '../../src/tes/task-id.js';
import type { TaskRequest } from '../../src/tes/types.js';

interface SeedRedis extends Redis {
  tesSeedCreate(...args: Array<string | number>): Promise<string>;
}

/**
 * A task made `ageDays` ago, as the gateway would have made it then: the store's own CREATE_TASK
 * script with an id of that time (what RedisTaskStore.create does, but for the clock), then the
 * store's transition to `state`, its `ended` field moved back to `endedDaysAgo`, and a task directory
 * with one file of `dirBytes` bytes. For tests of retention, which only sees tasks this old.
 */
export async function seedOldTask(
  redis: Redis,
  prefix: string,
  workRoot: string,
  seed: {
    ageDays: number;
    state: TesState;
    endedDaysAgo?: number;
    request?: Partial<TaskRequest>;
    owner?: string;
    dirBytes?: number;
  },
): Promise<string> {
  const store = new RedisTaskStore(redis, { prefix, maxBacklog: 1_000_000 });
  const createdMs = Date.now() - seed.ageDays * 24 * 3600 * 1000;
  const id = newTaskId(createdMs);
  const request: TaskRequest = { executors: [{ image: 'alpine', command: ['true'] }], ...seed.request };
  const k = store.keys;
  const tagKeys = Object.entries(request.tags ?? {}).flatMap(([key, value]) => [
    k.tagKey(key),
    k.tagValue(key, value),
  ]);
  if (seed.owner) tagKeys.push(k.owner(seed.owner));
  const keys = [k.task(id), k.all, k.state('QUEUED'), k.names, ...tagKeys];
  const r = redis as SeedRedis;
  if (!('tesSeedCreate' in r)) redis.defineCommand('tesSeedCreate', { lua: CREATE_TASK });
  const created = await r.tesSeedCreate(
    keys.length,
    ...keys,
    id,
    JSON.stringify(request),
    new Date(createdMs).toISOString(),
    request.name ?? '',
    1_000_000,
    '',
    JSON.stringify(['alpine']),
    seed.owner ?? '',
    '',
  );
  if (created !== 'ok') throw new Error(`could not seed task ${id}: ${created}`);
  if (seed.state !== 'QUEUED') await store.transition(id, seed.state);
  if (isTerminal(seed.state)) {
    const endedMs = Date.now() - (seed.endedDaysAgo ?? seed.ageDays) * 24 * 3600 * 1000;
    await redis.hset(k.task(id), 'ended', String(endedMs));
  }
  const dir = taskDirOf(workRoot, id);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'job.sh'), 'x'.repeat(seed.dirBytes ?? 100));
  return id;
}
