import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

export const REDIS_URL = process.env.TES_GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A key prefix of the test's own, so tests share one Redis without seeing each other. */
export function testPrefix(name: string): string {
  return `tesgw-test:${name}:${randomBytes(4).toString('hex')}:`;
}

export function connect(): Redis {
  return new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
}

export { dropPrefix } from '../../src/store/drop-prefix.js';
