import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Redis, type RedisOptions } from 'ioredis';

/**
 * Where Redis is, as config.redis says it: one server by url, or the master behind Sentinel; with
 * `tls`, reached over TLS.
 */
export type RedisTarget = (
  { url: string; sentinel?: undefined } | { url?: undefined; sentinel: SentinelTarget }
) & { tls?: TlsFiles | undefined };

/** config.redis.tls: PEM files, by path. */
export interface TlsFiles {
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
  servername?: string | undefined;
}

export interface SentinelTarget {
  name: string;
  sentinels: Array<{ host: string; port: number }>;
  username?: string | undefined;
  password?: string | undefined;
  sentinelUsername?: string | undefined;
  sentinelPassword?: string | undefined;
  db: number;
  /** The sentinels speak TLS, with the same files. */
  tls?: boolean | undefined;
}

/**
 * How every connection of the gateway reaches Redis: one server by url, or the master that Sentinel
 * names. Other connections (BullMQ's blocking ones) are `duplicate()`s of this one, so they inherit
 * the same way of finding the master.
 */
export function redisOptions(redis: RedisTarget): RedisOptions {
  // Fail a command quickly when Redis is away, so the API answers 503 instead of hanging.
  const tls = redis.tls && tlsOptions(redis.tls);
  const common: RedisOptions = {
    maxRetriesPerRequest: 1,
    connectTimeout: 5000,
    lazyConnect: false,
    ...(tls && { tls }),
  };
  const sentinel = redis.sentinel;
  if (!sentinel) return common;
  return {
    ...common,
    // ioredis leaves `tls` to the master unused behind Sentinel unless told.
    ...(tls && { enableTLSForSentinelMode: true }),
    ...(tls && sentinel.tls && { sentinelTLS: tls }),
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

/** The TLS options for node:tls from the files; a file that cannot be read stops the start, named. */
export function tlsOptions(files: TlsFiles): ConnectionOptions {
  const read = (field: 'ca' | 'cert' | 'key'): Buffer | undefined => {
    const path = files[field];
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`redis.tls.${field}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
  };
  const ca = read('ca');
  const cert = read('cert');
  const key = read('key');
  return {
    ...(ca && { ca }),
    ...(cert && { cert }),
    ...(key && { key }),
    ...(files.servername !== undefined && { servername: files.servername }),
  };
}
