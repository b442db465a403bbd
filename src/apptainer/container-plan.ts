import { posix } from 'node:path';
import type { TaskRequest } from '../tes/types.js';

/**
 * Where every container path of a task lives on the host, decided once per task (pure).
 *
 * - Inputs are bound read-only at their exact path, from wherever staging put them.
 * - Every place an executor writes (volumes, output files and directories, workdir, stdout/stderr
 *   files) is a writable host directory `<task>/mnt/<container path>` bound at that path; nested
 *   ones are folded into the outermost, so executors share what they write.
 * - /tmp and /var/tmp are private directories of the task.
 * - Binds are applied outermost first; where a bind lands inside another bind, its mount point is
 *   created in the outer bind's host directory beforehand.
 */

export interface Bind {
  src: string;
  dst: string;
  readOnly: boolean;
  kind: 'file' | 'dir';
}

export interface StagedInput {
  /** Index in the task's inputs. */
  index: number;
  hostPath: string;
  containerPath: string;
  kind: 'file' | 'dir';
}

/** A writable place of the task: the host directory behind a writable bind. */
export interface WritablePlace {
  /** The host directory (the bind's `src`). */
  src: string;
  /** Where executors see it (the bind's `dst`). */
  dst: string;
}

/** A file behind an executor's stdin, stdout or stderr. */
export interface StreamFile {
  /** The container path the task named. */
  path: string;
  /** Where it lies on the host. */
  host: string;
  /**
   * The writable place it lies in. The task may have put links there, so the job script resolves the
   * host path after the executors before it and keeps to the place. A stdin that is a read-only input
   * has none: the gateway staged it, and the task cannot change it.
   */
  place?: WritablePlace;
}

export interface ExecutorPlan {
  index: number;
  image: string;
  command: string[];
  workdir?: string;
  env: Record<string, string>;
  stdin?: StreamFile;
  stdout?: StreamFile;
  stderr?: StreamFile;
  ignoreError: boolean;
}

/**
 * A host directory or empty file to create before the job runs, below `base`: a directory that exists
 * already and that no task has had its hands on (the task directory, or a read-only input directory).
 * Creation walks down from `base` and refuses to pass a symbolic link.
 */
export interface LayoutEntry {
  path: string;
  kind: 'dir' | 'file';
  base: string;
}

export interface ContainerPlan {
  binds: Bind[];
  executors: ExecutorPlan[];
  /** Host directories and empty files to create before the job runs, in creation order. */
  layout: LayoutEntry[];
}

export class PlanError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'PlanError';
  }
}

