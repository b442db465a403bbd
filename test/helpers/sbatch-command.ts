import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { arrayJobName } from '../../src/compute/slurm/job-arrays.js';
import { parseSubmitMarker } from '../../src/compute/submit-marker.js';
import { arraysDirOf, TASK_FILE, taskDirOf, taskFile } from '../../src/tes/task-directory.js';

/**
 * The sbatch command that submitted a task run as the service account: the task's own
 * `sbatch-command` when it went alone, else that of the array its submit marker's `array` line names
 * (`.arrays/<batch>.sbatch-command`). `alone` says which.
 */
export function submittedCommand(workRoot: string, taskId: string): { command: string; alone: boolean } {
  const dir = taskDirOf(workRoot, taskId);
  const own = taskFile(dir, TASK_FILE.sbatchCommand);
  const { array } = parseSubmitMarker(readFileSync(taskFile(dir, TASK_FILE.submitAttempted), 'utf8'));
  if (!array) return { command: readFileSync(own, 'utf8'), alone: true };
  // A task of an array has no command of its own: it is not what ran.
  if (existsSync(own)) throw new Error(`${own} exists, but task ${taskId} went in array ${array.name}`);
  const batch = array.name.slice(arrayJobName('').length);
  const file = join(arraysDirOf(dir), `${batch}.${TASK_FILE.sbatchCommand}`);
  return { command: readFileSync(file, 'utf8'), alone: false };
}
