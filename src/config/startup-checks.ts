import { stat } from 'node:fs/promises';
import { sep } from 'node:path';
import { ConfigError } from '../errors.js';
import { realExisting } from '../staging/allowed-roots.js';
import type { Config } from './schema.js';

/**
 * Settings that each pass the schema but are unsafe together, or unsafe for the user the gateway runs
 * as. They are checked once at start, and any problem stops it (exit 2 from the command line).
 */

/** What the checks need to know beyond the configuration; gathered by `checkStartup`. */
export interface StartupFacts {
  /** The process's uid; undefined where there are none (Windows). */
  uid: number | undefined;
  /** Whether this process runs the workers, which render job scripts and deliver outputs. */
  runsJobs: boolean;
  /** Each configured folder's real path, as far as it exists (symbolic links resolved). */
  realPaths: ReadonlyMap<string, string>;
  /** In `identity.runAs: user` mode: the helper's and the work root's owner and mode, where they exist. */
  runAs?: { helper?: FileFacts | undefined; workRoot?: FileFacts | undefined } | undefined;
}

export interface FileFacts {
  uid: number;
  mode: number;
  isFile: boolean;
  isDirectory: boolean;
}

/** Every problem with the configuration in these circumstances, as `setting: what is wrong`. */
export function findStartupProblems(config: Config, facts: StartupFacts): string[] {
  const problems: string[] = [];
  const real = (path: string): string => trimSeparators(facts.realPaths.get(path) ?? path);
  const shown = (path: string): string =>
    real(path) === trimSeparators(path) ? path : `${path} (${real(path)})`;
  const guarded: Array<{ key: string; path: string; harm: string }> = [
    {
      key: 'workRoot',
      path: config.workRoot,
      harm: "other tasks' files, their job scripts included, could be read and overwritten",
    },
  ];
  // The bwrap-host runtime runs no images, so its cache folder is never used.
  if (config.container.runtime !== 'bwrap-host') {
    guarded.push({
      key: 'container.imageCacheDir',
      path: config.container.imageCacheDir,
      harm: 'the images other tasks run could be read and replaced',
    });
  }
  const roots = config.storage.allowedRoots;
  roots.forEach(({ path: root }, i) => {
    for (const g of guarded) {
      const how =
        real(g.path) === real(root)
          ? `is ${g.key} ${shown(g.path)}`
          : within(real(g.path), real(root))
            ? `contains ${g.key} ${shown(g.path)}`
            : within(real(root), real(g.path))
              ? `lies inside ${g.key} ${shown(g.path)}`
              : undefined;
      if (!how) continue;
      problems.push(
        `storage.allowedRoots[${i}]: ${shown(root)} ${how}, so through file:// inputs and outputs ` +
          `${g.harm}; keep allowed roots apart from ${g.key}`,
      );
    }
  });
  // Executors write a writable root directly: an image root there would let a task replace an image
  // other tasks run, or run one it made. (The bwrap-host runtime runs no images.)
  if (config.container.runtime !== 'bwrap-host') {
    roots.forEach(({ path: root, writable }, i) => {
      if (!writable) return;
      config.container.imageRoots.forEach((images, j) => {
        if (!overlap(real(root), real(images))) return;
        problems.push(
          `storage.allowedRoots[${i}]: the writable root ${shown(root)} overlaps container.imageRoots[${j}] ` +
            `${shown(images)}, so a task could replace an image other tasks run, or run one it wrote ` +
            'itself; keep writable roots apart from the image roots',
        );
      });
    });
  }
  // Through a writable root, tasks write whatever lies inside it: a read-only root there would not be.
  roots.forEach(({ path: root, writable }, i) => {
    if (writable) return;
    const around = roots.findIndex((r) => r.writable && within(real(root), real(r.path)));
    if (around < 0) return;
    const other = roots[around]!.path;
    const how = real(other) === real(root) ? 'is also' : 'lies inside';
    problems.push(
      `storage.allowedRoots[${i}]: the read-only root ${shown(root)} ${how} the writable root ` +
        `storage.allowedRoots[${around}] ${shown(other)}, so tasks could write it anyway; ` +
        'keep read-only roots out of writable ones',
    );
  });
  // A task writes its own task directory: an image root there would let it run an image it made.
  config.container.imageRoots.forEach((root, i) => {
    if (!overlap(real(root), real(config.workRoot))) return;
    problems.push(
      `container.imageRoots[${i}]: ${shown(root)} overlaps workRoot ${shown(config.workRoot)}, so a task ` +
        'could run an image file it wrote itself; keep image roots apart from the work root',
    );
  });
  if (config.backend === 'slurm' && facts.runsJobs && facts.uid === 0 && !config.security.allowRoot) {
    problems.push(
      'security.allowRoot: the gateway runs as root (uid 0) with the slurm backend, so job scripts and ' +
        'output delivery would run as root, and a task that tricks either one would have the whole ' +
        'host; run it as a service account, or set security.allowRoot: true where that is impossible',
    );
  }
  if (config.identity.runAs === 'user') problems.push(...runAsProblems(config, facts));
  return problems;
}

