import type { TaskStore } from '../src/store/task-store.js';
import type { TaskRecord } from '../src/tes/types.js';

/**
 * Polls the store until every task has its cluster job; fails after `timeoutMs`. Each poll reads only
 * the tasks still without one: the bench shares the gateway's process, and reading a thousand
 * records ten times a second would take CPU from what it measures.
 */
export async function waitForJobs(
  store: TaskStore,
  ids: readonly string[],
  timeoutMs = 120_000,
): Promise<Map<string, TaskRecord>> {
  const deadline = Date.now() + timeoutMs;
  const done = new Map<string, TaskRecord>();
  let waiting = [...ids];
  for (;;) {
    const records = await store.getMany(waiting);
    waiting = waiting.filter((id) => {
      const record = records.get(id);
      if (!record?.run?.jobId) return true;
      done.set(id, record);
      return false;
    });
    if (waiting.length === 0) return new Map(ids.map((id) => [id, done.get(id)!]));
    if (Date.now() > deadline)
      throw new Error(`${waiting.length} of ${ids.length} tasks got no job in ${timeoutMs} ms`);
    // The figures come from the records' own times: polling often would only take CPU from the gateway.
    await new Promise((r) => setTimeout(r, 100));
  }
}
