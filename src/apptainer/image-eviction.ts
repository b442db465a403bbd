import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';

/** What the image cache holds on disk, and the order in which eviction deletes it. */

export interface CachedImage {
  path: string;
  bytes: number;
  mtimeMs: number;
}

/** The cache folder's entries; none when the folder does not exist yet. */
export async function readCacheDir(cacheDir: string): Promise<string[]> {
  try {
    return await readdir(cacheDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Every finished image (`*.sif`); hidden entries are pulls under way or left by a crash. */
export async function listImages(cacheDir: string): Promise<CachedImage[]> {
  const images: CachedImage[] = [];
  for (const entry of await readCacheDir(cacheDir)) {
    if (entry.startsWith('.') || !entry.endsWith('.sif')) continue;
    const path = join(cacheDir, entry);
    try {
      const info = await stat(path);
      if (info.isFile()) images.push({ path, bytes: info.size, mtimeMs: info.mtimeMs });
    } catch {
      // evicted meanwhile
    }
  }
  return images;
}

/** Last use by image path (ms since the epoch), from the sorted set every process records into. */
export async function readLastUse(redis: Redis, key: string): Promise<Map<string, number>> {
  const scores = await redis.zrange(key, 0, -1, 'WITHSCORES');
  const lastUse = new Map<string, number>();
  for (let i = 0; i + 1 < scores.length; i += 2) lastUse.set(scores[i]!, Number(scores[i + 1]));
  return lastUse;
}

/**
 * The images eviction may delete, least recently used first: none in `inUse`. An image nobody
 * recorded (copied in by hand, or the record was lost) counts from its mtime.
 */
export function evictionOrder(
  images: readonly CachedImage[],
  lastUse: ReadonlyMap<string, number>,
  inUse: ReadonlySet<string>,
): CachedImage[] {
  const usedAt = (image: CachedImage): number => lastUse.get(image.path) ?? image.mtimeMs;
  return images.filter((i) => !inUse.has(i.path)).sort((a, b) => usedAt(a) - usedAt(b));
}
