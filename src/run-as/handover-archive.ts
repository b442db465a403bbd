import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pack, type Pack } from 'tar-stream';

/**
 * The archive the helper unpacks into a burst's task directories (its `prepare`, run as the tasks'
 * owner): one folder per task, named by its task id. A task's files come from memory (what
 * prepare-job rendered and laid out) and, when the gateway staged inputs for it (content, downloads),
 * from its stage in the ledger. Writing them here, straight into the archive, spares the work root a
 * copy of every task directory that would be made, archived and removed again: on a parallel
 * filesystem each of those is a metadata round trip.
 */

/** A folder or file of a task directory, by its path inside the directory (no leading `/`). */
export type HandoverEntry =
  { kind: 'dir'; path: string } | { kind: 'file'; path: string; content: string; mode: number };

/** One task of a burst: its id, its rendered files and layout, and its stage on disk, if any. */
export interface HandoverTask {
  taskId: string;
  entries: readonly HandoverEntry[];
  stageDir?: string | undefined;
}

const DIR_MODE = 0o700;

/**
 * Writes the archive of `tasks` to `file` (created 0600; the ledgers it lives in are the gateway's
 * alone). A stage's tree goes first, then the task's entries; a stage holds only what staging wrote,
 * so anything in it other than folders and regular files is refused.
 */
export async function writeHandoverArchive(file: string, tasks: readonly HandoverTask[]): Promise<void> {
  const archive = pack();
  const written = pipeline(archive, createWriteStream(file, { mode: 0o600, flags: 'wx' }));
  try {
    const mtime = new Date();
    for (const task of tasks) {
      if (!/^[0-9a-z]{26}$/.test(task.taskId)) throw new Error(`${task.taskId} is not a task id`);
      await add(archive, { name: `${task.taskId}/`, type: 'directory', mode: DIR_MODE, mtime });
      if (task.stageDir !== undefined) await addTree(archive, task.stageDir, task.taskId, mtime);
      for (const entry of task.entries) {
        const name = memberName(task.taskId, entry.path);
        if (entry.kind === 'dir')
          await add(archive, { name: `${name}/`, type: 'directory', mode: DIR_MODE, mtime });
        else await add(archive, { name, type: 'file', mode: entry.mode, mtime }, Buffer.from(entry.content));
      }
    }
    archive.finalize();
  } catch (err) {
    archive.destroy(err as Error);
    await written.catch(() => undefined);
    throw err;
  }
  await written;
}

function memberName(taskId: string, path: string): string {
  const normal = posix.normalize(path);
  if (
    path === '' ||
    posix.isAbsolute(path) ||
    normal !== path ||
    normal === '..' ||
    normal.startsWith('../')
  ) {
    throw new Error(`${path} is not a plain path inside the task directory of ${taskId}`);
  }
  return `${taskId}/${path}`;
}

function add(archive: Pack, header: Parameters<Pack['entry']>[0], body?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error | null) => (err ? reject(err) : resolve());
    if (body === undefined) archive.entry(header, done);
    else archive.entry(header, body, done);
  });
}

/** The folders and regular files under `dir`, links not followed, as members under `prefix`. */
async function addTree(archive: Pack, dir: string, prefix: string, mtime: Date): Promise<void> {
  for (const name of (await readdir(dir)).sort()) {
    const path = posix.join(dir, name);
    const member = `${prefix}/${name}`;
    const st = await lstat(path);
    if (st.isDirectory()) {
      await add(archive, { name: `${member}/`, type: 'directory', mode: DIR_MODE, mtime });
      await addTree(archive, path, member, mtime);
    } else if (st.isFile()) {
      const entry = archive.entry({
        name: member,
        type: 'file',
        mode: st.mode & 0o700,
        size: st.size,
        mtime,
      });
      await pipeline(createReadStream(path), entry);
    } else {
      throw new Error(
        `${path} is neither a folder nor a regular file; the gateway's stage of a task holds only those`,
      );
    }
  }
}
