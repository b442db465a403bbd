import { lstat, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inputDir, inputFile } from '../tes/task-directory.js';
import type { StagedInput } from '../apptainer/container-plan.js';
import type { TesInput } from '../tes/types.js';
import pLimit from 'p-limit';
import type { AllowedRoots } from './allowed-roots.js';
import { DownloadBudget, type DownloadLimits } from './download-budget.js';
import { StagingError } from './staging-error.js';
import type { StagingMetrics } from '../observability/metrics.js';

/** Downloads one remote input (a file or a directory tree) to a path on the gateway host. */
export interface InputFetcher {
  /** URL schemes it serves, without the colon: `http`, `s3`. */
  readonly schemes: readonly string[];
  /**
   * `budget` is the task's, shared with its other inputs; without one (a fetcher used on its own)
   * nothing but the fetcher's own limits applies.
   */
  fetch(
    url: string,
    dest: string,
    type: 'FILE' | 'DIRECTORY',
    field: string,
    budget?: DownloadBudget,
  ): Promise<void>;
}

export interface StagingDeps {
  roots: AllowedRoots;
  fetchers: readonly InputFetcher[];
  /** Downloads of one task running at once. */
  parallel: number;
  /** What all of one task's downloads together may use. */
  limits: DownloadLimits;
  /**
   * The task runs as its owner (identity.runAs user): `file://` inputs are checked by path here and
   * by the job as the owner (AllowedRoots.locateAsOwner); the gateway does not look at them.
   */
  asOwner?: boolean | undefined;
  /** Bytes written or downloaded, by scheme (`file://` inputs are bound, never copied: none). */
  metrics?: StagingMetrics | undefined;
}

/** The URL schemes a task's inputs may use with these fetchers (for service-info). */
export function inputSchemes(fetchers: readonly InputFetcher[]): string[] {
  return ['file', ...fetchers.flatMap((f) => f.schemes)];
}

/**
 * Puts every input where the job can bind it: `content` is written into the task directory; `file://`
 * URLs and bare paths under the allowed roots are bound where they are (never copied), read-write when
 * the root is writable; remote URLs are downloaded, each distinct URL once per task, a few at a time,
 * within one budget for the task.
 */
export async function stageInputs(
  inputs: readonly TesInput[],
  workDir: string,
  deps: StagingDeps,
): Promise<StagedInput[]> {
  const limiter = pLimit(deps.parallel);
  const downloads = new Map<string, Promise<string>>();
  const budget = new DownloadBudget(deps.limits);
  return Promise.all(
    inputs.map(async (input, index): Promise<StagedInput> => {
      const field = `inputs[${index}]`;
      const kind = input.type === 'DIRECTORY' ? 'dir' : 'file';
      const base: Omit<StagedInput, 'hostPath'> = { index, containerPath: input.path, kind };
      if (input.content !== undefined) {
        const dir = inputDir(workDir, index);
        await mkdir(dir, { recursive: true, mode: 0o700 });
        const hostPath = inputFile(workDir, index, 'content');
        await writeFile(hostPath, input.content, { mode: 0o600 });
        deps.metrics?.staged('in', 'content', Buffer.byteLength(input.content));
        return { ...base, hostPath };
      }
      const url = input.url ?? '';
      const scheme = schemeOf(url);
      if (scheme === 'file' && deps.asOwner) {
        const where = deps.roots.locateAsOwner(url, field);
        const staged: StagedInput = { ...base, hostPath: where.real, ownerRoot: where.root };
        if (where.writableRoot !== undefined) staged.writableRoot = where.writableRoot;
        else if (where.writableBelow.length > 0) staged.writableBelow = where.writableBelow;
        return staged;
      }
      if (scheme === 'file') {
        const where = await deps.roots.locateInput(url, field);
        const st = await stat(where.real);
        if (kind === 'dir' && !st.isDirectory()) throw new StagingError(field, `${url} is not a directory`);
        if (kind === 'file' && !st.isFile())
          throw new StagingError(field, `${url} is not a regular file (set type DIRECTORY for a folder)`);
        const staged: StagedInput = { ...base, hostPath: where.real };
        if (where.writableRoot !== undefined) staged.writableRoot = where.writableRoot;
        else if (where.writableBelow.length > 0) staged.writableBelow = where.writableBelow;
        return staged;
      }
      const fetcher = deps.fetchers.find((f) => f.schemes.includes(scheme));
      if (!fetcher) {
        throw new StagingError(
          field,
          `${scheme}:// URLs are not supported by this gateway (supported: ${inputSchemes(deps.fetchers).join(', ')}); ${url}`,
        );
      }
      const key = `${input.type ?? 'FILE'} ${url}`;
      let download = downloads.get(key);
      if (!download) {
        const dest = inputFile(workDir, index, 'data');
        download = limiter(async () => {
          await mkdir(inputDir(workDir, index), { recursive: true, mode: 0o700 });
          await fetcher.fetch(url, dest, input.type === 'DIRECTORY' ? 'DIRECTORY' : 'FILE', field, budget);
          if (deps.metrics) deps.metrics.staged('in', scheme, await bytesUnder(dest).catch(() => 0));
          return dest;
        });
        downloads.set(key, download);
      }
      return { ...base, hostPath: await download };
    }),
  );
}

/** Bytes of the regular files at or under `path`, links not followed. */
async function bytesUnder(path: string): Promise<number> {
  const st = await lstat(path);
  if (st.isFile()) return st.size;
  if (!st.isDirectory()) return 0;
  let total = 0;
  for (const entry of await readdir(path)) total += await bytesUnder(join(path, entry));
  return total;
}

/** `file` for bare absolute paths, else the URL's scheme in lower case. */
export function schemeOf(url: string): string {
  if (url.startsWith('/')) return 'file';
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url);
  return m ? m[1]!.toLowerCase() : '';
}
