import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { mkdir, realpath, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { PermanentError } from '../errors.js';
import type { Logger } from '../logger.js';
import { retry, RetryAborted, type RetryGaveUp } from '../retry.js';
import { LeaderLock } from '../store/leader-lock.js';
import type { Keys } from '../store/keys.js';
import { imageScheme, isUnder, type ImagePolicy, type ImageResolver } from './images.js';
import { cacheFileName, checkReference, toCanonicalRef } from './image-refs.js';
import { evictionOrder, listImages, readCacheDir, readLastUse } from './image-eviction.js';
import { SingleFlight } from './single-flight.js';
import { isPermanentPullFailure, summarize } from './pull-failures.js';
import type { ImageMetrics } from '../observability/metrics.js';

/**
 * The shared SIF cache on the gateway host. Compute nodes often have no route to a registry, so every
 * image is pulled here, once, and the job script gets the cached file.
 *
 * "Once" holds across the workers of one process (they share the in-flight promise) and across
 * processes sharing the Redis (a lease per reference; the others poll for the file). The holder pulls
 * to a temporary name in the cache directory and renames it into place, so a reader never sees half
 * an image. Transient failures are retried with exponential backoff; permanent ones fail at once and
 * are remembered for a short time, so callers queued behind the failing pull fail fast with the same
 * message instead of asking the registry again.
 *
 * Tested against the real Redis and the apptainer stand-in (test/integration/image-cache.test.ts);
 * a real registry and real Apptainer are tried by hand.
 */

export interface ImageCacheOptions {
  redis: Redis;
  keys: Keys;
  /** Shared by every gateway process on this host (or on a shared file system). */
  cacheDir: string;
  /** apptainer or singularity: a name on PATH or an absolute path. */
  executable: string;
  /** Limit of one pull attempt. */
  pullTimeoutMs: number;
  /** Pull attempts for transient failures, the first included. */
  attempts: number;
  /** Wait before the second attempt; it doubles for each one after. */
  backoffMs: number;
  /** Evict least recently used images after a pull while the cache holds more. */
  maxBytes?: number | undefined;
  /** Which images tasks may use: checked again here, after symbolic links are resolved. */
  policy: ImagePolicy;
  /** Cache paths that active tasks still use: never evicted. */
  inUse?: (() => Promise<Set<string>>) | undefined;
  logger: Logger;
  /** Lease of a pull; renewed at a third of it, so it only expires when its holder died. */
  lockTtlMs?: number | undefined;
  /** How long a permanent failure is remembered. */
  failureTtlMs?: number | undefined;
  /** How often a process waiting for another's pull looks again. */
  pollIntervalMs?: number | undefined;
  /**
   * Images used more recently than this are not evicted: between resolve() and the moment a task
   * counts as active, its image is protected by nothing else.
   */
  evictMinIdleMs?: number | undefined;
  /**
   * How long the image roots' resolved paths are used before their links are resolved again (a
   * minute by default): a root whose link a site moves is judged by its new target within this.
   */
  rootsRefreshMs?: number | undefined;
  /** Hits, pulls, failures and pulled bytes. */
  metrics?: ImageMetrics | undefined;
}

/** An executor's image cannot be provided; `permanent` says a retry will not help. */
export class ImagePullError extends PermanentError {
  constructor(
    readonly field: string,
    /** The reference as pulled (normalized), or the absolute path that was given. */
    readonly image: string,
    reason: string,
    permanent: boolean,
  ) {
    super(`${field}: ${reason}`, { permanent });
    this.name = 'ImagePullError';
  }
}

/**
 * A failed pull, before it is attributed to a field: several callers (and fields) can share one pull.
 */
class PullFailure extends Error {
  constructor(
    reason: string,
    readonly permanent: boolean,
  ) {
    super(reason);
    this.name = 'PullFailure';
  }
}

type AttemptOutcome = { ok: true } | { ok: false; detail: string; permanent: boolean };

/** One pull that failed, carried through `retry`. */
class FailedPull extends Error {
  constructor(
    readonly detail: string,
    readonly permanent: boolean,
  ) {
    super(detail);
    this.name = 'FailedPull';
  }
}

const KILL_GRACE_MS = 5000;

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

export class ImageCache implements ImageResolver {
  private readonly inFlight = new SingleFlight<string>();
  /** The tasks of a burst mostly name the same image file: those resolving it at once share one look. */
  private readonly filesInFlight = new SingleFlight<string>();
  /** The image roots with their links resolved, and until when they are used so. */
  private realRoots: { until: number; paths: string[] } | undefined;
  private readonly closing = new AbortController();
  private readonly lockTtlMs: number;
  private readonly failureTtlMs: number;
  private readonly pollIntervalMs: number;
  private readonly evictMinIdleMs: number;
  /** Waiting longer than the holder could possibly pull means something is wrong with the holder. */
  private readonly maxWaitMs: number;

  constructor(private readonly options: ImageCacheOptions) {
    this.lockTtlMs = options.lockTtlMs ?? 30_000;
    this.failureTtlMs = options.failureTtlMs ?? 60_000;
    this.pollIntervalMs = options.pollIntervalMs ?? 200;
    this.evictMinIdleMs = options.evictMinIdleMs ?? 10 * 60_000;
    this.maxWaitMs =
      options.attempts * (options.pullTimeoutMs + 10_000) +
      options.backoffMs * 2 ** options.attempts +
      this.lockTtlMs;
  }

  /** The cache file an image is (or will be) kept in. */
  pathOf(image: string): string {
    return join(this.options.cacheDir, cacheFileName(toCanonicalRef(image)));
  }

  async resolve(image: string, field: string): Promise<string> {
    if (image.startsWith('/')) {
      return this.filesInFlight.run(`${field}\n${image}`, () => this.resolveFile(image, field));
    }
    // The API refused it already; a task stored before the rule (or under another policy) meets it here.
    const scheme = imageScheme(image) ?? '';
    if (!this.options.policy.allowedSchemes.includes(scheme)) {
      throw new ImagePullError(
        field,
        image,
        `image ${image} uses ${scheme}://, which container.allowedImageSchemes does not allow ` +
          `(${this.options.policy.allowedSchemes.join(', ')})`,
        true,
      );
    }
    const ref = toCanonicalRef(image);
    const invalid = checkReference(ref);
    if (invalid) throw new ImagePullError(field, ref, `cannot pull ${ref}: ${invalid}`, true);
    try {
      return await this.obtain(ref);
    } catch (err) {
      if (err instanceof PullFailure) throw new ImagePullError(field, ref, err.message, err.permanent);
      throw err;
    }
  }

  /** Stops pulls under way (their callers get a transient error); the cache is not usable after. */
  close(): void {
    this.closing.abort();
  }

  /** Every cached image with its size and last use (ms since the epoch; 0 when never recorded). */
  async report(): Promise<Array<{ path: string; bytes: number; lastUsedMs: number }>> {
    const images = await listImages(this.options.cacheDir);
    const lastUse = await readLastUse(this.options.redis, this.options.keys.imageLastUse);
    return images
      .map((image) => ({ path: image.path, bytes: image.bytes, lastUsedMs: lastUse.get(image.path) ?? 0 }))
      .sort((a, b) => b.lastUsedMs - a.lastUsedMs);
  }

  /** Total size of the cached images, in bytes. */
  async sizeBytes(): Promise<number> {
    return (await listImages(this.options.cacheDir)).reduce((sum, image) => sum + image.bytes, 0);
  }

  /**
   * Deletes least recently used images until the cache holds at most maxBytes; never one in `inUse`
   * (cache paths of active tasks) or one used within evictMinIdleMs. Returns the deleted paths.
   */
  async evict(inUse: Set<string>): Promise<string[]> {
    const limit = this.options.maxBytes;
    if (limit === undefined) return [];
    await this.removeOrphanedTemporaries();
    const images = await listImages(this.options.cacheDir);
    let total = images.reduce((sum, image) => sum + image.bytes, 0);
    if (total <= limit) return [];

    const { redis, keys } = this.options;
    const candidates = evictionOrder(images, await readLastUse(redis, keys.imageLastUse), inUse);

    const evicted: string[] = [];
    for (const image of candidates) {
      if (total <= limit) break;
      // read again: a resolve() may have handed this image out since the list was taken
      const score = await redis.zscore(keys.imageLastUse, image.path);
      const used = score === null ? image.mtimeMs : Number(score);
      if (Date.now() - used < this.evictMinIdleMs) continue;
      await rm(image.path, { force: true });
      await redis.zrem(keys.imageLastUse, image.path);
      total -= image.bytes;
      evicted.push(image.path);
    }
    if (evicted.length > 0)
      this.options.logger.info(
        { evicted, totalBytes: total, maxBytes: limit },
        'images evicted from the cache',
      );
    if (total > limit)
      this.options.logger.warn(
        { totalBytes: total, maxBytes: limit },
        'the image cache stays above its limit: the remaining images are in use or were used recently',
      );
    return evicted;
  }

  /**
   * A local image file runs only when it lies under an image root once every symbolic link (of the
   * path and of the roots) is resolved. The job keeps the path as given: compute nodes may reach the
   * same file only through the link (a site's /home -> /gpfs/home).
   */
  private async resolveFile(path: string, field: string): Promise<string> {
    const roots = this.options.policy.imageRoots;
    const rule = `container.imageRoots (${roots.length > 0 ? roots.join(', ') : 'empty'})`;
    if (roots.length === 0) {
      throw new ImagePullError(field, path, `image file ${path} is not allowed: ${rule} allows none`, true);
    }
    try {
      const real = await realpath(path);
      if (!isUnder(real, await this.resolvedRoots())) {
        throw new ImagePullError(
          field,
          path,
          `image file ${path} resolves to ${real}, outside ${rule}`,
          true,
        );
      }
      return path;
    } catch (err) {
      if (err instanceof ImagePullError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      const reason =
        code === 'ENOENT' || code === 'ENOTDIR'
          ? `image file ${path} does not exist`
          : `cannot read image file ${path}: ${(err as Error).message}`;
      throw new ImagePullError(field, path, reason, true);
    }
  }

  /**
   * The image roots with their links resolved, as of at most rootsRefreshMs ago: each resolution of a
   * root is a lookup per path component (a metadata request each on a shared filesystem), and a burst
   * of tasks would repeat them all. A root that could not be resolved is taken as written, and tried
   * again next time.
   */
  private async resolvedRoots(): Promise<string[]> {
    if (this.realRoots && Date.now() < this.realRoots.until) return this.realRoots.paths;
    const roots = this.options.policy.imageRoots;
    const resolved = await Promise.allSettled(roots.map((r) => realpath(r)));
    const paths = resolved.map((r, i) => (r.status === 'fulfilled' ? r.value : roots[i]!));
    if (resolved.every((r) => r.status === 'fulfilled')) {
      this.realRoots = { until: Date.now() + (this.options.rootsRefreshMs ?? 60_000), paths };
    }
    return paths;
  }

  /** Callers in this process asking for the same reference share one promise. */
  private obtain(ref: string): Promise<string> {
    return this.inFlight.run(ref, () => this.obtainShared(ref));
  }

  /** Across processes: the lease holder pulls, the others wait for the file or the failure. */
  private async obtainShared(ref: string): Promise<string> {
    const { redis, keys, cacheDir } = this.options;
    const name = cacheFileName(ref);
    const path = join(cacheDir, name);
    const deadline = Date.now() + this.maxWaitMs;
    for (;;) {
      if (await this.useIfPresent(path)) {
        this.options.metrics?.imageLookup('hit');
        return path;
      }
      await this.throwIfFailedRecently(name);
      const lock = new LeaderLock(redis, keys.imagePull(name), this.lockTtlMs);
      if (await lock.acquire()) {
        try {
          // the previous holder may have finished between our look and the lease
          if (await this.useIfPresent(path)) {
            this.options.metrics?.imageLookup('hit');
            return path;
          }
          await this.throwIfFailedRecently(name);
          return await this.pullHolding(ref, path, lock);
        } finally {
          await lock
            .release()
            .catch((err: unknown) =>
              this.options.logger.warn({ err, image: ref }, 'could not release an image pull lock'),
            );
        }
      }
      if (Date.now() > deadline)
        throw new PullFailure(
          `cannot pull ${ref}: gave up after waiting ${this.maxWaitMs} ms for another gateway process to pull it`,
          false,
        );
      await this.pause(this.pollIntervalMs, ref);
    }
  }

  private async throwIfFailedRecently(name: string): Promise<void> {
    const failure = await this.options.redis.get(this.options.keys.imageFailure(name));
    if (failure !== null) throw new PullFailure(failure, true);
  }

  /** True when the image is cached; records the use first, so eviction sees it as fresh. */
  private async useIfPresent(path: string): Promise<boolean> {
    if (!(await isFile(path))) return false;
    await this.options.redis.zadd(this.options.keys.imageLastUse, Date.now(), path);
    // an eviction may have run between the look and the record
    return isFile(path);
  }

  private async pullHolding(ref: string, path: string, lock: LeaderLock): Promise<string> {
    const { logger, attempts, backoffMs, redis, keys } = this.options;
    await mkdir(this.options.cacheDir, { recursive: true });
    const renewal = setInterval(() => {
      lock
        .acquire()
        .then((held) => {
          if (!held)
            logger.warn({ image: ref }, 'lost the pull lock of an image; another process may pull too');
        })
        .catch((err: unknown) => logger.warn({ err, image: ref }, 'could not renew an image pull lock'));
    }, this.lockTtlMs / 3);
    renewal.unref();
    const started = Date.now();
    try {
      await retry(
        async (attempt) => {
          logger.info({ image: ref, attempt }, 'pulling an image into the cache');
          const outcome = await this.pullOnce(ref, path);
          if (!outcome.ok) throw new FailedPull(outcome.detail, outcome.permanent);
        },
        {
          attempts,
          backoffMs,
          retryable: (err) => err instanceof FailedPull && !err.permanent,
          signal: this.closing.signal,
          onRetry: (err, attempt, delayMs) =>
            logger.warn(
              { image: ref, attempt, delayMs, reason: (err as FailedPull).detail },
              'image pull failed; retrying',
            ),
        },
      ).catch(async (err: unknown) => {
        if (err instanceof RetryAborted) {
          throw new PullFailure(`cannot pull ${ref}: the image cache is closing`, false);
        }
        const failed = (err as RetryGaveUp).error;
        if (!(failed instanceof FailedPull)) throw failed;
        this.options.metrics?.imagePullFailed(failed.permanent);
        if (failed.permanent) {
          const reason = `cannot pull ${ref}: ${failed.detail}`;
          await redis.set(keys.imageFailure(cacheFileName(ref)), reason, 'PX', this.failureTtlMs);
          logger.warn({ image: ref, reason }, 'image pull failed for good');
          throw new PullFailure(reason, true);
        }
        const tries = plural((err as RetryGaveUp).attempts, 'attempt');
        throw new PullFailure(`cannot pull ${ref} after ${tries}: ${failed.detail}`, false);
      });
    } finally {
      clearInterval(renewal);
    }
    await this.options.redis.zadd(keys.imageLastUse, Date.now(), path);
    logger.info({ image: ref, path, ms: Date.now() - started }, 'image pulled into the cache');
    const metrics = this.options.metrics;
    if (metrics) {
      metrics.imageLookup('miss');
      const bytes = await stat(path)
        .then((st) => st.size)
        .catch(() => 0);
      metrics.imagePulled(bytes);
    }
    if (this.options.maxBytes !== undefined) await this.evictAfterPull(path);
    return path;
  }

  /** One `pull` to a temporary file, renamed into place on success and removed on failure. */
  private async pullOnce(ref: string, path: string): Promise<AttemptOutcome> {
    const { executable, pullTimeoutMs, cacheDir } = this.options;
    const token = `pull-${randomBytes(8).toString('hex')}`;
    const temporary = join(cacheDir, `.${token}.sif`);
    const result = await this.runPull(['pull', '--force', temporary, ref]);
    try {
      if (result.isCanceled) throw new PullFailure(`cannot pull ${ref}: the image cache is closing`, false);
      if (result.failed) {
        const output = summarize(String(result.stderr ?? '')) || summarize(String(result.stdout ?? ''));
        if (result.timedOut)
          return {
            ok: false,
            permanent: false,
            detail: `${executable} pull timed out after ${pullTimeoutMs} ms${output ? `: ${output}` : ''}`,
          };
        if (typeof result.exitCode !== 'number') {
          const missing = (result as { code?: string }).code === 'ENOENT';
          return {
            ok: false,
            permanent: true,
            detail: missing
              ? `the container runtime ${executable} was not found on the gateway host; install it or set container.executable (TES_GATEWAY_APPTAINER)`
              : `cannot run ${executable}: ${result.shortMessage}`,
          };
        }
        const detail = output || `${executable} pull failed (exit ${result.exitCode})`;
        return { ok: false, permanent: isPermanentPullFailure(detail), detail };
      }
      if (!(await isFile(temporary)))
        return { ok: false, permanent: false, detail: `${executable} pull succeeded but wrote no image` };
      // atomic: readers see either no image or the whole one
      await rename(temporary, path);
      return { ok: true };
    } finally {
      await this.removeTemporaries((name) => name.includes(token));
    }
  }

  /**
   * Runs the pull in a process group of its own and stops the whole group on timeout or close:
   * helpers the pull started (mksquashfs, or `sleep` in the stand-in) would otherwise keep running
   * and hold the output pipes open, so the timeout would not end the wait.
   */
  private async runPull(args: string[]) {
    const { executable, pullTimeoutMs } = this.options;
    const subprocess = execa(executable, args, {
      timeout: pullTimeoutMs,
      cancelSignal: this.closing.signal,
      forceKillAfterDelay: KILL_GRACE_MS,
      detached: true,
      reject: false,
      stdin: 'ignore',
    });
    const stopGroup = (): void => {
      signalGroup(subprocess.pid, 'SIGTERM');
      setTimeout(() => signalGroup(subprocess.pid, 'SIGKILL'), KILL_GRACE_MS).unref();
    };
    const timer = setTimeout(stopGroup, pullTimeoutMs);
    this.closing.signal.addEventListener('abort', stopGroup);
    try {
      return await subprocess;
    } finally {
      clearTimeout(timer);
      this.closing.signal.removeEventListener('abort', stopGroup);
    }
  }

  private async evictAfterPull(pulled: string): Promise<void> {
    try {
      const inUse = new Set(this.options.inUse ? await this.options.inUse() : []);
      inUse.add(pulled);
      await this.evict(inUse);
    } catch (err) {
      // the pull succeeded; a full cache is a problem for later, not for this task
      this.options.logger.warn({ err }, 'image cache eviction failed');
    }
  }

  /** Temporaries older than any attempt can run were left by a process that died mid-pull. */
  private async removeOrphanedTemporaries(): Promise<void> {
    const cutoff = Date.now() - 2 * this.options.pullTimeoutMs - 60_000;
    await this.removeTemporaries((name, mtimeMs) => name.includes('pull-') && mtimeMs < cutoff);
  }

  private async removeTemporaries(match: (name: string, mtimeMs: number) => boolean): Promise<void> {
    for (const entry of await readCacheDir(this.options.cacheDir)) {
      if (!entry.startsWith('.')) continue;
      const file = join(this.options.cacheDir, entry);
      try {
        if (match(entry, (await stat(file)).mtimeMs)) await rm(file, { force: true, recursive: true });
      } catch {
        // gone meanwhile
      }
    }
  }

  private async pause(ms: number, ref: string): Promise<void> {
    try {
      await sleep(ms, undefined, { signal: this.closing.signal });
    } catch {
      throw new PullFailure(`cannot pull ${ref}: the image cache is closing`, false);
    }
  }
}