const WILDCARD = /[*?[]/;

/**
 * Linear in the size of the task: every "which bind holds this path" question walks a trie of the
 * binds' destinations along the path's segments, instead of comparing each path with every bind.
 */
export function planContainer(
  task: TaskRequest,
  workDir: string,
  inputs: readonly StagedInput[],
  resolveImage: (image: string) => string = (i) => i,
): ContainerPlan {
  const mnt = posix.join(workDir, 'mnt');
  const writable = new Set<string>();
  for (const v of task.volumes ?? []) writable.add(clean(v));
  for (const o of task.outputs ?? []) {
    const path = clean(o.path);
    if (WILDCARD.test(path)) writable.add(literalDir(path));
    else writable.add(o.type === 'DIRECTORY' ? path : posix.dirname(path));
  }
  task.executors.forEach((ex) => {
    if (ex.workdir) writable.add(clean(ex.workdir));
    for (const p of [ex.stdout, ex.stderr]) if (p) writable.add(posix.dirname(clean(p)));
  });
  writable.delete('/');

  // Nested writable places fold into the outermost, so executors share what they write.
  const places = new PathTrie<true>();
  for (const p of writable) places.add(p, true);
  const outermost = [...writable]
    .filter((p) => places.deepestAbove(p) === undefined)
    .sort((a, b) => a.length - b.length);

  const binds: Bind[] = [
    { src: posix.join(workDir, 'tmp'), dst: '/tmp', readOnly: false, kind: 'dir' },
    { src: posix.join(workDir, 'var-tmp'), dst: '/var/tmp', readOnly: false, kind: 'dir' },
    ...outermost
      .filter((p) => p !== '/tmp' && p !== '/var/tmp')
      .map((p): Bind => ({ src: posix.join(mnt, p), dst: p, readOnly: false, kind: 'dir' })),
    ...inputs.map((i): Bind => ({
      src: i.hostPath,
      dst: clean(i.containerPath),
      readOnly: true,
      kind: i.kind,
    })),
  ];
  // Outer binds first: a bind inside another must be mounted after it.
  const depths = new Map(binds.map((b) => [b, depth(b.dst)]));
  binds.sort((a, b) => depths.get(a)! - depths.get(b)!);

  // Where several binds share a destination, the first in mount order answers, as it always has.
  const byDst = new PathTrie<Bind>();
  const dirsByDst = new PathTrie<Bind>();
  for (const b of binds) {
    byDst.add(b.dst, b);
    if (b.kind === 'dir') dirsByDst.add(b.dst, b);
  }

  const layout: LayoutEntry[] = [
    { path: posix.join(workDir, 'tmp'), kind: 'dir', base: workDir },
    { path: posix.join(workDir, 'var-tmp'), kind: 'dir', base: workDir },
  ];
  for (const b of binds) {
    if (!b.readOnly) layout.push({ path: b.src, kind: 'dir', base: workDir });
    const parent = dirsByDst.deepestAbove(b.dst);
    if (!parent) continue;
    // A mount point inside a read-only input is made in the input's own directory, not below the task.
    const base = parent.readOnly ? parent.src : workDir;
    const point = posix.join(parent.src, posix.relative(parent.dst, b.dst));
    if (b.kind === 'dir') layout.push({ path: point, kind: 'dir', base });
    else {
      layout.push({ path: posix.dirname(point), kind: 'dir', base });
      layout.push({ path: point, kind: 'file', base });
    }
  }

  const streamFile = (containerPath: string, field: string): StreamFile => {
    const path = clean(containerPath);
    const bind = byDst.at(path) ?? dirsByDst.deepestAbove(path);
    if (!bind)
      throw new PlanError(field, `${containerPath} is not inside an input, output, volume or workdir`);
    const host = bind.dst === path ? bind.src : posix.join(bind.src, posix.relative(bind.dst, path));
    return bind.readOnly
      ? { path: containerPath, host }
      : { path: containerPath, host, place: { src: bind.src, dst: bind.dst } };
  };

  const executors = task.executors.map((ex, index): ExecutorPlan => {
    const plan: ExecutorPlan = {
      index,
      image: resolveImage(ex.image),
      command: ex.command,
      env: ex.env ?? {},
      ignoreError: ex.ignore_error === true,
    };
    if (ex.workdir) plan.workdir = clean(ex.workdir);
    if (ex.stdin) plan.stdin = streamFile(ex.stdin, `executors[${index}].stdin`);
    for (const stream of ['stdout', 'stderr'] as const) {
      const path = ex[stream];
      if (!path) continue;
      const field = `executors[${index}].${stream}`;
      const file = streamFile(path, field);
      // Copying there would write into the client's own file, which the task may only read.
      if (!file.place) throw new PlanError(field, `${path} is a read-only input`);
      plan[stream] = file;
    }
    return plan;
  });

  return { binds, executors, layout: uniqueBy(layout, (e) => `${e.kind} ${e.path}`) };
}

function clean(path: string): string {
  const p = posix.normalize(path);
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

/** The directory part of a wildcard path before its first wildcard: `/data/x*.txt` -> `/data`. */
function literalDir(path: string): string {
  const head = path.slice(0, path.search(WILDCARD));
  return clean(head.endsWith('/') ? head : posix.dirname(head));
}

function isInside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === '/' ? '/' : `${dir}/`);
}

function depth(path: string): number {
  return path === '/' ? 0 : path.split('/').length - 1;
}

/**
 * One value per absolute path (the first filed there), found again by walking a path's segments from
 * the root: each lookup costs the length of the path, whatever the number of paths filed.
 */
class PathTrie<T> {
  private readonly root: TrieNode<T> = {};

  add(path: string, value: T): void {
    let node = this.root;
    for (const s of segments(path)) {
      node.children ??= new Map();
      let child = node.children.get(s);
      if (!child) {
        child = {};
        node.children.set(s, child);
      }
      node = child;
    }
    node.filled ??= { value };
  }

  /** The value filed under exactly this path. */
  at(path: string): T | undefined {
    let node: TrieNode<T> | undefined = this.root;
    for (const s of segments(path)) {
      node = node.children?.get(s);
      if (!node) return undefined;
    }
    return node.filled?.value;
  }

  /** The value of the deepest proper ancestor of `path` that has one. */
  deepestAbove(path: string): T | undefined {
    let node: TrieNode<T> | undefined = this.root;
    let best: T | undefined;
    const parts = segments(path);
    for (let i = 0; i < parts.length && node; i++) {
      if (node.filled) best = node.filled.value;
      node = node.children?.get(parts[i]!);
    }
    return best;
  }
}

interface TrieNode<T> {
  children?: Map<string, TrieNode<T>>;
  filled?: { value: T };
}

function segments(path: string): string[] {
  return path.split('/').filter((s) => s !== '');
}

function uniqueBy<T>(list: readonly T[], key: (item: T) => string): T[] {
  const seen = new Set<string>();
  return list.filter((item) => {
    const k = key(item);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** The host directories that hold everything executors can write: `mnt/`, `tmp/` and `var-tmp/`. */
export function writableRoots(workDir: string): string[] {
  return ['mnt', 'tmp', 'var-tmp'].map((d) => posix.join(workDir, d));
}

/** Where a container path that an executor writes (an output) lives on the host, after the job. */
export function hostPathOf(workDir: string, containerPath: string): string {
  const path = clean(containerPath);
  if (isInside(path, '/tmp')) return posix.join(workDir, 'tmp', posix.relative('/tmp', path));
  if (isInside(path, '/var/tmp')) return posix.join(workDir, 'var-tmp', posix.relative('/var/tmp', path));
  return posix.join(workDir, 'mnt', path);
}
