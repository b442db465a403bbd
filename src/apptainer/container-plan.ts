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

export interface ExecutorPlan {
  index: number;
  image: string;
  command: string[];
  workdir?: string;
  env: Record<string, string>;
  /** Host paths behind the executor's stdin/stdout/stderr container paths. */
  stdinHost?: string;
  stdoutHost?: string;
  stderrHost?: string;
  ignoreError: boolean;
}

export interface ContainerPlan {
  binds: Bind[];
  executors: ExecutorPlan[];
  /** Host directories and empty files to create before the job runs. */
  dirs: string[];
  files: string[];
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

  const outermost = [...writable]
    .sort((a, b) => a.length - b.length)
    .filter((p, i, all) => !all.slice(0, i).some((q) => isInside(p, q)));

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
  binds.sort((a, b) => depth(a.dst) - depth(b.dst));

  const dirs = [posix.join(workDir, 'tmp'), posix.join(workDir, 'var-tmp')];
  const files: string[] = [];
  for (const b of binds) {
    if (!b.readOnly) dirs.push(b.src);
    const parent = closestParent(b, binds);
    if (!parent) continue;
    const point = posix.join(parent.src, posix.relative(parent.dst, b.dst));
    if (b.kind === 'dir') dirs.push(point);
    else {
      dirs.push(posix.dirname(point));
      files.push(point);
    }
  }

  const toHost = (containerPath: string, field: string): string => {
    const path = clean(containerPath);
    const bind = closestBindOf(path, binds);
    if (!bind)
      throw new PlanError(field, `${containerPath} is not inside an input, output, volume or workdir`);
    return bind.dst === path ? bind.src : posix.join(bind.src, posix.relative(bind.dst, path));
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
    if (ex.stdin) plan.stdinHost = toHost(ex.stdin, `executors[${index}].stdin`);
    if (ex.stdout) plan.stdoutHost = toHost(ex.stdout, `executors[${index}].stdout`);
    if (ex.stderr) plan.stderrHost = toHost(ex.stderr, `executors[${index}].stderr`);
    return plan;
  });

  return { binds, executors, dirs: unique(dirs), files: unique(files) };
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

function closestParent(b: Bind, binds: readonly Bind[]): Bind | undefined {
  let best: Bind | undefined;
  for (const a of binds) {
    if (a === b || a.kind !== 'dir' || a.dst === b.dst || !isInside(b.dst, a.dst)) continue;
    if (!best || a.dst.length > best.dst.length) best = a;
  }
  return best;
}

function closestBindOf(path: string, binds: readonly Bind[]): Bind | undefined {
  let best: Bind | undefined;
  for (const b of binds) {
    if (b.dst !== path && (b.kind !== 'dir' || !isInside(path, b.dst))) continue;
    if (!best || b.dst.length > best.dst.length) best = b;
  }
  return best;
}

function unique(list: string[]): string[] {
  return [...new Set(list)];
}

/** Where a container path that an executor writes (an output) lives on the host, after the job. */
export function hostPathOf(workDir: string, containerPath: string): string {
  const path = clean(containerPath);
  if (isInside(path, '/tmp')) return posix.join(workDir, 'tmp', posix.relative('/tmp', path));
  if (isInside(path, '/var/tmp')) return posix.join(workDir, 'var-tmp', posix.relative('/var/tmp', path));
  return posix.join(workDir, 'mnt', path);
}
