import { open, readFile, stat } from 'node:fs/promises';
import { EXECUTOR_FILE, executorFile, TASK_FILE, taskFile } from '../tes/task-directory.js';

/**
 * The files the job script writes for each executor (`exec-<n>/start`, `end`, `exit_code`, `stdout`,
 * `stderr`) and for the job (`job-end`, `system-error`), read back on the gateway host. Their names
 * and writers are in tes/task-directory.ts.
 */

export interface ExecutorResult {
  index: number;
  started: boolean;
  startTime?: string;
  endTime?: string;
  exitCode?: number;
  ignored: boolean;
}

export async function readExecutorResults(
  workDir: string,
  ignoreError: readonly boolean[],
): Promise<ExecutorResult[]> {
  return Promise.all(
    ignoreError.map(async (ignored, index): Promise<ExecutorResult> => {
      const [start, end, code] = await Promise.all([
        readSmall(executorFile(workDir, index, EXECUTOR_FILE.start)),
        readSmall(executorFile(workDir, index, EXECUTOR_FILE.end)),
        readSmall(executorFile(workDir, index, EXECUTOR_FILE.exitCode)),
      ]);
      const result: ExecutorResult = { index, started: start !== undefined, ignored };
      if (start) result.startTime = start;
      if (end) result.endTime = end;
      if (code !== undefined && /^\d+$/.test(code)) result.exitCode = Number(code);
      return result;
    }),
  );
}

/**
 * Did the executors finish, by their own files? Every executor wrote its exit code, or one that must
 * not fail did fail (the job script runs no executor after it). Nothing else says so when Slurm has
 * forgotten the job.
 */
export function executorsFinished(results: readonly ExecutorResult[]): boolean {
  if (results.length === 0) return false;
  for (const r of results) {
    if (r.exitCode === undefined) return false;
    if (r.exitCode !== 0 && !r.ignored) return true;
  }
  return true;
}

/** Has the first executor started? (INITIALIZING becomes RUNNING.) */
export async function firstExecutorStarted(workDir: string): Promise<boolean> {
  try {
    await stat(executorFile(workDir, 0, EXECUTOR_FILE.start));
    return true;
  } catch {
    return false;
  }
}

export async function readSystemError(workDir: string): Promise<string | undefined> {
  return readSmall(taskFile(workDir, TASK_FILE.systemError));
}

/**
 * How many bytes of each log to keep when each may keep at most `perLog` and all together `total`:
 * every log gets an equal share, and what a small log leaves of its share goes to the larger ones.
 */
export function shareLogBytes(sizes: readonly number[], perLog: number, total: number): number[] {
  const wants = sizes.map((size) => Math.max(0, Math.min(size, perLog)));
  const smallestFirst = wants.map((_, i) => i).sort((a, b) => wants[a]! - wants[b]!);
  const kept = wants.map(() => 0);
  let left = Math.max(0, total);
  smallestFirst.forEach((i, k) => {
    const share = Math.min(wants[i]!, Math.floor(left / (smallestFirst.length - k)));
    kept[i] = share;
    left -= share;
  });
  return kept;
}

/** The size of a file, 0 when it does not exist. */
export async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/** The last `maxBytes` of a file (whole UTF-8 characters), or '' when it does not exist. */
export async function readTail(path: string, maxBytes: number): Promise<string> {
  if (maxBytes <= 0) return '';
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, maxBytes);
    const buf = Buffer.alloc(length);
    await handle.read(buf, 0, length, size - length);
    let text = buf.toString('utf8');
    // Drop a character cut in half at the start of the window.
    if (size > length) text = text.replace(/^\uFFFD+/, '');
    return text;
  } finally {
    await handle.close();
  }
}

async function readSmall(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}
