import { Redis } from 'ioredis';

/** The suite needs a real Redis; say so plainly when there is none. */
export default async function globalSetup(): Promise<void> {
  const url = process.env.TES_GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    throw new Error(
      `the tests need Redis at ${url} (start it with scripts/redis-up.sh): ${(err as Error).message}`,
    );
  } finally {
    redis.disconnect();
  }
}
