import { posix } from 'node:path';
import { WRITABLE_DIR, writableDir } from '../tes/task-directory.js';
import type { TaskRequest } from '../tes/types.js';
import { PermanentError } from '../errors.js';

/**
 * Where every container path of a task lives on the host, decided once per task (pure).
 *
 * - Inputs are bound read-only at their exact path, from wherever staging put them; an input in a
 *   writable allowed root is bound read-write in place instead (a shared input: Toil's file job
 *   store, a work directory on the shared filesystem), so executors write the client's own folder.
 * - Every place an executor writes (volumes, output files and directories, workdir, stdout/stderr
 *   files) is a writable host directory `<task>/mnt/<container path>` bound at that path; nested
 *   ones are folded into the outermost, so executors share what they write.
 * - /tmp and /var/tmp are private directories of the task.
 * - Binds are applied outermost first; where a bind lands inside another bind, its mount point is
 *   created in the outer bind's host directory beforehand.
 *
 * A shared input is the client's folder, which other tasks may change (and fill with links) at any
 * time, so the gateway makes nothing there and reads nothing from there:
 * - no mount point: a bind inside a shared input is refused, unless it is an input whose source is
 *   the very path it lands on (it exists already); so is a bind whose mount point would lie in a
 *   writable root below a read-only directory input;
 * - no output, volume, stdout or stderr at or inside a shared input (the gateway delivers outputs and
 *   copies streams only from the task's own places), and no stdin there;
 * - a workdir at or inside a shared input gets no place of its own: executors work in the folder,
 *   which must have that directory.
 */

export interface Bind {
  src: string;
  dst: string;
  readOnly: boolean;
  kind: 'file' | 'dir';
  /** Set on a shared input: bound read-write in place from a writable allowed root. */
  shared?: SharedSource;
  /**
   * Set on a `file://` input of a task run as its owner: the job script checks, as the owner, that it
   * lies inside this root, is of its kind and is readable, before any executor runs.
   */
  owned?: SharedSource;
}

/**
 * Where a shared input comes from. Any task may make links in a writable root, so the job script
 * checks before each executor that the source still resolves inside the root.
 */
export interface SharedSource {
  /** The input's field: `inputs[3]`. */
  field: string;
  /** The real path of the writable root on the gateway host. */
  root: string;
}

export interface StagedInput {
  /** Index in the task's inputs. */
  index: number;
  hostPath: string;
  containerPath: string;
  kind: 'file' | 'dir';
  /** The real path of the writable allowed root it lies in: it is bound read-write in place. */
  writableRoot?: string;
  /** Real paths of writable allowed roots inside this read-only directory input. */
  writableBelow?: readonly string[];
  /** The allowed root a `file://` input of a task run as its owner lies in, checked by the job (Bind.owned). */
  ownerRoot?: string;
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

export class PlanError extends PermanentError {
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
  const mnt = writableDir(workDir, 'mnt');
  const inputBinds = inputs.map((i): Bind => {
    const bind: Bind = { src: i.hostPath, dst: clean(i.containerPath), readOnly: true, kind: i.kind };
    if (i.ownerRoot !== undefined) bind.owned = { field: `inputs[${i.index}]`, root: i.ownerRoot };
    if (i.writableRoot === undefined) return bind;
    return { ...bind, readOnly: false, shared: { field: `inputs[${i.index}]`, root: i.writableRoot } };
  });
  const fields = new Map<Bind, string>(inputs.map((i, n) => [inputBinds[n]!, `inputs[${i.index}]`]));
  const shared = new PathTrie<Bind>();
  for (const b of inputBinds) if (b.shared) shared.add(b.dst, b);
  const sharedAt = (path: string): Bind | undefined => shared.at(path) ?? shared.deepestAbove(path);

  // Each place with the first field that asked for it, for messages.
  const writable = new Map<string, string>();
  // `named` is the path the client wrote, for the message: an output file rather than its directory.
  const want = (path: string, field: string, named: string): void => {
    const around = sharedAt(path);
    if (around) {
      throw new PlanError(
        field,
        `${named} lies in ${around.dst}, the writable input ${around.shared!.field} bound in place from ` +
          `${around.src}; outputs, volumes and streams are the task's own and must lie outside it`,
      );
    }
    if (!writable.has(path)) writable.set(path, field);
  };
  task.volumes?.forEach((v, i) => want(clean(v), `volumes[${i}]`, v));
  task.outputs?.forEach((o, i) => {
    const path = clean(o.path);
    const field = `outputs[${i}]`;
    if (WILDCARD.test(path)) want(literalDir(path), field, o.path);
    else want(o.type === 'DIRECTORY' ? path : posix.dirname(path), field, o.path);
  });
  task.executors.forEach((ex, i) => {
    // Executors work in the shared folder itself: a place of the task there would need a mount point.
    if (ex.workdir && !sharedAt(clean(ex.workdir)))
      want(clean(ex.workdir), `executors[${i}].workdir`, ex.workdir);
    for (const stream of ['stdout', 'stderr'] as const) {
      const p = ex[stream];
      if (p) want(posix.dirname(clean(p)), `executors[${i}].${stream}`, p);
    }
  });
  writable.delete('/');

  // Nested writable places fold into the outermost, so executors share what they write.
  const places = new PathTrie<true>();
  for (const p of writable.keys()) places.add(p, true);
  const outermost = [...writable.keys()]
    .filter((p) => places.deepestAbove(p) === undefined)
    .sort((a, b) => a.length - b.length);

