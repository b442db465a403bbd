import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { EXTEND, RELEASE } from './leader-lock.js';
import type { Fence } from './task-store.js';

/** The lease scripts, sent once per connection and then called by their digest (EVALSHA). */
interface LeaseRedis extends Redis {
  tesLeaseExtend(key: string, owner: string, ttlMs: number): Promise<number>;
  tesLeaseRelease(key: string, owner: string): Promise<number>;
}

/** Connections the lease scripts are defined on: every submission takes, checks and frees a lease. */
const scripted = new WeakSet<Redis>();

function withLeaseScripts(redis: Redis): LeaseRedis {
  if (!scripted.has(redis)) {
    redis.defineCommand('tesLeaseExtend', { numberOfKeys: 1, lua: EXTEND });
    redis.defineCommand('tesLeaseRelease', { numberOfKeys: 1, lua: RELEASE });
    scripted.add(redis);
  }
  return redis as LeaseRedis;
}

/**
 * A lease in Redis on one piece of work (the submission of one task), held by one process at a time
 * and expiring by itself when its holder dies. Unlike the leader's lock (leader-lock.ts), a renewal
 * never takes a lease that has lapsed: a holder whose lease expired, even if nobody took it since,
 * learns that it lost it, since someone may have taken, used and released it meanwhile. That makes
 * `renew` the fencing check before a write that only the holder may make.
 */
export class TaskLease {
  readonly owner = randomUUID();
  private readonly redis: LeaseRedis;

  constructor(
    redis: Redis,
    readonly key: string,
    readonly ttlMs: number,
  ) {
    this.redis = withLeaseScripts(redis);
  }

  /** What fences the holder's writes (TransitionOptions.fence): they land only while it holds this. */
  get fence(): Fence {
    return { key: this.key, owner: this.owner };
  }

  /** Takes the lease if nobody holds it. */
  async take(): Promise<boolean> {
    return (await this.redis.set(this.key, this.owner, 'PX', this.ttlMs, 'NX')) === 'OK';
  }

  /** Extends the lease; false when it is no longer this holder's. */
  async renew(): Promise<boolean> {
    return (await this.redis.tesLeaseExtend(this.key, this.owner, this.ttlMs)) === 1;
  }

  async release(): Promise<void> {
    await this.redis.tesLeaseRelease(this.key, this.owner);
  }
}
