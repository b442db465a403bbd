import { jest } from '@jest/globals';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { ImageCache, ImagePullError, type ImageCacheOptions } from '../../src/apptainer/image-cache.js';
import { cacheFileName, toCanonicalRef } from '../../src/apptainer/image-refs.js';
import { isPermanentPullFailure } from '../../src/apptainer/pull-failures.js';
import { createLogger } from '../../src/logger.js';
import { Keys } from '../../src/store/keys.js';
import { FAKE_APPTAINER, ROOT, testImages } from '../helpers/gateway.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

jest.setTimeout(60_000);

const logger = createLogger(process.env.TES_TEST_LOG ?? 'silent');
const FIELD = 'executors[0].image';

let images: ReturnType<typeof testImages>;
let scratch: string;

beforeAll(() => {
  images = testImages();
  scratch = mkdtempSync(join(ROOT, '.tmp', 'image-cache-'));
  process.env.FAKE_APPTAINER_REGISTRY = images.registry;
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

/** One test's world: its own prefix, cache directory, pull log and two "processes". */
interface World {
  prefix: string;
  cacheDir: string;
  pullLog: string;
  redisA: Redis;
  redisB: Redis;
  cache(which: 'a' | 'b', options?: Partial<ImageCacheOptions>): ImageCache;
  pulls(): string[];
}

let world: World;
let counter = 0;

beforeEach(() => {
  const dir = mkdtempSync(join(scratch, `t${++counter}-`));
  const prefix = testPrefix('image-cache');
  const redisA = connect();
  const redisB = connect();
  const pullLog = join(dir, 'pulls.log');
  process.env.FAKE_APPTAINER_PULL_LOG = pullLog;
  process.env.FAKE_APPTAINER_PULL_DELAY_MS = '0';
  world = {
    prefix,
    cacheDir: join(dir, 'cache'),
    pullLog,
    redisA,
    redisB,
    cache(which, options = {}) {
      return new ImageCache({
        redis: which === 'a' ? redisA : redisB,
        keys: new Keys(prefix),
        cacheDir: this.cacheDir,
        executable: FAKE_APPTAINER,
        pullTimeoutMs: 30_000,
        attempts: 3,
        backoffMs: 100,
        logger,
        pollIntervalMs: 50,
        policy: { imageRoots: [images.dir], allowedSchemes: ['docker', 'oras', 'library'] },
        ...options,
      });
    },
    pulls() {
      return existsSync(pullLog) ? readFileSync(pullLog, 'utf8').split('\n').filter(Boolean) : [];
    },
  };
});

afterEach(async () => {
  await dropPrefix(world.redisA, world.prefix);
  world.redisA.disconnect();
  world.redisB.disconnect();
});

/** An executable that fails its first `failures` calls as a registry behind a bad network would. */
function flakyApptainer(failures: number): { executable: string; calls: () => number } {
  const dir = mkdtempSync(join(scratch, 'flaky-'));
  const executable = join(dir, 'apptainer');
  const countFile = join(dir, 'calls');
  writeFileSync(
    executable,
    [
      '#!/usr/bin/env bash',
      `n=$(( $(cat '${countFile}' 2>/dev/null || echo 0) + 1 ))`,
      `echo "$n" > '${countFile}'`,
      `if (( n <= ${failures} )); then`,
      `  echo 'INFO:    Converting OCI blobs to SIF format' >&2`,
      `  echo 'FATAL:   While making image from oci registry: error fetching image to cache: Get "https://registry-1.docker.io/v2/": dial tcp 10.0.0.1:443: i/o timeout' >&2`,
      '  exit 255',
      'fi',
      `exec '${FAKE_APPTAINER}' "$@"`,
      '',
    ].join('\n'),
  );
  chmodSync(executable, 0o755);
  return {
    executable,
    calls: () => (existsSync(countFile) ? Number(readFileSync(countFile, 'utf8')) : 0),
  };
}

function leftoverTemporaries(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith('.')) : [];
}

async function rejection(p: Promise<unknown>): Promise<ImagePullError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ImagePullError);
    return err as ImagePullError;
  }
  throw new Error('expected the promise to reject');
}

