import { constants, readFileSync, type Stats } from 'node:fs';
import { appendFile, lstat, open, readdir, readFile, realpath, type FileHandle } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { hostPathOf, writableRoots } from '../apptainer/container-plan.js';
import { TASK_FILE, taskFile } from '../tes/task-directory.js';
import type { TesOutput, TesOutputFileLog } from '../tes/types.js';
import { AllowedRoots } from './allowed-roots.js';
import { compileGlob, hasWildcard } from './glob.js';
import { schemeOf } from './stage-inputs.js';
import { StagingError } from './staging-error.js';
import type { StagingMetrics } from '../observability/metrics.js';

/** Sends one local file to a remote URL (s3://...). */
export interface OutputUploader {
  readonly schemes: readonly string[];
  upload(localPath: string, url: string, field: string): Promise<void>;
}

/**
 * An output, with its place among the task's outputs when a list holds only some of them (run-as-user
 * delivers `file://` outputs as the user and the rest from a mirror): errors name `outputs[index]`.
 */
export type NumberedOutput = TesOutput & { index?: number };

export interface OutputDelivery {
  /** `roots`: the task owner's allowed roots, when they differ from the site's. */
  deliver(outputs: readonly NumberedOutput[], workDir: string, roots?: AllowedRoots): Promise<DeliveryResult>;
  readonly schemes: readonly string[];
}

export interface DeliveryResult {
  files: TesOutputFileLog[];
  /** One line per output that could not be delivered; any makes the task SYSTEM_ERROR. */
  errors: string[];
  /** Lines for the task's system logs that do not fail it: links inside outputs that were left out. */
  notes: string[];
}

/** Links named in one note; the rest are counted. */
const LINKS_NAMED = 10;

const NO_LINKS = 'the gateway does not follow links a task makes';

/**
 * Delivers a task's outputs after its executors finished (also when one failed: clients read exit
 * codes from outputs). FILE, DIRECTORY and wildcard outputs; `file://` and bare paths under the
 * allowed roots are copied; other schemes go to an uploader.
 *
 * Delivery runs with the gateway's rights over files the task made, so it never follows a link the
 * task made out of its writable places (`mnt/`, `tmp/`, `var-tmp/` of the task directory). Every
 * source is resolved first (all components: a linked directory in the middle, a linked last
 * component, a linked wildcard base) and must lie inside those places, or the output fails naming the
 * path. Inside a DIRECTORY output or a wildcard's directory, symbolic links are not delivered at all:
 * each is left out, and a note tells the client. Files are copied, never moved, from the resolved
 * path, opened without following links as a second guard. A `file://` destination is created by
 * walking down from its allowed root without following links (AllowedRoots.createFile): in a writable
 * root, other tasks may make links while delivery runs.
 *
 * Delivery is repeatable: finalize runs again after a failed Redis write or a stalled worker. Each
 * file sent is recorded in the task directory (`delivered`, a line per file: which output, its
 * source and what was written), and a later delivery sends again only what the record does not show
 * as sent from the same source file, or what is no longer at a `file://` destination as it was
 * written. Its file logs are the same either way. Sources stay where they are (copied, never
 * moved), so two outputs of one source path are both delivered, each under its own record line.
 */
export class OutputDeliverer implements OutputDelivery {
  constructor(
    private readonly roots: AllowedRoots,
    private readonly uploaders: readonly OutputUploader[],
    private readonly metrics?: StagingMetrics,
  ) {}

  get schemes(): string[] {
    return ['file', ...this.uploaders.flatMap((u) => u.schemes)];
  }

