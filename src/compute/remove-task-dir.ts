import type { Stats } from 'node:fs';
import { chmod, lstat, readdir, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Removing an expired task's directory, and measuring it first, without ever following a symbolic
 * link: a task directory holds what executors wrote, and an executor can leave a link to anywhere the
 * gateway's user may write. A link, whether it is the task directory itself or anything below it, is
 * removed or counted as itself; what it points to is never touched.
 */

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Removes the task directory and everything in it. A task directory that is a link (or any other
 * non-directory) is unlinked. Returns false when there was nothing to remove.
 */
export async function removeTaskDir(workDir: string): Promise<boolean> {
  const st = await lstatOrUndefined(workDir);
  if (!st) return false;
  if (!st.isDirectory()) {
    await unlink(workDir);
    return true;
  }
  // rm walks with lstat: links inside are unlinked, never followed.
  try {
    await rm(workDir, { recursive: true, force: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw err;
    // An executor left a directory without write or search permission (outputs made read-only): the
    // gateway's user owns it, so it opens it up again and removes it.
    await openUp(workDir);
    await rm(workDir, { recursive: true, force: true });
  }
  return true;
}

/** Gives the owner full access to every directory below `dir` (links are not followed). */
async function openUp(dir: string): Promise<void> {
  const st = await lstatOrUndefined(dir);
  if (!st?.isDirectory()) return;
  await chmod(dir, 0o700);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) await openUp(join(dir, entry.name));
  }
}

/**
 * Bytes of the files in a task directory (their apparent size; a link counts as itself). What cannot
 * be read counts as nothing: the figure is for a report, not a decision.
 */
export async function taskDirBytes(workDir: string): Promise<number> {
  const st = await lstatOrUndefined(workDir).catch(() => undefined);
  if (!st) return 0;
  if (!st.isDirectory()) return st.size;
  const entries = await readdir(workDir).catch(() => [] as string[]);
  let total = 0;
  for (const name of entries) total += await taskDirBytes(join(workDir, name));
  return total;
}
