import { constants } from 'node:fs';
import { lstat, mkdir, open, realpath, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, normalize, relative, sep } from 'node:path';
import { StagingError } from './staging-error.js';
import { hasDotDotSegment } from '../tes/dot-dot.js';

/**
 * One entry of `storage.allowedRoots`. A read-only root's inputs are bound read-only; a writable
 * root's are bound read-write where they are, so executors write the client's own folder in place
 * (Toil's file job store, a workflow engine's work directory on the shared filesystem).
 */
export interface AllowedRoot {
  path: string;
  writable: boolean;
}

/** Where a `file://` input lies among the roots, judged by its real path. */
export interface InputLocation {
  /** The real path of the input. */
  real: string;
  /**
   * The real path of a writable root the input lies in: the input is bound read-write in place.
   * Any writable root counts, so a read-only root inside a writable one would be writable anyway
   * (the gateway refuses that configuration at start).
   */
  writableRoot?: string;
  /** Real paths of writable roots inside the input (a read-only directory): tasks change them. */
  writableBelow: string[];
}

interface RealRoot extends AllowedRoot {
  real: string;
}

const NO_LINKS = 'the gateway does not follow links a task makes';

/**
 * The host folders a client may name in `file://` URLs and bare paths. Paths are resolved through
 * symlinks before the check, so a link inside a root that points outside it is refused too.
 */
export class AllowedRoots {
  readonly roots: readonly AllowedRoot[];
  private resolved: Promise<RealRoot[]> | undefined;

  /** A plain path is a read-only root, as in the configuration. */
  constructor(roots: ReadonlyArray<string | AllowedRoot>) {
    this.roots = roots.map((r) => (typeof r === 'string' ? { path: r, writable: false } : r));
  }

  private async real(): Promise<RealRoot[]> {
    this.resolved ??= Promise.all(
      this.roots.map(async (r) => {
        try {
          return { ...r, real: await realpath(r.path) };
        } catch {
          return { ...r, real: normalize(r.path) };
        }
      }),
    );
    return this.resolved;
  }

  describe(): string {
    return this.roots.length > 0
      ? this.roots.map((r) => (r.writable ? `${r.path} (writable)` : r.path)).join(', ')
      : '(none configured: storage.allowedRoots is empty)';
  }

  /** The host path of a `file://` URL or bare absolute path. */
  static pathOf(url: string, field: string): string {
    let path: string;
    if (url.startsWith('file://')) {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        throw new StagingError(field, `${url} is not a valid file:// URL`);
      }
      if (parsed.host !== '' && parsed.host !== 'localhost') {
        throw new StagingError(
          field,
          `${url} names host ${parsed.host}; only paths on the shared filesystem are supported`,
        );
      }
      path = decodeURIComponent(parsed.pathname);
    } else {
      path = url;
    }
    if (!isAbsolute(path)) throw new StagingError(field, `${url} is not an absolute path`);
    return path;
  }

  /**
   * The real path behind `path`, if it lies inside an allowed root. For a path that does not exist yet
   * (an output), its nearest existing ancestor is resolved instead.
   */
  async check(url: string, path: string, field: string, mustExist: boolean): Promise<string> {
    // The URL parser folds `..` away before the path is seen: look at what the client wrote.
    if (hasDotDotSegment(path) || hasDotDotSegment(url)) {
      throw new StagingError(field, `${url} contains '..'; allowed roots: ${this.describe()}`);
    }
    let real: string;
    try {
      real = await realpath(path);
    } catch {
      if (mustExist) throw new StagingError(field, `${url} does not exist on the gateway host`);
      real = await realExisting(path);
    }
    const roots = await this.real();
    if (!roots.some((root) => within(real, root.real))) {
      throw new StagingError(field, `${url} is outside the allowed roots (${this.describe()})`);
    }
    return real;
  }

  /** Checks a `file://` input (it must exist) and tells how it is to be bound. */
  async locateInput(url: string, field: string): Promise<InputLocation> {
    const real = await this.check(url, AllowedRoots.pathOf(url, field), field, true);
    const writable = (await this.real()).filter((r) => r.writable);
    const around = writable.find((r) => within(real, r.real));
    if (around) return { real, writableRoot: around.real, writableBelow: [] };
    return { real, writableBelow: writable.filter((r) => within(r.real, real)).map((r) => r.real) };
  }

  /**
   * Checks a `file://` input by its path as written, without reading anything on the host: for tasks
   * that run as their owners (identity.runAs user), whose files the gateway's own account may not be
   * able to see. The job script, running as the owner, then resolves the path, checks that it still
   * lies inside `root` and that its owner may read it (the kernel's permissions, not the gateway's).
   */
  locateAsOwner(url: string, field: string): InputLocation & { root: string } {
    const path = AllowedRoots.pathOf(url, field);
    if (hasDotDotSegment(path) || hasDotDotSegment(url)) {
      throw new StagingError(field, `${url} contains '..'; allowed roots: ${this.describe()}`);
    }
    const lexical = normalize(path).replace(/(.)\/+$/, '$1');
    const around = this.roots
      .filter((r) => within(lexical, normalize(r.path).replace(/(.)\/+$/, '$1')))
      .sort((a, b) => b.path.length - a.path.length);
    const root = around[0];
    if (!root) throw new StagingError(field, `${url} is outside the allowed roots (${this.describe()})`);
    const writable = around.find((r) => r.writable);
    if (writable) return { real: lexical, writableRoot: writable.path, writableBelow: [], root: root.path };
    const below = this.roots
      .filter((r) => r.writable && within(normalize(r.path), lexical))
      .map((r) => r.path);
    return { real: lexical, writableBelow: below, root: root.path };
  }

  /**
   * Creates (or truncates) the file a `file://` output URL names, for writing, and its missing
   * directories. The URL is checked as `check` does; then the path is walked down from the root one
   * directory at a time, each opened without following a link and the next one looked up in the one
   * opened: a task may change a writable root while this runs, and a link it makes after the check
   * must not carry the file elsewhere.
   */
  async createFile(url: string, field: string): Promise<FileHandle> {
    const target = await this.check(url, AllowedRoots.pathOf(url, field), field, false);
    const root = (await this.real())
      .filter((r) => within(target, r.real))
      .reduce((a, b) => (b.real.length > a.real.length ? b : a));
    const parts = relative(root.real, target).split(sep);
    const name = parts.pop();
    if (!name) throw new StagingError(field, `${url} is an allowed root, not a file`);
    let dir = await open(root.real, constants.O_RDONLY | constants.O_DIRECTORY).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      throw new StagingError(field, `${url}: the allowed root ${root.path} does not exist`);
    });
    try {
      let walked = root.real;
      for (const part of parts) {
        walked = `${walked}${walked.endsWith(sep) ? '' : sep}${part}`;
        const next = await openDirBelow(dir, part, walked, url, field);
        await dir.close();
        dir = next;
      }
      return await createBelow(dir, name, url, field);
    } finally {
      await dir.close();
    }
  }
}