  async deliver(
    outputs: readonly NumberedOutput[],
    workDir: string,
    roots: AllowedRoots = this.roots,
  ): Promise<DeliveryResult> {
    const files: TesOutputFileLog[] = [];
    const errors: string[] = [];
    const notes: string[] = [];
    const places = new WritablePlaces(workDir);
    const record = new DeliveryRecord(taskFile(workDir, TASK_FILE.delivered));
    const sent = await record.read();
    for (const [position, output] of outputs.entries()) {
      const index = output.index ?? position;
      const field = `outputs[${index}]`;
      try {
        const found = await expandOutput(output, places, field);
        if (found.links.length > 0) notes.push(linksNote(field, output.path, found.links));
        for (const item of found.items) {
          const key = deliveryKey(index, item);
          if (!(await stillDelivered(sent.get(key), item))) {
            const written = await this.send(item, field, roots);
            this.metrics?.staged('out', schemeOf(item.url), item.stat.size);
            await record.add({ key, source: sourceOf(item), written });
          }
          files.push({ url: item.url, path: item.path, size_bytes: String(item.stat.size) });
        }
      } catch (err) {
        errors.push(err instanceof StagingError ? err.message : `${field}: ${(err as Error).message}`);
      }
    }
    return { files, errors, notes };
  }

  /** Sends one file; for a `file://` destination, says what was written there. */
  private async send(item: DeliveryItem, field: string, roots: AllowedRoots): Promise<FileMark | undefined> {
    const scheme = schemeOf(item.url);
    const uploader = this.uploaders.find((u) => u.schemes.includes(scheme));
    if (scheme !== 'file' && !uploader) {
      throw new StagingError(
        field,
        `${scheme}:// URLs are not supported for outputs (supported: ${this.schemes.join(', ')}); ${item.url}`,
      );
    }
    const handle = await openChecked(item, field);
    try {
      if (uploader) {
        await uploader.upload(item.real, item.url, field);
        return undefined;
      }
      return await this.copy(handle, item, field, roots);
    } finally {
      await handle.close();
    }
  }

  /**
   * Copies into an allowed root through a file created there without following links: other tasks
   * may be changing a writable root at the same time.
   */
  private async copy(
    source: FileHandle,
    item: DeliveryItem,
    field: string,
    roots: AllowedRoots,
  ): Promise<FileMark> {
    const target = await roots.createFile(item.url, field);
    try {
      await copyContents(source, target);
      // The source is private to the job's user; the client gets an ordinary file.
      await target.chmod(deliveredMode(item.stat.mode));
      return markOf(await target.stat());
    } finally {
      await target.close();
    }
  }
}

/**
 * Every file an output stands for, resolved and checked, and the links left out: what delivery sends,
 * and what the run-as-user side exports for the gateway to upload (src/run-as/user-side.ts).
 */