describe('references and names', () => {
  it('gives the spellings of one Docker image one canonical reference', () => {
    for (const spelling of [
      'alpine',
      'docker://alpine',
      'docker://alpine:latest',
      'docker.io/library/alpine',
      'docker://index.docker.io/library/alpine:latest',
    ])
      expect(toCanonicalRef(spelling)).toBe('docker://alpine:latest');
    expect(toCanonicalRef('ubuntu:22.04')).toBe('docker://ubuntu:22.04');
    expect(toCanonicalRef('localhost:5000/tools/x')).toBe('docker://localhost:5000/tools/x:latest');
    expect(toCanonicalRef('quay.io/library/x@sha256:ab')).toBe('docker://quay.io/library/x@sha256:ab');
    expect(toCanonicalRef('oras://reg.io/a/b:v1')).toBe('oras://reg.io/a/b:v1');
  });

  it('names cache files readably and tells references apart by hash', () => {
    expect(cacheFileName('docker://alpine:latest')).toMatch(/^docker_alpine_latest-[0-9a-f]{12}\.sif$/);
    expect(cacheFileName('docker://a/b:c')).not.toBe(cacheFileName('docker://a_b:c'));
  });

  it('tells transient registry failures from permanent ones', () => {
    expect(isPermanentPullFailure('FATAL:   ... manifest unknown: manifest unknown')).toBe(true);
    expect(isPermanentPullFailure('FATAL:   ... 401 Unauthorized')).toBe(true);
    expect(isPermanentPullFailure('requested access to the resource is denied')).toBe(true);
    expect(isPermanentPullFailure('invalid reference format')).toBe(true);
    expect(isPermanentPullFailure('dial tcp 1.2.3.4:443: i/o timeout')).toBe(false);
    expect(isPermanentPullFailure('net/http: TLS handshake timeout')).toBe(false);
    expect(isPermanentPullFailure('read: connection reset by peer')).toBe(false);
    expect(isPermanentPullFailure('unexpected status code 503 Service Unavailable')).toBe(false);
    expect(isPermanentPullFailure('toomanyrequests: 429 Too Many Requests')).toBe(false);
  });
});

