import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Fence } from './task-store.js';

/** 2: renewed, the lease was still ours; 1: taken, it was free; 0: another process holds it. */
const ACQUIRE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
`;

/** Extends the lease only while it is still ours: a lease lost mid-hold is never taken back there. */
export const EXTEND = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

/** Frees the lease if it is still ours. */
export const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/** The lease ran out, or went to another process, while work that needed it was under way. */
export class LeaseLostError extends Error {
  constructor(readonly key: string) {
    super(`lost the lease ${key} while holding it; the work left undone is the new holder's`);
    this.name = 'LeaseLostError';
  }
}

/**
 * A lease in Redis that makes one process the leader among all gateways sharing the Redis: it is
 * taken when free, renewed by its holder, and expires by itself when the holder dies.
 *
 * Work that needs the lease runs in `hold`, which renews it every third of its time to live for as
 * long as the work runs: a step slower than the lease (a sacct that times out after 30 s against a
 * 15 s lease) does not let a second leader in. The holder counts the lease as its own only up to
 * the time to live after the last renewal that Redis confirmed (timed from before the request), so
 * when renewals fail, as when Redis is out of reach, `lost` turns true before the key can expire
 * and another process take it. Work checks `lost` before each write.
 */
export class LeaderLock {
  readonly owner = randomUUID();
  /** Local time up to which the lease is surely ours; 0 when it is not held. */
  private validUntil = 0;
  private holding = 0;
  private renewFailed = false;
  private freshTakes = 0;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly ttlMs: number,
  ) {}

  /** What fences the holder's writes (TransitionOptions.fence): they land only while it leads. */
  get fence(): Fence {
    return { key: this.key, owner: this.owner };
  }

  /**
   * How many times this process took the lease while it was free, rather than renewing its own: a
   * change means another process may have led in between, and what the holder remembers of its last
   * term may be out of date.
   */
  get takes(): number {
    return this.freshTakes;
  }

  async acquire(): Promise<boolean> {
    const asked = Date.now();
    const answer = await this.redis.eval(ACQUIRE, 1, this.key, this.owner, this.ttlMs);
    const ok = answer === 1 || answer === 2;
    if (answer === 1) this.freshTakes++;
    this.validUntil = ok ? asked + this.ttlMs : 0;
    this.renewFailed = !ok;
    return ok;
  }

  /** Whether the lease may have gone to another process while `hold` ran. */
  get lost(): boolean {
    return this.holding > 0 && (this.renewFailed || Date.now() >= this.validUntil);
  }

  /** Runs `work` while renewing the lease; it must check `lost` before each write. */
  async hold<T>(work: () => Promise<T>): Promise<T> {
    this.holding++;
    let renewing: Promise<void> | undefined;
    const timer = setInterval(
      () => {
        renewing ??= this.extend().finally(() => {
          renewing = undefined;
        });
      },
      Math.max(1, Math.floor(this.ttlMs / 3)),
    );
    try {
      return await work();
    } finally {
      clearInterval(timer);
      await renewing;
      this.holding--;
    }
  }

  private async extend(): Promise<void> {
    if (this.renewFailed) return;
    const asked = Date.now();
    try {
      const ok = (await this.redis.eval(EXTEND, 1, this.key, this.owner, this.ttlMs)) === 1;
      if (ok) this.validUntil = asked + this.ttlMs;
      else this.renewFailed = true;
    } catch {
      // Unconfirmed: the lease stays ours only until validUntil, and the next renewal may still land.
    }
  }

  async release(): Promise<void> {
    this.validUntil = 0;
    await this.redis.eval(RELEASE, 1, this.key, this.owner);
  }
}
