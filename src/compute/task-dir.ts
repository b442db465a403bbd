import {
  close as closeCallback,
  constants,
  open as openCallback,
  writeFile as writeFileCallback,
} from 'node:fs';
import { chmod, lstat, mkdir, open } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';
import { promisify } from 'node:util';
import type { LayoutEntry } from '../apptainer/container-plan.js';
import { PermanentError } from '../errors.js';
import type { HandoverEntry } from '../run-as/handover-archive.js';

/**
 * The task directory on disk: private to the gateway's user (0700, files 0600), and laid out without
 * following symbolic links, since a task directory may be prepared again after a job ran in it (a
 * submission retried), and mount points may be made inside a client's input directory. What is in it,
 * and who writes and reads each part, is in tes/task-directory.ts.
 */

/** The task directory cannot be laid out; retrying will not help. */
export class LayoutError extends PermanentError {
  constructor(message: string) {
    super(message);
    this.name = 'LayoutError';
  }
}

const NO_LINKS = "the gateway does not follow symbolic links while it lays out a task's directories";

const { O_WRONLY, O_CREAT, O_EXCL, O_TRUNC, O_NOFOLLOW, O_NONBLOCK } = constants;

/**
 * Opens a file of the task directory that may exist already: never through a link, and without
 * blocking, so that a FIFO in its place cannot hold the worker up.
 */
const FILE_IN_PLACE = O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK;

/** What an open with FILE_IN_PLACE failing says: a link or something else in the file's place. */
function refusedFile(path: string, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ELOOP') return new LayoutError(`${path} is a symbolic link; ${NO_LINKS}`);
  if (code === 'EISDIR' || code === 'ENXIO')
    return new LayoutError(`${path} is in the way of a file the task needs`);
  return err;
}

/**
 * Creates the task directory (0700), or makes an existing one private again. True when it was made
 * now: then it is a real directory, private (the umask can only take bits away from 0700), and empty,
 * and nothing in it needs checking. Each call on the file system counts: on the parallel filesystems
 * work roots live on, every one is a request to a metadata server, and a burst makes thousands.
 */
export async function makeTaskDir(workDir: string): Promise<boolean> {
  try {
    await mkdir(workDir, { mode: 0o700 });
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      // The work root is the operator's: it is made as the operator's umask says.
      await mkdir(dirname(workDir), { recursive: true });
      await mkdir(workDir, { mode: 0o700 });
      return true;
    }
    if (code !== 'EEXIST') throw err;
  }
  const st = await lstat(workDir);
  if (st.isSymbolicLink()) throw new LayoutError(`${workDir} is a symbolic link; ${NO_LINKS}`);
  if (!st.isDirectory()) throw new LayoutError(`${workDir} is not a directory`);
  await chmod(workDir, 0o700);
  return false;
}

const openFd = promisify(openCallback);
const writeAll = promisify(writeFileCallback);
const closeFd = promisify(closeCallback);

/**
 * Writes `text` into `path`, opened with `flag` (made with `mode` when new), through a plain file
 * descriptor: the promise API's file handles cost about twice the CPU per file (13-15 against 23-39
 * us of user time, measured here), and a burst of tasks writes thousands.
 */
async function writeFile(path: string, text: string, { mode, flag }: { mode: number; flag: number }) {
  const fd = await openFd(path, flag, mode);
  try {
    await writeAll(fd, text);
  } finally {
    await closeFd(fd);
  }
}

/**
 * Writes a file of the task directory (or of the gateway's ledger) that only the gateway's user may
 * read, without following a link. A new file is made with its mode; one that exists (a submission
 * prepared or attempted again) is written over, and its mode set.
 */
export async function writePrivateFile(path: string, text: string, mode = 0o600): Promise<void> {
  try {
    await writeFile(path, text, { mode, flag: O_WRONLY | O_CREAT | O_EXCL });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  try {
    await writeFile(path, text, { mode, flag: O_TRUNC | FILE_IN_PLACE });
  } catch (err) {
    throw refusedFile(path, err);
  }
  // `mode` applies only to a file that did not exist yet.
  await chmod(path, mode);
}

/**
 * Creates the plan's directories (0700) and empty files (0600), each walking down from its base one
 * component at a time: a component that exists as a symbolic link, or as something other than a
 * directory, is refused. A directory made here is not looked at again.
 */
export async function makeLayout(
  entries: readonly LayoutEntry[],
  /** Directories known to be real ones, such as a task directory made just now. */
  known: Iterable<string> = [],
): Promise<void> {
  const checked = new Set<string>(known);
  for (const entry of entries) {
    const parts = stepsBelow(entry);
    if (parts.length === 0) continue;
    await checkDir(entry.base, checked);
    let path = entry.base;
    for (const [i, part] of parts.entries()) {
      path = join(path, part);
      if (i === parts.length - 1 && entry.kind === 'file') await makeFile(path);
      else await makeDir(path, checked);
    }
  }
}

/**
 * The plan's directories and empty files as entries of a task directory that does not exist yet (one
 * handed to its owner as an archive), by their paths inside `workDir`: each folder on the way once,
 * before what it holds. A path the plan needs both as a folder and as a file is refused, as
 * makeLayout refuses one in the way.
 */
export function layoutEntries(entries: readonly LayoutEntry[], workDir: string): HandoverEntry[] {
  const kinds = new Map<string, 'dir' | 'file'>();
  const out: HandoverEntry[] = [];
  const put = (path: string, kind: 'dir' | 'file'): void => {
    const had = kinds.get(path);
    if (had === kind) return;
    if (had)
      throw new LayoutError(
        `${join(workDir, path)} is in the way of a ${kind === 'dir' ? 'directory' : 'file'} the task needs`,
      );
    kinds.set(path, kind);
    out.push(kind === 'dir' ? { kind, path } : { kind, path, content: '', mode: 0o600 });
  };
  for (const entry of entries) {
    if (entry.base !== workDir)
      throw new Error(
        `${entry.path} is laid out from ${entry.base}, not from the new task directory ${workDir}`,
      );
    const parts = stepsBelow(entry);
    for (let i = 1; i < parts.length; i++) put(parts.slice(0, i).join('/'), 'dir');
    put(parts.join('/'), entry.kind);
  }
  return out;
}

/** The path's components below its base (none for the base itself); one outside the base is a bug. */
function stepsBelow(entry: LayoutEntry): string[] {
  const rest = relative(entry.base, entry.path);
  if (rest === '') return [];
  if (rest.startsWith('..') || isAbsolute(rest))
    throw new Error(`${entry.path} is not below ${entry.base}, where the plan says it is`);
  return rest.split(sep);
}

async function makeDir(path: string, checked: Set<string>): Promise<void> {
  if (checked.has(path)) return;
  try {
    await mkdir(path, { mode: 0o700 });
    checked.add(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    await checkDir(path, checked);
  }
}

async function checkDir(path: string, checked: Set<string>): Promise<void> {
  if (checked.has(path)) return;
  const st = await lstat(path);
  if (st.isSymbolicLink()) throw new LayoutError(`${path} is a symbolic link; ${NO_LINKS}`);
  if (!st.isDirectory()) throw new LayoutError(`${path} is in the way of a directory the task needs`);
  checked.add(path);
}

async function makeFile(path: string): Promise<void> {
  let handle;
  try {
    handle = await open(path, FILE_IN_PLACE, 0o600);
  } catch (err) {
    throw refusedFile(path, err);
  }
  try {
    if (!(await handle.stat()).isFile())
      throw new LayoutError(`${path} is in the way of a file the task needs`);
  } finally {
    await handle.close();
  }
}
