import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { freePort } from './free-port.js';

export const REDIS_URL = process.env.TES_GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A key prefix of the test's own, so tests share one Redis without seeing each other. */
export function testPrefix(name: string): string {
  return `tesgw-test:${name}:${randomBytes(4).toString('hex')}:`;
}

export function connect(): Redis {
  return new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
}

/** A connection to a port nothing listens on: every command fails at once, as when Redis is away. */
export async function unreachableRedis(): Promise<Redis> {
  const dead = new Redis(`redis://127.0.0.1:${await freePort()}`, {
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    lazyConnect: true,
  });
  dead.on('error', () => undefined);
  return dead;
}

export { dropPrefix } from '../../src/store/drop-prefix.js';

/** Every key under `prefix`, sorted (SCAN, so a large Redis is not blocked). */
export async function keysUnder(redis: Redis, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  return keys.sort();
}
