import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { ImageCache, ImagePullError } from '../../src/apptainer/image-cache.js';
import type { ImagePolicy } from '../../src/apptainer/images.js';
import { createLogger } from '../../src/logger.js';
import { Keys } from '../../src/store/keys.js';
import { FAKE_APPTAINER, ROOT } from '../helpers/gateway.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

/**
 * The image rules again at run time, where a task stored before them (or under other settings) meets
 * them: local image files only under container.imageRoots once links are resolved, and only the
 * allowed schemes. Each refusal is permanent (the task ends SYSTEM_ERROR) and names the rule.
 */

const FIELD = 'executors[0].image';
let dir: string;
let roots: string;
let redis: Redis;
let prefix: string;

beforeAll(() => {
  dir = mkdtempSync(join(ROOT, '.tmp', 'image-roots-'));
  roots = join(dir, 'roots');
  mkdirSync(join(roots, 'sub'), { recursive: true });
  writeFileSync(join(roots, 'tool.sif'), 'image');
  writeFileSync(join(dir, 'secret'), 'not an image');
  symlinkSync(join(dir, 'secret'), join(roots, 'escape.sif'));
  symlinkSync(dir, join(roots, 'sub', 'up'));
  symlinkSync(join(roots, 'tool.sif'), join(roots, 'alias.sif'));
  symlinkSync(roots, join(dir, 'roots-link'));
  redis = connect();
  prefix = testPrefix('image-roots');
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await dropPrefix(redis, prefix);
  redis.disconnect();
});

function cache(policy: Partial<ImagePolicy> = {}, rootsRefreshMs?: number): ImageCache {
  return new ImageCache({
    rootsRefreshMs,
    redis,
    keys: new Keys(prefix),
    cacheDir: join(dir, 'cache'),
    executable: FAKE_APPTAINER,
    pullTimeoutMs: 10_000,
    attempts: 1,
    backoffMs: 10,
    logger: createLogger('silent'),
    policy: { imageRoots: [roots], allowedSchemes: ['docker', 'oras', 'library'], ...policy },
  });
}

async function refusal(image: string, policy: Partial<ImagePolicy> = {}): Promise<ImagePullError> {
  const err = await cache(policy)
    .resolve(image, FIELD)
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  expect(err).toBeInstanceOf(ImagePullError);
  expect((err as ImagePullError).permanent).toBe(true);
  return err as ImagePullError;
}

describe('local image files at run time', () => {
  it('runs a file under an image root, also through a link that stays inside', async () => {
    expect(await cache().resolve(join(roots, 'tool.sif'), FIELD)).toBe(join(roots, 'tool.sif'));
    expect(await cache().resolve(join(roots, 'alias.sif'), FIELD)).toBe(join(roots, 'alias.sif'));
  });

  it('judges the roots with their own links resolved too', async () => {
    const viaLink = cache({ imageRoots: [join(dir, 'roots-link')] });
    expect(await viaLink.resolve(join(roots, 'tool.sif'), FIELD)).toBe(join(roots, 'tool.sif'));
  });

  it("judges a root by its link's new target once the roots are resolved again", async () => {
    const moving = join(dir, 'moving-root');
    symlinkSync(roots, moving);
    const images = cache({ imageRoots: [moving] }, 50);
    expect(await images.resolve(join(roots, 'tool.sif'), FIELD)).toBe(join(roots, 'tool.sif'));
    // The site moves the root elsewhere: the file under its old target no longer runs.
    mkdirSync(join(dir, 'elsewhere'));
    rmSync(moving);
    symlinkSync(join(dir, 'elsewhere'), moving);
    await new Promise((r) => setTimeout(r, 100));
    const err = await images.resolve(join(roots, 'tool.sif'), FIELD).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImagePullError);
    expect((err as Error).message).toMatch(/resolves to .*\/roots\/tool\.sif, outside container\.imageRoots/);
  });

  it('refuses a file whose link leads outside the roots, naming the rule', async () => {
    const err = await refusal(join(roots, 'escape.sif'));
    expect(err.message).toBe(
      `${FIELD}: image file ${join(roots, 'escape.sif')} resolves to ${join(dir, 'secret')}, ` +
        `outside container.imageRoots (${roots})`,
    );
  });

  it('refuses a path that leaves the roots through a linked directory', async () => {
    const err = await refusal(join(roots, 'sub', 'up', 'secret'));
    expect(err.message).toMatch(/resolves to .*\/secret, outside container\.imageRoots/);
  });

  it('refuses every local file when no root is configured', async () => {
    const err = await refusal(join(roots, 'tool.sif'), { imageRoots: [] });
    expect(err.message).toBe(
      `${FIELD}: image file ${join(roots, 'tool.sif')} is not allowed: container.imageRoots (empty) allows none`,
    );
  });
});

describe('image schemes at run time', () => {
  it.each(['docker-archive:///tmp/x.tar', 'oci-archive:///tmp/x.tar', 'shub://x/y', 'http://h/x.sif'])(
    'refuses %s without pulling it',
    async (image) => {
      const err = await refusal(image);
      expect(err.message).toMatch(
        new RegExp(
          `^${FIELD.replace(/[[\]]/g, '\\$&')}: image .* which container\\.allowedImageSchemes does not allow`,
        ),
      );
    },
  );

  it('refuses a docker reference when docker is not allowed', async () => {
    const err = await refusal('alpine', { allowedSchemes: ['oras'] });
    expect(err.message).toBe(
      `${FIELD}: image alpine uses docker://, which container.allowedImageSchemes does not allow (oras)`,
    );
  });
});
