import type { TaskStore } from '../src/store/task-store.js';
import type { TaskRecord } from '../src/tes/types.js';

/**
 * Polls the store until every task has its cluster job; fails after `timeoutMs`. Each poll asks the
 * jobs index about the tasks still without one, and reads a task's record once, when its job came:
 * the bench shares the gateway's process, and reading a thousand records ten times a second would
 * take CPU from what it measures.
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
    const jobless = new Set(await store.withoutJobs(waiting));
    const records = await store.getMany(waiting.filter((id) => !jobless.has(id)));
    for (const [id, record] of records) if (record.run?.jobId) done.set(id, record);
    waiting = waiting.filter((id) => !done.has(id));
    if (waiting.length === 0) return new Map(ids.map((id) => [id, done.get(id)!]));
    if (Date.now() > deadline)
      throw new Error(`${waiting.length} of ${ids.length} tasks got no job in ${timeoutMs} ms`);
    // The figures come from the records' own times: polling often would only take CPU from the gateway.
    await new Promise((r) => setTimeout(r, 100));
  }
}
