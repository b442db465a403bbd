import type { TaskStore } from '../src/store/task-store.js';
import type { TaskRecord } from '../src/tes/types.js';

/** Polls the store until every task has its cluster job; fails after `timeoutMs`. */
export async function waitForJobs(
  store: TaskStore,
  ids: readonly string[],
  timeoutMs = 120_000,
): Promise<Map<string, TaskRecord>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const records = await store.getMany(ids);
    const waiting = ids.filter((id) => !records.get(id)?.run?.jobId).length;
    if (waiting === 0) return records;
    if (Date.now() > deadline)
      throw new Error(`${waiting} of ${ids.length} tasks got no job in ${timeoutMs} ms`);
    // The figures come from the records' own times: polling often would only take CPU from the gateway.
    await new Promise((r) => setTimeout(r, 100));
  }
}