/**
 * `identity.runAs: user` needs owners for tasks, Slurm, an unprivileged gateway, the helper installed
 * as root left it, and a work root where each user makes their own task directories and no one else's.
 */
function runAsProblems(config: Config, facts: StartupFacts): string[] {
  const problems: string[] = [];
  const key = 'identity.runAs';
  if (config.backend !== 'slurm') {
    problems.push(`${key}: user needs backend slurm (the local backend runs jobs as the gateway itself)`);
  }
  if (config.auth.mode === 'none') {
    problems.push(
      `${key}: user needs auth.mode tokens or oidc, so that every task has an owner to run as (docs/authentication.md)`,
    );
  }
  if (facts.runsJobs && facts.uid === 0) {
    problems.push(
      `${key}: user runs jobs as their owners through sudo and the helper; the gateway itself must not be root: ` +
        'run it as the service account the sudoers rule names (docs/security.md)',
    );
  }
  if (!facts.runsJobs) return problems;
  const helper = facts.runAs?.helper;
  const path = config.identity.helper.path;
  if (!helper || !helper.isFile) {
    problems.push(
      `identity.helper.path: ${path} is not an installed helper; install libexec/tes-gateway-helper there (docs/security.md)`,
    );
  } else if (helper.uid !== 0 || (helper.mode & 0o022) !== 0) {
    problems.push(
      `identity.helper.path: ${path} must belong to root and be writable by root alone (it is ` +
        `uid ${helper.uid}, mode ${(helper.mode & 0o7777).toString(8)}); anyone who can change it runs as every user`,
    );
  }
  const root = facts.runAs?.workRoot;
  if (root && (!root.isDirectory || (root.mode & 0o1003) !== 0o1003 || (root.mode & 0o004) !== 0)) {
    problems.push(
      `workRoot: ${config.workRoot} must be a directory with mode 1733 (sticky, users may make their task ` +
        `directories there but not list it or remove others'); it is mode ${(root.mode & 0o7777).toString(8)}: ` +
        `chmod 1733 ${config.workRoot}`,
    );
  }
  return problems;
}

/** Runs the checks for this process; throws a ConfigError listing every problem. */
export async function checkStartup(config: Config, runsJobs: boolean, source: string): Promise<void> {
  const paths = [
    config.workRoot,
    config.container.imageCacheDir,
    ...config.storage.allowedRoots.map((r) => r.path),
    ...config.container.imageRoots,
  ];
  const realPaths = new Map(await Promise.all(paths.map(async (p) => [p, await realExisting(p)] as const)));
  const runAs =
    config.identity.runAs === 'user'
      ? { helper: await fileFacts(config.identity.helper.path), workRoot: await fileFacts(config.workRoot) }
      : undefined;
  const problems = findStartupProblems(config, { uid: process.getuid?.(), runsJobs, realPaths, runAs });
  if (problems.length > 0) throw new ConfigError(source, problems);
}

async function fileFacts(path: string): Promise<FileFacts | undefined> {
  try {
    const st = await stat(path);
    return { uid: st.uid, mode: st.mode, isFile: st.isFile(), isDirectory: st.isDirectory() };
  } catch {
    return undefined;
  }
}

/** Whether one of two paths is, or lies below, the other. */
function overlap(a: string, b: string): boolean {
  return within(a, b) || within(b, a);
}

/** Whether `inner` is `outer` or lies below it. */
function within(inner: string, outer: string): boolean {
  return inner === outer || inner.startsWith(outer.endsWith(sep) ? outer : outer + sep);
}

function trimSeparators(path: string): string {
  return path.length > 1 ? path.replace(/\/+$/, '') || '/' : path;
}
