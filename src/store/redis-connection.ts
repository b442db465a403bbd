import { Redis, type RedisOptions } from 'ioredis';

/** Where Redis is, as config.redis says it: one server by url, or the master behind Sentinel. */
export type RedisTarget =
  { url: string; sentinel?: undefined } | { url?: undefined; sentinel: SentinelTarget };

export interface SentinelTarget {
  name: string;
  sentinels: Array<{ host: string; port: number }>;
  username?: string | undefined;
  password?: string | undefined;
  sentinelUsername?: string | undefined;
  sentinelPassword?: string | undefined;
  db: number;
}

/**
 * How every connection of the gateway reaches Redis: one server by url, or the master that Sentinel
 * names. Other connections (BullMQ's blocking ones) are `duplicate()`s of this one, so they inherit
 * the same way of finding the master.
 */
export function redisOptions(redis: RedisTarget): RedisOptions {
  // Fail a command quickly when Redis is away, so the API answers 503 instead of hanging.
  const common: RedisOptions = { maxRetriesPerRequest: 1, connectTimeout: 5000, lazyConnect: false };
  const sentinel = redis.sentinel;
  if (!sentinel) return common;
  return {
    ...common,
    name: sentinel.name,
    sentinels: sentinel.sentinels,
    role: 'master',
    db: sentinel.db,
    ...(sentinel.username !== undefined && { username: sentinel.username }),
    ...(sentinel.password !== undefined && { password: sentinel.password }),
    ...(sentinel.sentinelUsername !== undefined && { sentinelUsername: sentinel.sentinelUsername }),
    ...(sentinel.sentinelPassword !== undefined && { sentinelPassword: sentinel.sentinelPassword }),
    // A connection still open to a master that a failover demoted would write to a replica for as
    // long as it lasts; the sentinels' +switch-master makes every connection ask for the master again.
    failoverDetector: true,
    // A demoted master answers writes with READONLY until it drops its clients: reconnect (through
    // the sentinels, to the new master) and send the command again, which had no effect there.
    reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
  };
}

/** A new connection to the configured Redis (a server by url, or the master behind Sentinel). */
export function openRedis(redis: RedisTarget): Redis {
  const options = redisOptions(redis);
  return redis.sentinel ? new Redis(options) : new Redis(redis.url, options);
}