export async function expandOutput(
  output: TesOutput,
  places: WritablePlaces,
  field: string,
): Promise<Expansion> {
  if (hasWildcard(output.path)) {
    const prefix = output.path_prefix ?? '';
    const matches = compileGlob(output.path);
    const literal = output.path.slice(0, output.path.search(/[*?[]/));
    const baseDir = literal.endsWith('/') ? literal.slice(0, -1) || '/' : posix.dirname(literal);
    const base = await places.resolve(baseDir, field);
    // No directory there, no matches: a wildcard may match nothing.
    if (!base?.stat.isDirectory()) return { items: [], links: [] };
    const found = await walk(base.real, baseDir);
    return {
      items: found.files
        .filter((f) => matches(f.path))
        .map((f) => ({
          ...f,
          url: joinUrl(output.url, f.path.startsWith(prefix) ? f.path.slice(prefix.length) : f.path),
        })),
      links: found.links.filter(matches),
    };
  }
  const source = await places.resolve(output.path, field);
  if (!source)
    throw new StagingError(
      field,
      `${output.path} was not created by the executors, so it cannot be delivered to ${output.url}`,
    );
  if (output.type === 'DIRECTORY') {
    if (!source.stat.isDirectory()) throw new StagingError(field, `${output.path} is not a directory`);
    const found = await walk(source.real, output.path);
    return {
      items: found.files.map((f) => ({
        ...f,
        url: joinUrl(output.url, posix.relative(output.path, f.path)),
      })),
      links: found.links,
    };
  }
  if (!source.stat.isFile())
    throw new StagingError(field, `${output.path} is not a regular file (set type DIRECTORY for a folder)`);
  return { items: [{ ...source, path: output.path, url: output.url }], links: [] };
}

/** Which file, as `stat` tells files apart: written once, the same file keeps these. */
interface FileMark {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
}

function markOf(st: Stats): FileMark {
  return { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
}

function sameMark(a: FileMark | undefined, b: FileMark | undefined): boolean {
  return (
    a !== undefined &&
    b !== undefined &&
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mtimeMs === b.mtimeMs
  );
}

function sourceOf(item: DeliveryItem): FileMark {
  return markOf(item.stat);
}

/** One line of the record: a file sent for an output, from which source, and what it wrote. */
interface Delivered {
  key: string;
  source: FileMark;
  /** What the copy left at a `file://` destination; absent for an upload. */
  written?: FileMark | undefined;
}

/** An output's file by output, source and destination: two outputs of one source are two keys. */
function deliveryKey(index: number, item: DeliveryItem): string {
  return JSON.stringify([index, item.path, item.url]);
}

/**
 * Whether a file recorded as sent is still delivered: sent from this very source file, and, for a
 * `file://` destination, still the file the copy wrote (nobody replaced or changed it since).
 */
async function stillDelivered(done: Delivered | undefined, item: DeliveryItem): Promise<boolean> {
  if (!done || !sameMark(done.source, sourceOf(item))) return false;
  if (!done.written) return schemeOf(item.url) !== 'file';
  let path: string;
  try {
    path = AllowedRoots.pathOf(item.url, 'record');
  } catch {
    return false;
  }
  const now = await lstat(path).catch(() => undefined);
  return now !== undefined && now.isFile() && sameMark(done.written, markOf(now));
}

/** The task directory's record of files sent (`delivered`): JSON lines, appended as each is sent. */
class DeliveryRecord {
  constructor(private readonly path: string) {}

  /** What was sent, by key; a line cut short by a crash is skipped, and its file sent again. */
  async read(): Promise<Map<string, Delivered>> {
    const out = new Map<string, Delivered>();
    const text = await readFile(this.path, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      if (line === '') continue;
      try {
        const d = JSON.parse(line) as Delivered;
        if (typeof d.key === 'string' && d.source) out.set(d.key, d);
      } catch {
        continue;
      }
    }
    return out;
  }

  async add(done: Delivered): Promise<void> {
    await appendFile(this.path, `${JSON.stringify(done)}\n`, { mode: 0o600 });
  }
}

export interface Expansion {
  items: DeliveryItem[];
  /** Container paths of symbolic links that were left out. */
  links: string[];
}

export interface Resolved {
  /** The host path with every link resolved. */
  real: string;
  /** `lstat` of `real`, taken at the check. */
  stat: Stats;
}

export interface DeliveryItem extends Resolved {
  /** The container path. */
  path: string;
  url: string;
}

/** The task's writable places on the host, resolved once per delivery. */
export class WritablePlaces {
  private roots: Promise<string[]> | undefined;

  constructor(private readonly workDir: string) {}

  /**
   * The real path behind a container path the task could write, checked to lie inside the task's
   * writable places; undefined when nothing is there.
   */
  async resolve(containerPath: string, field: string): Promise<Resolved | undefined> {
    const host = hostPathOf(this.workDir, containerPath);
    let real: string;
    try {
      real = await realpath(host);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP')
        throw new StagingError(field, `${containerPath} is a loop of symbolic links; ${NO_LINKS}`);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
      // A link to nowhere: where it points is the host's, not the task's, so it is refused like any other.
      const st = await lstat(host).catch(() => undefined);
      if (st?.isSymbolicLink())
        throw new StagingError(
          field,
          `${containerPath} is a symbolic link to a path that does not exist; ${NO_LINKS}`,
        );
      return undefined;
    }
    // Any of them: they are all the task's own, and a link from one to another leads nowhere else.
    const roots = await this.realRoots();
    if (!roots.some((root) => isInside(real, root)))
      throw new StagingError(
        field,
        `${containerPath} resolves to ${real}, outside the task's writable places; ${NO_LINKS}`,
      );
    return { real, stat: await lstat(real) };
  }

  private realRoots(): Promise<string[]> {
    this.roots ??= Promise.all(
      writableRoots(this.workDir).map((dir) => realpath(dir).catch(() => undefined)),
    ).then((found) => found.filter((r): r is string => r !== undefined));
    return this.roots;
  }
}

/**
 * Every regular file below a resolved directory, with its container path, and the symbolic links
 * found there, which are not followed. Iterative: a tree as deep as the task likes does not grow the
 * stack.
 */
async function walk(
  hostDir: string,
  containerDir: string,
): Promise<{ files: Array<Resolved & { path: string }>; links: string[] }> {
  const files: Array<Resolved & { path: string }> = [];
  const links: string[] = [];
  const pending: Array<[string, string]> = [[hostDir, containerDir]];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [dir, containerPath] = next;
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      const real = join(dir, e.name);
      const path = posix.join(containerPath, e.name);
      if (e.isSymbolicLink()) links.push(path);
      else if (e.isDirectory()) pending.push([real, path]);
      else if (e.isFile()) files.push({ real, path, stat: await lstat(real) });
    }
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  links.sort();
  return { files, links };
}

/**
 * Opens the checked source without following a link and makes sure it is still the file that was
 * checked: nothing of the task runs any more, so this only guards against a mistake of our own.
 */
export async function openChecked(item: DeliveryItem, field: string) {
  let handle;
  try {
    // Non-blocking: a FIFO put in the file's place opens at once (and fails the check below).
    handle = await open(item.real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP')
      throw new StagingError(field, `${item.path} became a symbolic link after it was checked; ${NO_LINKS}`);
    throw err;
  }
  const st = await handle.stat();
  if (!st.isFile() || st.ino !== item.stat.ino || st.dev !== item.stat.dev) {
    await handle.close();
    throw new StagingError(field, `${item.path} changed after it was checked; it was not delivered`);
  }
  return handle;
}

/** Copies one open file into another, from the start, a chunk at a time. */
async function copyContents(from: FileHandle, to: FileHandle): Promise<void> {
  const chunk = Buffer.allocUnsafe(1024 * 1024);
  for (let position = 0; ;) {
    const { bytesRead } = await from.read(chunk, 0, chunk.length, position);
    if (bytesRead === 0) return;
    for (let done = 0; done < bytesRead;) {
      done += (await to.write(chunk, done, bytesRead - done)).bytesWritten;
    }
    position += bytesRead;
  }
}

export function linksNote(field: string, path: string, links: readonly string[]): string {
  const named = links.slice(0, LINKS_NAMED).join(', ');
  const more = links.length > LINKS_NAMED ? ` and ${links.length - LINKS_NAMED} more` : '';
  const what = links.length === 1 ? 'a symbolic link' : `${links.length} symbolic links`;
  return `${field}: ${what} in ${path} left out (${named}${more}); ${NO_LINKS}`;
}

function isInside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === '/' ? '/' : `${dir}/`);
}

/** An ordinary file of the gateway's (its umask applied), executable if the source was. */
function deliveredMode(sourceMode: number): number {
  return (sourceMode & 0o100 ? 0o777 : 0o666) & ~processUmask();
}

let umask: number | undefined;

/** The process's umask, read without changing it (`process.umask()` would set it twice). */
function processUmask(): number {
  if (umask === undefined) {
    try {
      const line = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
      umask = line ? parseInt(line[1]!, 8) : 0o022;
    } catch {
      umask = 0o022;
    }
  }
  return umask;
}

function joinUrl(base: string, rest: string): string {
  const tail = rest.replace(/^\/+/, '');
  return tail === '' ? base : `${base.replace(/\/+$/, '')}/${tail}`;
}
