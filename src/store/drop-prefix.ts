import type { Redis } from 'ioredis';

/**
 * Deletes every key under a prefix, a batch at a time (never FLUSHALL: other gateways and test runs
 * may share the Redis). For tests and benchmarks that leave no trace, and for retiring a gateway.
 */
export async function dropPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 5000);
    cursor = next;
    if (keys.length > 0) await redis.unlink(...keys);
  } while (cursor !== '0');
}