/** An open directory's entry, looked up in the directory itself rather than by its path again. */
function entryOf(dir: FileHandle, name: string): string {
  return `/proc/self/fd/${dir.fd}/${name}`;
}

async function openDirBelow(
  dir: FileHandle,
  name: string,
  path: string,
  url: string,
  field: string,
): Promise<FileHandle> {
  const flags = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
  for (let attempt = 0; ; attempt++) {
    try {
      return await open(entryOf(dir, name), flags);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && attempt === 0) {
        await mkdir(entryOf(dir, name)).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'EEXIST') throw e;
        });
        continue;
      }
      if (code !== 'ELOOP' && code !== 'ENOTDIR') throw err;
      // Linux answers ENOTDIR for a link opened as a directory without following it.
      const st = await lstat(entryOf(dir, name)).catch(() => undefined);
      if (code === 'ELOOP' || st?.isSymbolicLink())
        throw new StagingError(
          field,
          `${url}: ${path} became a symbolic link after it was checked; ${NO_LINKS}`,
        );
      throw new StagingError(field, `${url}: ${path} is not a directory`);
    }
  }
}

async function createBelow(dir: FileHandle, name: string, url: string, field: string): Promise<FileHandle> {
  let file: FileHandle;
  try {
    // Non-blocking, so that a FIFO in its place cannot hold the worker up.
    file = await open(
      entryOf(dir, name),
      constants.O_WRONLY |
        constants.O_CREAT |
        constants.O_TRUNC |
        constants.O_NOFOLLOW |
        constants.O_NONBLOCK,
      0o600,
    );
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP')
      throw new StagingError(field, `${url} became a symbolic link after it was checked; ${NO_LINKS}`);
    if (code === 'EISDIR') throw new StagingError(field, `${url} is a directory`);
    if (code === 'ENXIO') throw new StagingError(field, `${url} is not a regular file`);
    throw err;
  }
  if (!(await file.stat()).isFile()) {
    await file.close();
    throw new StagingError(field, `${url} is not a regular file`);
  }
  return file;
}

/**
 * The `storage` entries of service-info for the roots: `file://` URL prefixes ending in `/`. Clients
 * compare them with `file://` plus a path as text (Toil mounts its job store when one is a prefix), so
 * the path is written as configured, not percent-encoded.
 */
export function rootUrls(roots: ReadonlyArray<string | AllowedRoot>): string[] {
  return roots.map((r) => {
    const path = normalize(typeof r === 'string' ? r : r.path).replace(/\/+$/, '');
    return `file://${path}/`;
  });
}

/** Whether `inner` is `outer` or lies below it. */
export function within(inner: string, outer: string): boolean {
  return inner === outer || inner.startsWith(outer.endsWith(sep) ? outer : outer + sep);
}

/**
 * The real path of `path` as far as it exists: its nearest existing ancestor resolved through symbolic
 * links, with the components that do not exist yet appended as written.
 */
export async function realExisting(path: string): Promise<string> {
  const rest: string[] = [];
  let cur = normalize(path);
  for (;;) {
    try {
      const real = await realpath(cur);
      return rest.length > 0 ? `${real}${real.endsWith(sep) ? '' : sep}${rest.reverse().join(sep)}` : real;
    } catch {
      const parent = dirname(cur);
      if (parent === cur) return path;
      rest.push(cur.slice(parent.length + (parent.endsWith(sep) ? 0 : 1)));
      cur = parent;
    }
  }
}
