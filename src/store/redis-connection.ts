import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Redis, type Callback, type Command, type RedisOptions } from 'ioredis';

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
    // The commands sent in the same turn of the event loop (a burst's tasks, each with its own) leave
    // in one write and come back in one read: over 1,000-task bursts, last submitted 2.50 -> 2.21 s.
    // Not on copies, which BullMQ's workers block on (see duplicate()).
    enableAutoPipelining: true,
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

/**
 * Whether an error of ioredis says Redis could not be reached, or was reached on the wrong side of a
 * failover, rather than that it refused the command: the request may succeed if sent again. Among
 * them, the commands that auto-pipelining sent in one write and that a closing connection cut off
 * after part of their replies came ("Command aborted due to connection close"): ioredis does not
 * send those again, as it does a single command, because some of them may have run.
 */
export function isStoreConnectionError(err: unknown): boolean {
  const msg = (err as Error | undefined)?.message ?? '';
  return /ECONNREFUSED|ECONNRESET|ETIMEDOUT|connection is closed|max retries per request|stream isn't writeable|command aborted due to connection close|READONLY|LOADING/i.test(
    msg,
  );
}

/** Told when a connection that ioredis gave up on is connected again: why it ended, and when. */
export type RevivalNotice = (err: Error, delayMs: number) => void;

/**
 * A connection that connects again when a connect fails and leaves it ended, unless its owner closed
 * it (disconnect() or QUIT). ioredis retries a dropped connection, but a connect that fails ends it
 * for good: behind Sentinel that happens when a failover is announced (`+switch-master`) while a
 * reconnect waits for a sentinel's answer, and every command after it fails with "Connection is
 * closed.". The next try comes after the connection's own `retryStrategy` delay. `duplicate()`
 * (BullMQ's blocking connections, the workers') makes the same kind, with the same notice.
 */
class RevivingRedis extends Redis {
  private closedByOwner = false;
  private failedConnects = 0;
  private revival: NodeJS.Timeout | undefined;
  notice: RevivalNotice | undefined;

  override connect(callback?: Callback<void>): Promise<void> {
    // ioredis connects from its own constructor, before this class's fields exist: nothing here may
    // touch them until the connect settles.
    const connecting = super.connect(callback);
    connecting.then(
      () => (this.failedConnects = 0),
      (err: unknown) => this.afterFailedConnect(err instanceof Error ? err : new Error(String(err))),
    );
    return connecting;
  }

  override disconnect(reconnect = false): void {
    if (!reconnect) {
      this.closedByOwner = true;
      clearTimeout(this.revival);
    }
    super.disconnect(reconnect);
  }

  override sendCommand(command: Command, stream?: Parameters<Redis['sendCommand']>[1]): unknown {
    // QUIT closes the connection as disconnect() does, once the commands before it are answered.
    if (command.name === 'quit') this.closedByOwner = true;
    return super.sendCommand(command, stream);
  }

  override duplicate(override?: Partial<RedisOptions>): Redis {
    // A command sent behind a blocking one in the same write would wait as long as it does.
    const copy = new RevivingRedis({ ...this.options, enableAutoPipelining: false, ...override });
    copy.notice = this.notice;
    return copy;
  }

  private afterFailedConnect(err: Error): void {
    // A connect refused because one is under way, or one the owner cut short, is left alone.
    if (this.closedByOwner || this.status !== 'end') return;
    const delayMs = this.options.retryStrategy?.(++this.failedConnects);
    if (typeof delayMs !== 'number') return;
    this.notice?.(err, delayMs);
    this.revival = setTimeout(() => {
      if (!this.closedByOwner && this.status === 'end') this.connect().catch(() => undefined);
    }, delayMs);
    this.revival.unref();
  }
}

/**
 * A new connection to the configured Redis (a server by url, or the master behind Sentinel), which
 * connects again should ioredis give up on it; `notice` hears of each such time.
 */
export function openRedis(redis: RedisTarget, notice?: RevivalNotice): Redis {
  const options = redisOptions(redis);
  const connection = redis.sentinel ? new RevivingRedis(options) : new RevivingRedis(redis.url, options);
  connection.notice = notice;
  return connection;
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