  const binds: Bind[] = [
    { src: writableDir(workDir, 'tmp'), dst: '/tmp', readOnly: false, kind: 'dir' },
    { src: writableDir(workDir, 'varTmp'), dst: '/var/tmp', readOnly: false, kind: 'dir' },
    ...outermost
      .filter((p) => p !== '/tmp' && p !== '/var/tmp')
      .map((p): Bind => ({ src: posix.join(mnt, p), dst: p, readOnly: false, kind: 'dir' })),
    ...inputBinds,
  ];
  const writableBelow = new Map<Bind, readonly string[]>();
  inputs.forEach((i, n) => {
    if (i.writableBelow && i.writableBelow.length > 0) writableBelow.set(inputBinds[n]!, i.writableBelow);
  });
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

  // The container's /tmp and /var/tmp are made by the job script as it starts (JOB_MADE_DIRS): on a
  // cluster that is on the compute node, not two more files made on the gateway per task.
  const jobMade = new Set(JOB_MADE_DIRS.map((d) => posix.join(workDir, d)));
  const layout: LayoutEntry[] = [];
  const label = (b: Bind): string => fields.get(b) ?? writable.get(b.dst) ?? `the task's ${b.dst}`;
  for (const b of binds) {
    if (!b.readOnly && !b.shared && !jobMade.has(b.src))
      layout.push({ path: b.src, kind: 'dir', base: workDir });
    const parent = dirsByDst.deepestAbove(b.dst);
    if (!parent) continue;
    const point = posix.join(parent.src, posix.relative(parent.dst, b.dst));
    const changing = writableBelow.get(parent)?.find((root) => isInside(point, root));
    // An input that names the very path it lands on in the outer folder is there: nothing to make.
    if ((parent.shared || changing) && fields.has(b) && b.src === point) continue;
    if (parent.shared) {
      throw new PlanError(
        label(b),
        `${b.dst} lies in ${parent.dst}, the writable input ${parent.shared.field} bound in place from ` +
          `${parent.src}, where the gateway makes no mount points (tasks change that folder while ` +
          `they run); give it a path outside ${parent.dst}`,
      );
    }
    if (changing) {
      throw new PlanError(
        label(b),
        `${b.dst} would need a mount point at ${point}, in the writable root ${changing}, where the ` +
          `gateway makes no mount points (tasks change it while they run); give it a path outside ${parent.dst}`,
      );
    }
    // A mount point inside a read-only input is made in the input's own directory, not below the task.
    const base = parent.readOnly ? parent.src : workDir;
    if (b.kind === 'dir') layout.push({ path: point, kind: 'dir', base });
    else {
      layout.push({ path: posix.dirname(point), kind: 'dir', base });
      layout.push({ path: point, kind: 'file', base });
    }
  }

  // A place folded into an outer one (Sprocket's workdir /mnt/task/work beside its /mnt/task/stdout)
  // is made there before the job, as every place is made when it is a bind of its own: Apptainer's
  // --pwd needs the folder, and executors expect their volumes and output folders to exist. One that
  // lands inside an input or a shared folder is left alone.
  for (const p of writable.keys()) {
    if (byDst.at(p)) continue;
    const outer = dirsByDst.deepestAbove(p);
    if (!outer || outer.readOnly || outer.shared) continue;
    layout.push({ path: posix.join(outer.src, posix.relative(outer.dst, p)), kind: 'dir', base: workDir });
  }

  const streamFile = (containerPath: string, field: string): StreamFile => {
    const path = clean(containerPath);
    const bind = byDst.at(path) ?? dirsByDst.deepestAbove(path);
    if (!bind)
      throw new PlanError(field, `${containerPath} is not inside an input, output, volume or workdir`);
    if (bind.shared) {
      throw new PlanError(
        field,
        `${containerPath} lies in ${bind.dst}, the writable input ${bind.shared.field} bound in place from ` +
          `${bind.src}, where other tasks may make links while this one runs; the job reads and writes ` +
          "stream files only in read-only inputs and in the task's own places",
      );
    }
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

/**
 * The folders of the task directory that the job script makes itself, before the first executor:
 * the container's /tmp and /var/tmp. Nothing the task runs has been there yet, and the task
 * directory is the job's user's alone, so no link can stand in their place.
 */
export const JOB_MADE_DIRS: readonly string[] = [WRITABLE_DIR.tmp, WRITABLE_DIR.varTmp];

/** The host directories that hold everything executors can write: `mnt/`, `tmp/` and `var-tmp/`. */
export function writableRoots(workDir: string): string[] {
  return (Object.keys(WRITABLE_DIR) as Array<keyof typeof WRITABLE_DIR>).map((d) => writableDir(workDir, d));
}

/** Where a container path that an executor writes (an output) lives on the host, after the job. */
export function hostPathOf(workDir: string, containerPath: string): string {
  const path = clean(containerPath);
  if (isInside(path, '/tmp')) return posix.join(writableDir(workDir, 'tmp'), posix.relative('/tmp', path));
  if (isInside(path, '/var/tmp'))
    return posix.join(writableDir(workDir, 'varTmp'), posix.relative('/var/tmp', path));
  return posix.join(writableDir(workDir, 'mnt'), path);
}