describe('ImageCache', () => {
  it('pulls a new image once for two processes resolving it at the same time', async () => {
    process.env.FAKE_APPTAINER_PULL_DELAY_MS = '500';
    const [a, b] = [world.cache('a'), world.cache('b')];
    const [pathA, pathB] = await Promise.all([
      a.resolve('docker://ubuntu:22.04', FIELD),
      b.resolve('docker://ubuntu:22.04', FIELD),
    ]);
    expect(pathA).toBe(pathB);
    expect(pathA).toBe(join(world.cacheDir, cacheFileName('docker://ubuntu:22.04')));
    expect(pathA.endsWith('.sif')).toBe(true);
    expect(statSync(pathA).size).toBe(statSync(join(images.registry, 'docker_ubuntu_22.04.sif')).size);
    expect(world.pulls()).toEqual(['docker://ubuntu:22.04']);
    expect(leftoverTemporaries(world.cacheDir)).toEqual([]);
    expect(
      await world.redisA.exists(new Keys(world.prefix).imagePull(cacheFileName('docker://ubuntu:22.04'))),
    ).toBe(0);
  });

  it('serves a cached image without pulling again', async () => {
    const a = world.cache('a');
    const first = await a.resolve('busybox', FIELD);
    expect(await world.cache('b').resolve('busybox', FIELD)).toBe(first);
    expect(world.pulls()).toHaveLength(1);
  });

  it('reports each cached image with its size and last use', async () => {
    const a = world.cache('a');
    const path = await a.resolve('busybox', FIELD);
    const report = await a.report();
    expect(report).toEqual([{ path, bytes: statSync(path).size, lastUsedMs: expect.any(Number) }]);
    expect(report[0]!.lastUsedMs).toBeGreaterThan(Date.now() - 60_000);
    expect(await a.sizeBytes()).toBe(report[0]!.bytes);
  });

  it('shares one file among the spellings of one image', async () => {
    const a = world.cache('a');
    const paths = new Set(
      await Promise.all(
        ['docker://alpine', 'alpine', 'docker://alpine:latest', 'docker.io/library/alpine'].map((i) =>
          a.resolve(i, FIELD),
        ),
      ),
    );
    expect(paths.size).toBe(1);
    expect(world.pulls()).toEqual(['docker://alpine:latest']);
    expect(await a.resolve('ubuntu:22.04', FIELD)).not.toBe([...paths][0]);
  });

  it('fails an unknown image at once, for every waiting caller, without retrying', async () => {
    // a retry would wait this long: the test would time out
    const options = { backoffMs: 120_000 };
    const [a, b] = [world.cache('a', options), world.cache('b', options)];
    const [errA, errB] = await Promise.all([
      rejection(a.resolve('docker://nope/nope:1', 'executors[0].image')),
      rejection(b.resolve('docker://nope/nope:1', 'executors[1].image')),
    ]);
    expect(errA.permanent).toBe(true);
    expect(errA.image).toBe('docker://nope/nope:1');
    expect(errA.message).toMatch(
      /^executors\[0\]\.image: cannot pull docker:\/\/nope\/nope:1: FATAL: +While making image from oci registry: .*manifest unknown$/,
    );
    expect(errB.permanent).toBe(true);
    expect(errB.message).toBe(errA.message.replace('executors[0]', 'executors[1]'));
    expect(world.pulls()).toEqual(['docker://nope/nope:1']);

    // remembered for a while: a later caller fails fast too
    const errC = await rejection(world.cache('b').resolve('nope/nope:1', FIELD));
    expect(errC.message).toBe(errA.message);
    expect(world.pulls()).toHaveLength(1);
    expect(leftoverTemporaries(world.cacheDir)).toEqual([]);
  });

  it('retries a transient failure with backoff and then succeeds', async () => {
    const flaky = flakyApptainer(1);
    const cache = world.cache('a', { executable: flaky.executable });
    const path = await cache.resolve('alpine', FIELD);
    expect(existsSync(path)).toBe(true);
    expect(flaky.calls()).toBe(2);
    expect(world.pulls()).toEqual(['docker://alpine:latest']);
    expect(leftoverTemporaries(world.cacheDir)).toEqual([]);
  });

  it('gives up on a transient failure after the last attempt, as not permanent', async () => {
    const flaky = flakyApptainer(100);
    const cache = world.cache('a', { executable: flaky.executable, attempts: 3, backoffMs: 50 });
    const err = await rejection(cache.resolve('alpine', FIELD));
    expect(err.permanent).toBe(false);
    expect(err.message).toMatch(
      /^executors\[0\]\.image: cannot pull docker:\/\/alpine:latest after 3 attempts: FATAL: .*i\/o timeout$/,
    );
    expect(flaky.calls()).toBe(3);
    // not remembered: the next caller tries again
    const again = flakyApptainer(0);
    expect(await world.cache('b', { executable: again.executable }).resolve('alpine', FIELD)).toMatch(
      /\.sif$/,
    );
  });

  it('times a hanging pull out and retries it', async () => {
    process.env.FAKE_APPTAINER_PULL_DELAY_MS = '3000';
    const cache = world.cache('a', { pullTimeoutMs: 300, attempts: 2, backoffMs: 10 });
    const err = await rejection(cache.resolve('alpine', FIELD));
    expect(err.permanent).toBe(false);
    expect(err.message).toContain('pull timed out after 300 ms');
    expect(world.pulls()).toHaveLength(2);
    expect(existsSync(cache.pathOf('alpine'))).toBe(false);
  });

  it('takes over the pull when the lock holder died', async () => {
    const keys = new Keys(world.prefix);
    await world.redisB.set(keys.imagePull(cacheFileName('docker://alpine:latest')), 'dead-owner', 'PX', 400);
    const started = Date.now();
    const path = await world.cache('a').resolve('alpine', FIELD);
    expect(Date.now() - started).toBeGreaterThanOrEqual(350);
    expect(existsSync(path)).toBe(true);
    expect(world.pulls()).toHaveLength(1);
  });

  it('returns an existing absolute image path as is and refuses a missing one', async () => {
    const cache = world.cache('a');
    expect(await cache.resolve(images.busybox, FIELD)).toBe(images.busybox);
    const missing = join(images.dir, 'missing.sif');
    const err = await rejection(cache.resolve(missing, 'executors[2].image'));
    expect(err.permanent).toBe(true);
    expect(err.message).toBe(`executors[2].image: image file ${missing} does not exist`);
    expect(world.pulls()).toEqual([]);
  });

  it('refuses a reference that cannot be one without pulling', async () => {
    const err = await rejection(world.cache('a').resolve('docker://:1', FIELD));
    expect(err.permanent).toBe(true);
    expect(err.message).toContain('invalid image reference');
    expect(world.pulls()).toEqual([]);
  });

  it('evicts least recently used images, never those in use, and reports the size', async () => {
    const size = statSync(images.busybox).size;
    const inUse = new Set<string>();
    const cache = world.cache('a', {
      maxBytes: 2 * size,
      evictMinIdleMs: 0,
      inUse: async () => inUse,
    });
    const alpine = await cache.resolve('alpine', FIELD);
    inUse.add(alpine);
    await sleepMs(5);
    const busybox = await cache.resolve('busybox', FIELD);
    await sleepMs(5);
    expect(await cache.sizeBytes()).toBe(2 * size);

    // the third image overflows the cache: busybox goes, alpine (older, but in use) stays
    const ubuntu = await cache.resolve('ubuntu:22.04', FIELD);
    expect(existsSync(alpine)).toBe(true);
    expect(existsSync(busybox)).toBe(false);
    expect(existsSync(ubuntu)).toBe(true);
    expect(await cache.sizeBytes()).toBe(2 * size);

    // a smaller limit, alpine no longer in use: the least recently used goes first
    const small = world.cache('b', { maxBytes: size, evictMinIdleMs: 0 });
    await sleepMs(5);
    await small.resolve('ubuntu:22.04', FIELD); // a hit: ubuntu is now the most recent
    expect(await small.evict(new Set())).toEqual([alpine]);
    expect(await small.sizeBytes()).toBe(size);
    expect(await small.evict(new Set())).toEqual([]);
    expect(await world.redisA.zrange(new Keys(world.prefix).imageLastUse, 0, -1)).not.toContain(alpine);
  });

  it('keeps recently used images even over the limit', async () => {
    const cache = world.cache('a', { maxBytes: 1 });
    const alpine = await cache.resolve('alpine', FIELD);
    expect(await cache.evict(new Set())).toEqual([]);
    expect(existsSync(alpine)).toBe(true);
  });

  it('measures 50 concurrent resolves of one uncached image (two processes)', async () => {
    process.env.FAKE_APPTAINER_PULL_DELAY_MS = '500';
    const [a, b] = [world.cache('a'), world.cache('b')];
    const started = performance.now();
    const paths = await Promise.all(
      Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? a : b).resolve('docker://ubuntu:22.04', FIELD)),
    );
    const ms = performance.now() - started;
    expect(new Set(paths).size).toBe(1);
    expect(world.pulls()).toHaveLength(1);
    process.stdout.write(
      `image-cache: 50 concurrent resolves of one uncached image (pull delay 500 ms): ${ms.toFixed(0)} ms, 1 pull\n`,
    );
  });
});

function sleepMs(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
