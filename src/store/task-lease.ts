import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { EXTEND, RELEASE } from './leader-lock.js';
import type { Fence } from './task-store.js';

const TAKE = `return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0`;

/**
 * A lease in Redis on one piece of work (the submission of one task), held by one process at a time
 * and expiring by itself when its holder dies. Unlike the leader's lock (leader-lock.ts), a renewal
 * never takes a lease that has lapsed: a holder whose lease expired, even if nobody took it since,
 * learns that it lost it, since someone may have taken, used and released it meanwhile. That makes
 * `renew` the fencing check before a write that only the holder may make.
 */
export class TaskLease {
  readonly owner = randomUUID();

  constructor(
    private readonly redis: Redis,
    readonly key: string,
    readonly ttlMs: number,
  ) {}

  /** What fences the holder's writes (TransitionOptions.fence): they land only while it holds this. */
  get fence(): Fence {
    return { key: this.key, owner: this.owner };
  }

  /** Takes the lease if nobody holds it. */
  async take(): Promise<boolean> {
    return (await this.redis.eval(TAKE, 1, this.key, this.owner, this.ttlMs)) === 1;
  }

  /** Extends the lease; false when it is no longer this holder's. */
  async renew(): Promise<boolean> {
    return (await this.redis.eval(EXTEND, 1, this.key, this.owner, this.ttlMs)) === 1;
  }

  async release(): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.key, this.owner);
  }
}
