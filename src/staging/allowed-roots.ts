import { realpath } from 'node:fs/promises';
import { dirname, isAbsolute, normalize, sep } from 'node:path';
import { StagingError } from './staging-error.js';

/**
 * The host folders a client may name in `file://` URLs and bare paths. Paths are resolved through
 * symlinks before the check, so a link inside a root that points outside it is refused too.
 */
export class AllowedRoots {
  private resolved: Promise<string[]> | undefined;

  constructor(readonly roots: readonly string[]) {}

  private async real(): Promise<string[]> {
    this.resolved ??= Promise.all(
      this.roots.map(async (r) => {
        try {
          return await realpath(r);
        } catch {
          return normalize(r);
        }
      }),
    );
    return this.resolved;
  }

  describe(): string {
    return this.roots.length > 0 ? this.roots.join(', ') : '(none configured: storage.allowedRoots is empty)';
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
    if (hasDotDot(path) || hasDotDot(safeDecode(url))) {
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
    if (!roots.some((root) => real === root || real.startsWith(root.endsWith(sep) ? root : root + sep))) {
      throw new StagingError(field, `${url} is outside the allowed roots (${this.describe()})`);
    }
    return real;
  }
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

function hasDotDot(text: string): boolean {
  return text.split(/[/\\]/).includes('..');
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
