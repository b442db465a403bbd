import { copyFile, lstat, mkdir, readdir, rename } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { hostPathOf } from '../apptainer/container-plan.js';
import type { TesOutput, TesOutputFileLog } from '../tes/types.js';
import { AllowedRoots } from './allowed-roots.js';
import { globToRegExp, hasWildcard } from './glob.js';
import { schemeOf } from './stage-inputs.js';
import { StagingError } from './staging-error.js';

/** Sends one local file to a remote URL (s3://...). */
export interface OutputUploader {
  readonly schemes: readonly string[];
  upload(localPath: string, url: string, field: string): Promise<void>;
}

export interface OutputDelivery {
  deliver(outputs: readonly TesOutput[], workDir: string): Promise<DeliveryResult>;
  readonly schemes: readonly string[];
}

export interface DeliveryResult {
  files: TesOutputFileLog[];
  /** One line per output that could not be delivered; any makes the task SYSTEM_ERROR. */
  errors: string[];
}

/**
 * Delivers a task's outputs after its executors finished (also when one failed: clients read exit
 * codes from outputs). FILE, DIRECTORY and wildcard outputs; `file://` and bare paths under the
 * allowed roots are moved (copied across filesystems); other schemes go to an uploader.
 */
export class OutputDeliverer implements OutputDelivery {
  constructor(
    private readonly roots: AllowedRoots,
    private readonly uploaders: readonly OutputUploader[],
  ) {}

  get schemes(): string[] {
    return ['file', ...this.uploaders.flatMap((u) => u.schemes)];
  }

  async deliver(outputs: readonly TesOutput[], workDir: string): Promise<DeliveryResult> {
    const files: TesOutputFileLog[] = [];
    const errors: string[] = [];
    for (const [index, output] of outputs.entries()) {
      const field = `outputs[${index}]`;
      try {
        for (const item of await this.expand(output, workDir, field)) {
          await this.send(item.source, item.url, field);
          files.push({ url: item.url, path: item.path, size_bytes: String(item.size) });
        }
      } catch (err) {
        errors.push(err instanceof StagingError ? err.message : `${field}: ${(err as Error).message}`);
      }
    }
    return { files, errors };
  }

  /** Every file an output stands for: its host source, container path, destination URL and size. */
  private async expand(output: TesOutput, workDir: string, field: string): Promise<DeliveryItem[]> {
    if (hasWildcard(output.path)) {
      const prefix = output.path_prefix ?? '';
      const pattern = globToRegExp(output.path);
      const literal = output.path.slice(0, output.path.search(/[*?[]/));
      const baseDir = literal.endsWith('/') ? literal.slice(0, -1) || '/' : posix.dirname(literal);
      const found = await walk(hostPathOf(workDir, baseDir), baseDir);
      return found
        .filter((f) => pattern.test(f.path))
        .map((f) => ({
          ...f,
          url: joinUrl(output.url, f.path.startsWith(prefix) ? f.path.slice(prefix.length) : f.path),
        }));
    }
    const source = hostPathOf(workDir, output.path);
    const st = await lstat(source).catch(() => undefined);
    if (!st)
      throw new StagingError(
        field,
        `${output.path} was not created by the executors, so it cannot be delivered to ${output.url}`,
      );
    if (output.type === 'DIRECTORY') {
      if (!st.isDirectory()) throw new StagingError(field, `${output.path} is not a directory`);
      const found = await walk(source, output.path);
      return found.map((f) => ({ ...f, url: joinUrl(output.url, posix.relative(output.path, f.path)) }));
    }
    if (!st.isFile())
      throw new StagingError(field, `${output.path} is not a regular file (set type DIRECTORY for a folder)`);
    return [{ source, path: output.path, size: st.size, url: output.url }];
  }

  private async send(source: string, url: string, field: string): Promise<void> {
    const scheme = schemeOf(url);
    if (scheme === 'file') {
      const target = await this.roots.check(url, AllowedRoots.pathOf(url, field), field, false);
      await mkdir(dirname(target), { recursive: true });
      try {
        await rename(source, target);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
        await copyFile(source, target);
      }
      return;
    }
    const uploader = this.uploaders.find((u) => u.schemes.includes(scheme));
    if (!uploader) {
      throw new StagingError(
        field,
        `${scheme}:// URLs are not supported for outputs (supported: ${this.schemes.join(', ')}); ${url}`,
      );
    }
    await uploader.upload(source, url, field);
  }
}

interface DeliveryItem {
  source: string;
  path: string;
  size: number;
  url: string;
}

/** Every regular file below `hostDir`, with its container path. Symlinks are not followed. */
async function walk(
  hostDir: string,
  containerDir: string,
): Promise<Array<{ source: string; path: string; size: number }>> {
  const out: Array<{ source: string; path: string; size: number }> = [];
  let entries;
  try {
    entries = await readdir(hostDir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const source = join(hostDir, e.name);
    const path = posix.join(containerDir, e.name);
    if (e.isDirectory()) out.push(...(await walk(source, path)));
    else if (e.isFile()) out.push({ source, path, size: (await lstat(source)).size });
  }
  return out;
}

function joinUrl(base: string, rest: string): string {
  const tail = rest.replace(/^\/+/, '');
  return tail === '' ? base : `${base.replace(/\/+$/, '')}/${tail}`;
}
